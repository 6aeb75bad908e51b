"""Scenario 5: the store does not grow with its history (`history`).

In one worker: 1,000 pending requests with no final record stored, then the same with
`FINAL_RECORDS` (100,000) final records loaded (batch transactions of 100 entities, written the
way the store lays them out, through the store's own entity builders). For each, measured with a
meter on the store's table client (the network edge): entities returned to the app by one timer
run (`due()`, `due_callbacks()`, `repair()`, retention) and by one list page, and the timer run's
wall time (Partner Center latency `latency` s, concurrency 8). Then `python -m shared.cli export
--format json` of every record in its own process: its own peak RSS (VmHWM, `bench/peak_rss.py`) and time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from .harness import app_environment, log_progress, new_request_record
from .isolation import REPO_ROOT

BATCH = 100


class EntityMeter:
    """Wraps the TableClient: counts calls by method and entities returned (point reads and every
    entity a query yields)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.entities = 0

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.seconds.clear()
            self.entities = 0

    def mean_ms(self) -> dict[str, float]:
        with self._lock:
            return {name: round(self.seconds[name] / n * 1000, 2) for name, n in self.calls.items() if n}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._table, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = attribute(*args, **kwargs)
            with self._lock:
                self.calls[name] += 1
                self.seconds[name] += time.perf_counter() - started
            if name == "get_entity":
                with self._lock:
                    self.entities += 1
            if name == "query_entities":
                return self._count(result)
            return result

        return counted

    def _count(self, entities: Any) -> Any:
        for entity in entities:
            with self._lock:
                self.entities += 1
            yield entity


def _load_final(table: Any, count: int) -> float:
    """`count` final records (complete/failed/rejected) with their list-index entries, 100 per
    customer partition, created over the last 300 days, in batch transactions of 100."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.upgrade_requests.record import COMPLETE, FAILED, REJECTED
    from shared.upgrade_requests.store.entities import list_entry, to_entity
    from shared.upgrade_requests.store.layout import final_pk

    started = time.perf_counter()
    states = (COMPLETE, COMPLETE, COMPLETE, FAILED, REJECTED)
    now = datetime.now(UTC)
    written = 0

    def customer_batch(customer_number: int) -> list[dict[str, Any]]:
        customer = str(uuid.uuid4())
        day = now - timedelta(days=customer_number % 300, hours=1)
        state = states[customer_number % len(states)]
        batch = []
        entries: list[dict[str, Any]] = []
        for i in range(BATCH):
            record = new_request_record(customer, state).evolve(
                created_at=day + timedelta(seconds=i),
                finished_at=day + timedelta(seconds=i + 60),
                attempts=1,
                last_error=None if state == COMPLETE else "bench",
                last_error_type=None if state == COMPLETE else "upgrade-failed",
            )
            batch.append(("create", to_entity(record, final_pk(record.request_id), 2)))
            entries.append(list_entry(record, 2))
        table.submit_transaction(batch)
        return entries

    index: dict[str, list[dict[str, Any]]] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:  # overlap the SDK's CPU with Azurite's
        for entries in pool.map(customer_batch, range(count // BATCH)):
            for entry in entries:
                index.setdefault(entry["PartitionKey"], []).append(entry)
            written += BATCH
            if written % 10000 == 0:
                log_progress(f"{written} final records loaded")
        batches = [
            [("create", e) for e in entries[start : start + BATCH]]
            for entries in index.values()
            for start in range(0, len(entries), BATCH)
        ]
        list(pool.map(table.submit_transaction, batches))
    return time.perf_counter() - started


def _add_pending(store: Any, pending: int) -> None:
    from shared.upgrade_requests.record import PENDING

    def one(_: int) -> None:
        store.create_with_lock(new_request_record(str(uuid.uuid4()), PENDING))

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(pending)))


def _timer_run(
    processor: Any, meter: EntityMeter, pending: int, latency: float, sandbox: Any, *, add: bool = True
) -> dict[str, Any]:
    from shared.upgrade_requests.timer_run import process_pending

    if add:
        _add_pending(processor.store, pending)
    sandbox.latency = latency
    meter.reset()
    started = time.perf_counter()
    report = process_pending(processor, owner="bench-history", concurrency=8, budget_seconds=600, retention_days=400)
    seconds = time.perf_counter() - started
    sandbox.latency = 0.0
    return {
        "seconds": round(seconds, 2),
        "due": report.due,
        "outcomes": dict(report.outcomes),
        "entitiesReturned": meter.entities,
        "entitiesPerDueRequest": round(meter.entities / max(1, report.due), 2),
        "calls": dict(meter.calls),
        "meanMsByCall": meter.mean_ms(),
    }


def _lists(store: Any, meter: EntityMeter) -> dict[str, Any]:
    from shared.upgrade_requests.store import ListFilter

    out: dict[str, Any] = {}
    out["listPagePending100"] = _page(store, meter, ListFilter(states=("pending",)))
    out["listPageAllStates100"] = _page(store, meter, ListFilter())
    out["listPageComplete100"] = _page(store, meter, ListFilter(states=("complete",)))
    out["listPageCustomer"] = _page(store, meter, ListFilter(customer_id=str(uuid.uuid4())))
    meter.reset()
    started = time.perf_counter()
    store.summary(datetime.now(UTC) - timedelta(days=30))
    out["summary30Days"] = {
        "entities": meter.entities,
        "calls": dict(meter.calls),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return out


def _page(store: Any, meter: EntityMeter, selection: Any) -> dict[str, Any]:
    meter.reset()
    started = time.perf_counter()
    page = store.list_page(selection, 100, None)
    return {
        "records": len(page.records),
        "entitiesReturned": meter.entities,
        "calls": dict(meter.calls),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _export(env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as workdir:
        output, peak_file = os.path.join(workdir, "export.json"), os.path.join(workdir, "peak-rss")
        started = time.perf_counter()
        command = ["shared.cli", "--settings", "/nonexistent.json", "export", "--format", "json", "--output", output]
        process = subprocess.run(
            [sys.executable, "-m", "bench.peak_rss", peak_file, *command],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        seconds = time.perf_counter() - started
        size = os.path.getsize(output) if os.path.exists(output) else 0
        with open(peak_file, encoding="ascii") as peak:
            peak_rss = float(peak.read())
        return {
            "exitStatus": process.returncode,
            "seconds": round(seconds, 1),
            "peakRssMiB": peak_rss,
            "bytes": size,
            "output": process.stdout.decode().strip()[:200],
        }


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Two tables in the same Azurite, one empty and one with the history, timer runs alternating
    between them (so machine load drifting over the run hits both alike)."""
    import statistics

    from shared.runtime import get_runtime
    from shared.upgrade_requests.processor import RequestProcessor
    from shared.upgrade_requests.store import build_request_store

    final_records, pending, latency = int(params["finalRecords"]), int(params["pending"]), float(params["latency"])
    rounds = int(params.get("rounds", 2))
    with app_environment() as env:
        from shared.runtime import reset_runtime

        # Submitted requests must not come due for a status poll in a later round: every round
        # then has exactly `pending` requests due (the first full run's round 2 had 2,000).
        os.environ["STATUS_POLL_SECONDS"] = "86400"
        reset_runtime()
        runtime = get_runtime()
        none_meter = EntityMeter(runtime.store._table)
        runtime.store._table = none_meter
        history_table = env.settings["UPGRADE_REQUESTS_TABLE"] + "h"
        history_store = build_request_store(runtime.settings.storage, history_table, max_concurrency=24)
        history_meter = EntityMeter(history_store._table)
        history_store._table = history_meter
        base = runtime.processor
        processors = {
            "none": (base, none_meter),
            "history": (RequestProcessor(history_store, base._upgrades, base.policy, base.callbacks), history_meter),
        }
        log_progress(f"loading {final_records} final records into the history table (batches of {BATCH})")
        load_seconds = _load_final(history_meter._table, final_records)
        log_progress(
            f"loaded in {load_seconds:.0f} s; {rounds} rounds of timer runs over {pending} pending, alternating"
        )
        for processor, _ in processors.values():
            _add_pending(processor.store, pending)
        lists = {name: _lists(processors[name][0].store, processors[name][1]) for name in processors}
        runs: dict[str, list[dict[str, Any]]] = {"none": [], "history": []}
        for index in range(rounds):
            for name in ("none", "history") if index % 2 == 0 else ("history", "none"):
                processor, meter = processors[name]
                runs[name].append(_timer_run(processor, meter, pending, latency, env.sandbox, add=index > 0))
                log_progress(f"round {index + 1} {name}: {runs[name][-1]['seconds']} s")
        log_progress("export of every record of the history table (a separate process)")
        export = _export({**os.environ, "UPGRADE_REQUESTS_TABLE": history_table})
    seconds = {name: statistics.median(run["seconds"] for run in runs[name]) for name in runs}
    return {
        "finalRecords": final_records,
        "pending": pending,
        "rounds": rounds,
        "partnerCenterLatency": latency,
        "loadSeconds": round(load_seconds, 1),
        "noHistory": {"timerRun": runs["none"][-1], "timerRuns": runs["none"], **lists["none"]},
        "withHistory": {"timerRun": runs["history"][-1], "timerRuns": runs["history"], **lists["history"]},
        "timerMedianSeconds": seconds,
        "timerTimeRatio": round(seconds["history"] / max(1e-9, seconds["none"]), 3),
        "export": export,
    }
