"""Benchmarks of the function app against the loopback sandbox and Azurite (`python -m bench`).

Not tests: each scenario prints figures and ratios measured side by side in one run and the
whole run is written as JSON to `bench/results/`. See bench/README.md.
"""
