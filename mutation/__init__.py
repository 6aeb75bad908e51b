"""Hand-made mutation testing of the exactly-once and SSRF rules: `python -m mutation` (make mutants).

`mutants.py` lists the mutants (file, exact original snippet, replacement, the rule it breaks, the
tests that must catch it); `__main__.py` applies each to a temporary copy of the tree and runs its
tests. `tests/test_mutation.py` (slow lane) requires every mutant to be killed.
"""
