"""Many customers from a CSV file: bounded concurrency, a progress bar, a results file.

Safe to re-run: each row uses the Idempotency-Key `batch:{customerId}:{productFamily}`, so a row
that was accepted before answers with its existing request instead of submitting again.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.cli import exit_codes
from shared.errors import InvalidRequest, UpgradeError
from shared.identifiers import new_guid
from shared.runtime import Runtime
from shared.upgrade_requests.flow import accept_and_submit
from shared.upgrade_requests.intake import idempotency_key_hash
from shared.upgrade_requests.record import RequestedBy
from shared.validation import UpgradeTarget, customer_id_value, product_family_value

RESULT_FIELDS = (
    "row",
    "customerId",
    "productFamily",
    "requestId",
    "status",
    "upgradeId",
    "outcome",
    "replayed",
    "error",
    "exitCode",
)


@dataclass
class RowResult:
    row: int
    customerId: str
    productFamily: str
    requestId: str = ""
    status: str = ""
    upgradeId: str = ""
    outcome: str = ""
    replayed: bool = False
    error: str = ""
    exitCode: int = 0


def read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "customerId" not in reader.fieldnames:
            raise InvalidRequest(f"{path}, line 1: the first line must be a header with a customerId column")
        return [(index, row) for index, row in enumerate(reader, start=2)]


def distinct_rows(rows: list[tuple[int, dict[str, str]]]) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """Each customer + product family once (the first row wins), and a warning per repeat.

    Two rows for one customer would race for the same request (one `submitted`, one still
    `submitting`) and report the customer twice."""
    seen: dict[tuple[str, str], int] = {}
    kept, warnings = [], []
    for line, row in rows:
        customer = (row.get("customerId") or "").strip()
        family = (row.get("productFamily") or "Azure").strip()
        key = (customer.lower(), family.lower())
        if customer and key in seen:
            warnings.append(
                f"row {line}: customer {customer} ({family}) is also on row {seen[key]}: processed once, as that row"
            )
            continue
        seen[key] = line
        kept.append((line, row))
    return kept, warnings


NOT_REACHED = "not-reached"  # the `status` of a row an interrupted batch never started


@dataclass
class BatchRun:
    """Every row's result in the file's order; `interrupted` when Ctrl-C stopped the batch early."""

    results: list[RowResult]
    interrupted: bool = False

    @property
    def not_reached(self) -> int:
        return sum(1 for result in self.results if result.status == NOT_REACHED)


def run_batch(
    runtime: Runtime,
    rows: list[tuple[int, dict[str, str]]],
    *,
    concurrency: int,
    queue: bool,
    progress: Callable[[int], object] | None = None,
    requested_by: RequestedBy | None = None,
) -> BatchRun:
    """Each row once, `concurrency` at a time. Ctrl-C (KeyboardInterrupt in this, the main thread)
    starts no further row and lets the rows in flight finish (each within the app's deadlines):
    their create may already be at Partner Center, and finishing them is what makes their line in
    the results file true. Rows never started stay `not-reached`; a re-run submits them, and
    replays the others (row keys `batch:{customerId}:{productFamily}`)."""
    results = [
        RowResult(
            line,
            (row.get("customerId") or "").strip(),
            (row.get("productFamily") or "Azure").strip(),
            status=NOT_REACHED,
            error="not reached: the batch was interrupted before this row",
            exitCode=exit_codes.INTERRUPTED,
        )
        for line, row in rows
    ]
    stopping = threading.Event()

    def one(result: RowResult) -> None:
        if stopping.is_set():
            return
        try:
            target = UpgradeTarget(customer_id_value(result.customerId), product_family_value(result.productFamily))
            key = idempotency_key_hash(f"batch:{target.customer_id}:{target.product_family}")
            accepted = accept_and_submit(runtime, target, new_guid(), key, queue=queue, requested_by=requested_by)
            record = accepted.stored.record
            result.replayed = accepted.replayed
        except UpgradeError as error:
            result.status, result.error, result.exitCode = "", error.detail, exit_codes.for_error(error)
        else:
            result.requestId, result.status = record.request_id, record.state
            result.upgradeId, result.outcome = record.upgrade_id or "", record.outcome or ""
            result.error = record.last_error or ""
            result.exitCode = exit_codes.for_state(record.state)
        if progress:
            progress(1)

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="batch")
    futures = [pool.submit(one, result) for result in results]
    try:
        for future in as_completed(futures):
            future.result()
    except KeyboardInterrupt:
        stopping.set()
        _finish_in_flight(pool)
        return BatchRun(results, interrupted=True)
    pool.shutdown()
    return BatchRun(results)


def _finish_in_flight(pool: ThreadPoolExecutor) -> None:
    """Drop the rows not started; wait for those in flight (more Ctrl-C presses do not abandon
    them: a row whose create is on its way must end with its answer, or its line would lie)."""
    pool.shutdown(wait=False, cancel_futures=True)
    while True:
        try:
            pool.shutdown(wait=True)
            return
        except KeyboardInterrupt:
            print("finishing the rows already sent to Partner Center (each within its deadline)", file=sys.stderr)


def write_results(results: list[RowResult], path: Path, output_format: str) -> None:
    if output_format == "json":
        path.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        writer.writerows(asdict(result) for result in results)
