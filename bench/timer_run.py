"""Scenario 1: one timer run over N queued requests, against a sequential loop of creates.

Each function here runs in its own worker interpreter (bench.worker), so its peak RSS is its own:

- `ours`: N requests queued through the HTTP function (`Prefer: respond-async`), then, with the
  sandbox's Partner Center latency set, one `shared.upgrade_requests.timer_run.process_pending` run at the given
  concurrency. Checks: every customer submitted exactly once, one create call per request.
- `sequential`: what the Partner Center SDK / PowerShell samples do: a token once (MSAL
  refresh-token grant), then for each customer one create POST, one after the other; either a
  plain `requests.post` per call (new TLS connection each time) or one keep-alive
  `requests.Session`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .harness import (
    QUEUE,
    ConnectionCounter,
    Meter,
    app_environment,
    bare_create,
    cpu_seconds_of,
    instrument_runtime,
    log_progress,
    ms,
    new_customer,
    partner_center_token,
    peak_rss_mib,
    upgrade,
)


def ours(params: dict[str, Any]) -> dict[str, Any]:
    from shared.runtime import get_runtime
    from shared.upgrade_requests.timer_run import process_pending

    n, concurrency, latency = int(params["n"]), int(params["concurrency"]), float(params["latency"])
    with app_environment() as env:
        sandbox = env.sandbox
        runtime = get_runtime()
        runtime.tokens.access_token()  # a warm instance holds its token; the run should not pay for it
        rss_before_intake = peak_rss_mib()

        customers = [new_customer() for _ in range(n)]
        log_progress(f"C={concurrency}: queueing {n} requests through the HTTP function")
        started = time.perf_counter()
        with ThreadPoolExecutor(int(params.get("intake_workers", 8))) as pool:
            replies = list(pool.map(lambda customer: upgrade(customer, QUEUE), customers))
        intake_seconds = time.perf_counter() - started
        bad = [status for status, body in replies if status != 202 or body.get("status") != "pending"]
        if bad:
            raise RuntimeError(f"{len(bad)} queued requests were not accepted as pending: {Counter(bad)}")
        rss_after_intake = peak_rss_mib()

        meter = Meter()
        instrument_runtime(runtime, meter)
        store = runtime.processor.store
        original_due = store.due

        def timed_due(*args: Any, **kwargs: Any) -> Any:
            t0, cpu = time.perf_counter(), time.thread_time()
            try:
                return original_due(*args, **kwargs)
            finally:
                meter.add("store", "due", time.perf_counter() - t0, time.thread_time() - cpu)

        store.due = timed_due  # type: ignore[method-assign]
        processor = runtime.processor
        for step in ("claim", "advance"):  # CPU of the app's own work on the run's worker threads
            setattr(processor, step, _timed_step(getattr(processor, step), meter, step))
        sandbox.reset_calls()
        sandbox.latency = latency
        log_progress(f"C={concurrency}: timer run over {n} pending requests, latency {latency * 1000:.0f} ms")
        azurite_pid = env.azurite._process.pid
        with ConnectionCounter() as connections:
            cpu_started, azurite_cpu_started = time.process_time(), cpu_seconds_of(azurite_pid)
            started = time.perf_counter()
            report = process_pending(
                runtime.processor, owner=runtime.owner, concurrency=concurrency, budget_seconds=600
            )
            wall = time.perf_counter() - started
            process_cpu = time.process_time() - cpu_started
            azurite_cpu = cpu_seconds_of(azurite_pid) - azurite_cpu_started
        sandbox.latency = 0.0

        submissions = Counter(sandbox.submissions(customer) for customer in customers)
        calls = Counter(f"{call.service}.{call.operation}" for call in sandbox.calls())
        creates = calls.get("partner_center.create_upgrade", 0)
        port = env.azurite.port
        names = {f"127.0.0.1:{port}": "azurite", sandbox.base_url.removeprefix("https://"): "sandbox"}
        storage = meter.summary()
        app_cpu = sum(cpu for key, values in meter.durations.items() if key[0] == "app" for _, cpu in values)
        cores = os.cpu_count() or 1
        return {
            "n": n,
            "concurrency": concurrency,
            "latencySeconds": latency,
            "wallSeconds": round(wall, 3),
            "floorSeconds": round(n * latency / concurrency, 3),
            "requestsPerSecond": round(n / wall, 1),
            "report": report.as_dict(),
            "submittedExactlyOnce": submissions.get(1, 0),
            "submissionHistogram": {str(k): v for k, v in sorted(submissions.items())},
            "allSubmittedExactlyOnce": submissions == Counter({1: n}),
            "sandboxCalls": dict(sorted(calls.items())),
            "createCallsPerRequest": round(creates / n, 3),
            "storage": storage,
            "storageCallsPerRequest": round(
                sum(v["calls"] for k, v in storage.items() if k.startswith("storage.") and ".page" not in k) / n, 2
            ),
            "dueQueryMs": storage.get("store.due", {}).get("medianMs"),
            "connections": connections.as_dict(names),
            # CPU during the run: this process (app + the in-process sandbox), and Azurite (node).
            "processCpuMsPerRequest": ms(process_cpu / n),
            "appCpuMsPerRequest": ms(app_cpu / n),  # claim + advance on the worker threads
            "sandboxAndOtherCpuMsPerRequest": ms((process_cpu - app_cpu) / n),
            "azuriteCpuMsPerRequest": ms(azurite_cpu / n),
            "cpuUtilisation": round((process_cpu + azurite_cpu) / wall, 2),
            "cores": cores,
            # No schedule can beat the CPU the run used spread over every core.
            "cpuFloorSeconds": round((process_cpu + azurite_cpu) / cores, 3),
            "intakeSeconds": round(intake_seconds, 3),
            "intakePerSecond": round(n / intake_seconds, 1),
            "rssBeforeIntakeMiB": rss_before_intake,
            "rssAfterIntakeMiB": rss_after_intake,
        }


def _timed_step(step: Any, meter: Meter, name: str) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return step(*args, **kwargs)
        finally:
            meter.add("app", name, time.perf_counter() - started, time.thread_time() - cpu)

    return timed


def sequential(params: dict[str, Any]) -> dict[str, Any]:
    import requests

    n, latency, mode = int(params["n"]), float(params["latency"]), str(params["mode"])
    with app_environment() as env:
        sandbox = env.sandbox
        token = partner_center_token(sandbox)  # once, as the samples do
        http: Any = requests.Session() if mode == "session" else requests
        customers = [new_customer() for _ in range(n)]
        sandbox.reset_calls()
        sandbox.latency = latency
        log_progress(f"sequential ({mode}): {n} creates one after the other, latency {latency * 1000:.0f} ms")
        durations = []
        started = time.perf_counter()
        for customer in customers:
            t0 = time.perf_counter()
            bare_create(http, sandbox.base_url, token, customer)
            durations.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
        sandbox.latency = 0.0
        if mode == "session":
            http.close()
        submissions = Counter(sandbox.submissions(customer) for customer in customers)
        durations.sort()
        return {
            "n": n,
            "mode": mode,
            "latencySeconds": latency,
            "wallSeconds": round(wall, 3),
            "floorSeconds": round(n * latency, 3),
            "medianCallMs": ms(durations[len(durations) // 2]),
            "allSubmittedExactlyOnce": submissions == Counter({1: n}),
            "sandboxCalls": dict(Counter(f"{c.service}.{c.operation}" for c in sandbox.calls())),
        }
