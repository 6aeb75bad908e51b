"""Campaign commands of the operator CLI: `list`, `export`, `cancel`, `retry`, `summary`, `watch`.

Kept apart from `__main__` (which only registers them) so the core CLI can change on its own.
They use the same store and rules as the HTTP routes (`shared.upgrade_requests.campaign`):
`list` takes the route's filters and pages with its continuation token; `export` streams every
record (never the whole table in memory) with a progress bar on stderr; `watch` is a live
terminal view of counts by state and the latest failures (rich), refreshing until Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from shared.cli import exit_codes
from shared.cli.results_file import OUTPUT_FORMATS, results_format
from shared.upgrade_requests.record import ALL_STATES, FAILED, REJECTED, UpgradeRequestRecord
from shared.upgrade_requests.store import MAX_PAGE, ListFilter
from shared.validation import customer_id_value, upgrade_id_value

CSV_FIELDS = (
    "requestId",
    "status",
    "customerId",
    "productFamily",
    "upgradeId",
    "outcome",
    "upgradeStatus",
    "attempts",
    "lastErrorType",
    "lastError",
    "createMayHaveBeenSent",
    "queued",
    "correlationId",
    "createdAt",
    "updatedAt",
    "submittedAt",
    "finishedAt",
    "errorDetails",
    "lineItems",
    "callback",
)


def add_commands(commands: Any) -> None:
    """Register the campaign commands on `__main__`'s subparsers."""
    listing = commands.add_parser("list", help="stored requests by state, customer and creation time")
    _filters(listing)
    listing.add_argument("--top", type=_top, default=100, metavar=f"1-{MAX_PAGE}", help="requests per page")
    listing.add_argument("--continuation-token", help="where the previous page stopped")
    listing.add_argument("--all", action="store_true", help="follow every page")

    export = commands.add_parser("export", help="every stored request, streamed as CSV or JSON")
    export.add_argument("--format", choices=OUTPUT_FORMATS, help="csv or json (default: from --output's extension)")
    export.add_argument("--output", type=Path, help="file to write, .csv or .json (default: stdout, CSV)")
    export.add_argument("--state", action="append", help="only these states (repeatable or comma-separated)")

    cancel = commands.add_parser("cancel", help="cancel a request that has not sent a create yet")
    cancel.add_argument("--request-id", required=True)

    retry = commands.add_parser("retry", help="accept a failed (or, with --force, rejected) request again")
    retry.add_argument("--request-id", required=True)
    retry.add_argument("--force", action="store_true", help="retry a rejected request after its cause was fixed")

    watch = commands.add_parser("watch", help="live counts by state and the latest failures, until Ctrl-C")
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    watch.add_argument("--once", action="store_true", help="print one view and exit")

    summary = commands.add_parser("summary", help="counts by state and last error, the oldest pending age")
    summary.add_argument("--created-from", help="ISO 8601: final requests created since (default: 30 days ago)")
    summary.add_argument("--created-to", help="ISO 8601, exclusive")


def _top(text: str) -> int:
    """`--top`: the route's page bounds, stated as a range (argparse's `choices` listed all 500)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"top must be 1-{MAX_PAGE}, got {text!r}")
    return value


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", action="append", help="one or more states (repeatable or comma-separated)")
    parser.add_argument("--customer-id")
    parser.add_argument("--created-from", help="ISO 8601, inclusive")
    parser.add_argument("--created-to", help="ISO 8601, exclusive")


def _states(values: list[str] | None) -> tuple[str, ...]:
    states = [s.strip().lower() for value in values or [] for s in value.split(",") if s.strip()]
    unknown = sorted(set(states) - set(ALL_STATES))
    if unknown:
        raise ValueError(f"unknown state(s) {', '.join(unknown)}; states are {', '.join(ALL_STATES)}")
    return tuple(dict.fromkeys(states))


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time like 2026-11-01T00:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _selection(args: argparse.Namespace) -> ListFilter:
    customer = customer_id_value(args.customer_id, "--customer-id") if args.customer_id else None
    return ListFilter(
        _states(args.state),
        customer,
        _time(args.created_from, "--created-from"),
        _time(args.created_to, "--created-to"),
    )


def cmd_list(args: argparse.Namespace, runtime: Any, emit: Callable[..., None]) -> int:
    selection = _selection(args)
    token = args.continuation_token
    records: list[dict[str, Any]] = []
    while True:
        page = runtime.store.list_page(selection, args.top, token)
        records.extend(record.public_view() for record in page.records)
        token = page.continuation_token
        if not args.all or token is None:
            break
    lines = [
        f"{r['requestId']}  {r['status']:<10} {r['customerId']}  {r['createdAt']}  {r['lastError'] or ''}"
        for r in records
    ]
    if token:
        lines.append(f"more: --continuation-token {token}")
    emit({"value": records, "continuationToken": token}, "\n".join(lines) or "no requests match")
    return exit_codes.OK


def export_rows(records: Iterator[UpgradeRequestRecord], out: IO[str], fmt: str, progress: Callable[[int], Any]) -> int:
    """Write each record as it arrives (CSV rows or the items of one JSON array); returns the count."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
    else:
        out.write("[")
    for record in records:
        view = record.public_view()
        if fmt == "csv":
            for name in ("errorDetails", "lineItems", "callback"):
                view[name] = json.dumps(view[name]) if view[name] else ""
            writer.writerow(view)
        else:
            out.write(("," if count else "") + "\n" + json.dumps(view, default=str))
        count += 1
        progress(1)
    if fmt == "json":
        out.write("\n]\n")
    return count


def cmd_export(args: argparse.Namespace, runtime: Any, emit: Callable[..., None]) -> int:
    from tqdm import tqdm

    states = set(_states(args.state))
    # The rule of `batch --output`: --format, else the extension; another one is refused before any work.
    output_format = results_format(args.output, args.format) if args.output else args.format or "csv"
    records = (r for r in runtime.store.all_records() if not states or r.state in states)
    with (
        tqdm(unit="request", file=sys.stderr, disable=None, desc="export") as bar,
        args.output.open("w", newline="", encoding="utf-8") if args.output else _stdout() as out,
    ):
        count = export_rows(records, out, output_format, bar.update)
    if args.output:
        emit({"exported": count, "output": str(args.output)}, f"{count} requests written to {args.output}")
    return exit_codes.OK


class _stdout:
    def __enter__(self) -> IO[str]:
        return sys.stdout

    def __exit__(self, *_: object) -> None:
        sys.stdout.flush()


def cmd_cancel(args: argparse.Namespace, runtime: Any, emit: Callable[..., None]) -> int:
    from shared.upgrade_requests.campaign import cancel

    record = cancel(runtime, upgrade_id_value(args.request_id, "--request-id")).record
    emit(record.public_view(), f"request {record.request_id}: {record.state}")
    return exit_codes.OK


def cmd_retry(args: argparse.Namespace, runtime: Any, emit: Callable[..., None]) -> int:
    from shared.errors import CannotRetry
    from shared.upgrade_requests.campaign import retry

    try:
        record = retry(runtime, upgrade_id_value(args.request_id, "--request-id"), force=args.force).record
    except CannotRetry as refused:
        if refused.extensions.get("requestStatus") != REJECTED:
            raise
        raise CannotRetry(  # the route's hint names its body (`{"force": true}`); here it is a flag
            "The request is rejected: Partner Center refused it; fix the cause, then run `retry --force`",
            extensions=refused.extensions,
        ) from None
    emit(record.public_view(), f"request {record.request_id}: {record.state} again (attempts reset)")
    return exit_codes.OK


def cmd_summary(args: argparse.Namespace, runtime: Any, emit: Callable[..., None]) -> int:
    """The summary route's body (`GET product-upgrade-requests/summary`), from the store directly."""
    from shared.api.campaign_routes import SUMMARY_DEFAULT_DAYS, summary_body

    now = datetime.now(UTC)
    created_from = _time(args.created_from, "--created-from") or now - timedelta(days=SUMMARY_DEFAULT_DAYS)
    created_to = _time(args.created_to, "--created-to")
    if created_to is not None and created_to <= created_from:
        raise ValueError("--created-to must be after --created-from")
    body = summary_body(runtime.store, created_from, created_to, now)
    lines = ["by state: " + ", ".join(f"{state} {body['byState'].get(state, 0)}" for state in ALL_STATES)]
    if body["byLastErrorType"]:
        lines.append("by last error: " + ", ".join(f"{k} {v}" for k, v in sorted(body["byLastErrorType"].items())))
    if body["byPartnerCenterErrorCode"]:
        codes = sorted(body["byPartnerCenterErrorCode"].items())
        lines.append("by Partner Center error code: " + ", ".join(f"{k} {v}" for k, v in codes))
    age = body["oldestPendingAgeSeconds"]
    lines.append("no pending request" if age is None else f"oldest pending: {age} s ({body['oldestPendingCreatedAt']})")
    emit(body, "\n".join(lines))
    return exit_codes.OK


def watch_view(runtime: Any) -> Any:
    """One frame of `watch`: counts by state (the summary route's), the latest failures."""
    from rich.console import Group
    from rich.table import Table

    now = datetime.now(UTC)
    summary = runtime.store.summary(now - timedelta(days=30))
    counts = Table(title=f"Upgrade requests (final ones created in the last 30 days) at {now:%H:%M:%S} UTC")
    for state in ALL_STATES:
        counts.add_column(state, justify="right")
    counts.add_row(*(str(summary.by_state.get(state, 0)) for state in ALL_STATES))
    oldest = summary.oldest_pending_created_at
    age = f"oldest pending: {int((now - oldest).total_seconds())} s" if oldest else "no pending request"
    page = runtime.store.list_page(ListFilter((FAILED, REJECTED), None, now - timedelta(days=1)), MAX_PAGE, None)
    latest = sorted(page.records, key=lambda r: r.finished_at or r.updated_at, reverse=True)[:10]
    failures = Table(title=f"Latest failures (last 24 h); {age}")
    for column in ("finished", "request", "customer", "state", "error"):
        failures.add_column(column)
    for record in latest:
        finished = (record.finished_at or record.updated_at).strftime("%m-%d %H:%M")
        error = f"{record.last_error_type or ''}: {(record.last_error or '')[:60]}"
        failures.add_row(finished, record.request_id, record.customer_id, record.state, error)
    return Group(counts, failures)


def cmd_watch(args: argparse.Namespace, get_runtime: Callable[[], Any], emit: Callable[..., None]) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if args.once:
        console.print(watch_view(get_runtime()))
        return exit_codes.OK
    interval = max(0.5, args.interval)
    try:
        with Live(_watch_frame(get_runtime, interval), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(_watch_frame(get_runtime, interval))
    except KeyboardInterrupt:
        return exit_codes.OK


def _watch_frame(get_runtime: Callable[[], Any], interval: float) -> Any:
    """The view, or (store unreachable, deadline, ...) what went wrong: `watch` keeps watching."""
    from rich.text import Text

    from shared.cli.messages import error_line
    from shared.errors import UpgradeError

    try:
        return watch_view(get_runtime())
    except UpgradeError as error:
        now = datetime.now(UTC)
        return Text(
            f"{now:%H:%M:%S} UTC: the request store is unreachable; trying again every {interval:g} s "
            f"(Ctrl-C to stop)\n{error_line(error)}"
        )


def _command(
    run: Callable[[argparse.Namespace, Any, Callable[..., None]], int], *, lazy: bool = False
) -> Callable[[argparse.Namespace], int]:
    """Give a command the runtime (`lazy`: the function that gets it, for a command that must
    outlive a store that is not there yet) and an emitter that honours `--json`."""

    def command(args: argparse.Namespace) -> int:
        from shared.runtime import get_runtime

        def emit(body: dict[str, Any], text: str) -> None:
            print(json.dumps(body, default=str) if args.json else text)

        return run(args, get_runtime if lazy else get_runtime(), emit)

    return command


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _command(cmd_list),
    "export": _command(cmd_export),
    "cancel": _command(cmd_cancel),
    "retry": _command(cmd_retry),
    "summary": _command(cmd_summary),
    "watch": _command(cmd_watch, lazy=True),
}
