"""Scenario 6 (discovery part, issue 19): list 10,000 customers from Partner Center, 20 pages of 500.

The worker seeds the sandbox's partner with N customers (`Sandbox.seed_customers`), then runs the
discovery in a process of its own (`python -m bench.peak_rss ... bench.discovery`), so its peak RSS
(VmHWM) is the discovery's and not the worker's, which holds the sandbox and its 10,000 customers.
That process builds the app's runtime from the same settings, takes the App+User token (Key Vault
reads + Entra grant, timed apart), then times `shared.partner_center.customers.customer_pages` over
every page. A second process does everything but the listing: the baseline the listing adds to.
Target: peak RSS below 200 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from .harness import app_environment, log_progress
from .isolation import REPO_ROOT

TARGET_PEAK_RSS_MB = 200


def _child(listing: bool) -> dict[str, Any]:
    """In the measured process: token, then (unless baseline) every page of the listing."""
    from shared.correlation import CallContext
    from shared.partner_center.customers import customer_pages
    from shared.runtime import get_runtime

    runtime = get_runtime()
    started = time.perf_counter()
    runtime.tokens.access_token()
    token_seconds = time.perf_counter() - started
    pages, customers, distinct = 0, 0, set()
    started = time.perf_counter()
    if listing:
        for page in customer_pages(runtime.partner_center, CallContext.new()):
            pages += 1
            customers += len(page.customers)
            distinct.update(customer.id for customer in page.customers)
    return {
        "tokenSeconds": round(token_seconds, 3),
        "listingSeconds": round(time.perf_counter() - started, 3),
        "pages": pages,
        "customers": customers,
        "distinctCustomers": len(distinct),
    }


def _measure(listing: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as workdir:
        peak_file = os.path.join(workdir, "peak-rss")
        command = [sys.executable, "-m", "bench.peak_rss", peak_file, "bench.discovery"]
        started = time.perf_counter()
        process = subprocess.run(
            [*command, *([] if listing else ["--baseline"])],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        wall = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"discovery process exited {process.returncode}: {process.stderr[-2000:]}")
        with open(peak_file, encoding="ascii") as peak:
            peak_rss = float(peak.read())
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    return {**result, "processWallSeconds": round(wall, 2), "peakRssMiB": peak_rss}


def run(params: dict[str, Any]) -> dict[str, Any]:
    count, latency = int(params["customers"]), float(params.get("latency", 0.0))
    with app_environment() as env:
        summary = env.sandbox.seed_customers(count, random_seed=int(params.get("seed", 19)))
        env.sandbox.latency = latency
        log_progress(f"seeded {count} customers; discovery in its own process (latency {latency * 1000:.0f} ms)")
        discovery = _measure(listing=True)
        baseline = _measure(listing=False)
        calls = env.sandbox.calls("partner_center", "list_customers")
    peak_mb = discovery["peakRssMiB"] * 1.048576
    return {
        "customers": count,
        "partnerCenterLatency": latency,
        "seeded": summary.as_dict(),
        "discovery": discovery,
        "baseline": baseline,
        "listingCalls": len(calls),
        "customersPerSecond": round(discovery["customers"] / max(1e-9, discovery["listingSeconds"]), 1),
        "allListedOnce": discovery["customers"] == count and discovery["distinctCustomers"] == count,
        "targetPeakRssMB": TARGET_PEAK_RSS_MB,
        "targetMet": peak_mb < TARGET_PEAK_RSS_MB,
    }


if __name__ == "__main__":
    print(json.dumps(_child(listing="--baseline" not in sys.argv[1:])))
