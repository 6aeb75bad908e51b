"""`python -m shared.cli`: upgrade customers by hand, with the app's own core and settings.

Settings come from the environment, else from `local.settings.json` (`--settings`), exactly the
names the function app reads. Exit codes: 0 ok, 1 unexpected, 2 bad input, 3 refused (rejected,
not eligible, failed), 4 accepted but not submitted yet, 5 an operator must act.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from shared.cli import campaign, exit_codes
from shared.correlation import CallContext
from shared.errors import UpgradeError
from shared.identifiers import new_guid
from shared.local_settings import apply, load_local_settings
from shared.upgrade_requests.intake import idempotency_key_hash
from shared.validation import (
    DEFAULT_PRODUCT_FAMILY,
    UpgradeTarget,
    customer_id_value,
    product_family_value,
    upgrade_id_value,
)

log = logging.getLogger("shared.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument(
        "--settings",
        type=Path,
        default=Path("local.settings.json"),
        help="local.settings.json to read when a setting is not in the environment",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    upgrade = commands.add_parser("upgrade", help="upgrade one customer")
    _customer_args(upgrade)
    upgrade.add_argument(
        "--check-eligibility",
        action="store_true",
        help="ask eligibility first and submit only if eligible with no upgrade in place",
    )
    upgrade.add_argument("--queue", action="store_true", help="store for the timer instead of submitting now")
    upgrade.add_argument("--idempotency-key", help="re-running with the same key never submits twice")

    status = commands.add_parser("status", help="a request's status, or an upgrade's status at Partner Center")
    status.add_argument("--request-id", help="the requestId the app returned")
    status.add_argument("--upgrade-id", help="Partner Center's upgrade id (needs --customer-id)")
    status.add_argument("--customer-id")
    status.add_argument("--product-family", default=DEFAULT_PRODUCT_FAMILY)

    eligibility = commands.add_parser("eligibility", help="can this customer be upgraded")
    _customer_args(eligibility)

    batch = commands.add_parser(
        "batch", help="upgrade every customer of a CSV file (header: customerId[,productFamily])"
    )
    batch.add_argument("file", type=Path)
    batch.add_argument("--concurrency", type=int, default=4, choices=range(1, 33), metavar="1-32")
    batch.add_argument("--output", type=Path, help="results file, .csv or .json (default: FILE.results.csv)")
    batch.add_argument("--queue", action="store_true", help="store every row for the timer instead of submitting now")

    commands.add_parser("process-pending", help="one timer run now")
    campaign.add_commands(commands)
    return parser


def _customer_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customer-id", required=True)
    parser.add_argument("--product-family", default=DEFAULT_PRODUCT_FAMILY)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s %(message)s",
    )
    for noisy in ("azure", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        apply(load_local_settings(args.settings))
        return COMMANDS[args.command](args)
    except UpgradeError as error:
        _emit(
            args,
            {"error": error.slug, "title": error.title, "detail": error.detail, **error.extensions},
            f"error: {error.title}: {error.detail}",
            stream=sys.stderr,
        )
        return exit_codes.for_error(error)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except Exception:
        log.exception("unexpected failure")
        return exit_codes.UNEXPECTED


def _target(args: argparse.Namespace) -> UpgradeTarget:
    return UpgradeTarget(
        customer_id_value(args.customer_id, "--customer-id"), product_family_value(args.product_family)
    )


def _runtime() -> Any:
    from shared.runtime import get_runtime

    return get_runtime()


def cmd_upgrade(args: argparse.Namespace) -> int:
    from shared.upgrade_requests.flow import accept_and_submit

    target = _target(args)
    runtime = _runtime()
    if args.check_eligibility:
        eligibility = runtime.upgrades.eligibility(target, CallContext.new())
        if eligibility.upgrade_id or not eligibility.is_eligible:
            body = {
                "customerId": target.customer_id,
                "isEligible": eligibility.is_eligible,
                "upgradeId": eligibility.upgrade_id,
                "reason": eligibility.reason,
                "submitted": False,
            }
            text = (
                f"already upgraded: upgrade {eligibility.upgrade_id}"
                if eligibility.upgrade_id
                else f"not eligible: {eligibility.reason or 'no reason given'}"
            )
            _emit(args, body, f"{target.customer_id}: {text}; nothing submitted")
            return exit_codes.OK if eligibility.upgrade_id else exit_codes.REFUSED
    key = idempotency_key_hash(args.idempotency_key) if args.idempotency_key else ""
    accepted = accept_and_submit(runtime, target, new_guid(), key, queue=args.queue)
    record = accepted.stored.record
    view = {**record.public_view(), "replayed": accepted.replayed}
    summary = f"{record.customer_id}: request {record.request_id} is {record.state}"
    if record.upgrade_id:
        summary += f", upgrade {record.upgrade_id} ({record.outcome})"
    if record.last_error:
        summary += f"; last error: {record.last_error}"
    _emit(args, view, summary)
    return exit_codes.for_state(record.state)


def cmd_status(args: argparse.Namespace) -> int:
    runtime = _runtime()
    if args.request_id:
        from shared.errors import NotFound
        from shared.upgrade_requests.flow import refresh

        stored = runtime.store.get(upgrade_id_value(args.request_id, "--request-id"))
        if stored is None:
            raise NotFound(f"No upgrade request {args.request_id}")
        record = refresh(runtime, stored).record
        _emit(
            args,
            record.public_view(),
            f"request {record.request_id}: {record.state}"
            + (f", upgrade {record.upgrade_id} status {record.upstream_status}" if record.upgrade_id else ""),
        )
        return exit_codes.for_state(record.state)
    if not (args.upgrade_id and args.customer_id):
        raise ValueError("status needs --request-id, or --upgrade-id with --customer-id")
    from shared.api.upgrade_routes import status_body

    target = _target(args)
    upgrade_id = upgrade_id_value(args.upgrade_id, "--upgrade-id")
    correlation = CallContext.new()
    body = status_body(
        upgrade_id, target, runtime.upgrades.status(upgrade_id, target, correlation), correlation.correlation_id
    )
    _emit(args, body, f"upgrade {upgrade_id}: {body['state']} (Partner Center status {body['status']})")
    return exit_codes.REFUSED if body["state"] == "failed" else exit_codes.OK


def cmd_eligibility(args: argparse.Namespace) -> int:
    target = _target(args)
    eligibility = _runtime().upgrades.eligibility(target, CallContext.new())
    body = eligibility.public_view()
    text = "eligible" if eligibility.is_eligible else f"not eligible: {eligibility.reason or 'no reason given'}"
    if eligibility.upgrade_id:
        text += f"; upgrade {eligibility.upgrade_id} already in place"
    _emit(args, body, f"{target.customer_id}: {text}")
    return exit_codes.OK if eligibility.is_eligible or eligibility.upgrade_id else exit_codes.REFUSED


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.cli.batch import read_rows, run_batch, write_results

    runtime = _runtime()
    rows = read_rows(args.file)
    with tqdm(total=len(rows), unit="customer", file=sys.stderr, disable=None) as bar:
        results = run_batch(runtime, rows, concurrency=args.concurrency, queue=args.queue, progress=bar.update)
    output = args.output or args.file.with_suffix(".results.csv")
    write_results(results, output)
    by_status: dict[str, int] = {}
    for result in results:
        key = result.status or "error"
        by_status[key] = by_status.get(key, 0) + 1
    summary = {"rows": len(results), "byStatus": by_status, "results": str(output)}
    _emit(
        args,
        summary,
        f"{len(results)} rows: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
        + f"; results in {output}",
    )
    return exit_codes.worst([result.exitCode for result in results])


def cmd_process_pending(args: argparse.Namespace) -> int:
    from shared.api.timer_trigger import process_pending

    report = process_pending().as_dict()
    _emit(args, report, f"due {report['due']}, outcomes {report['outcomes']}, not started {report['notStarted']}")
    return exit_codes.OK


COMMANDS = {
    "upgrade": cmd_upgrade,
    "status": cmd_status,
    "eligibility": cmd_eligibility,
    "batch": cmd_batch,
    "process-pending": cmd_process_pending,
    **campaign.COMMANDS,
}


def _emit(args: argparse.Namespace, body: dict[str, Any], text: str, stream: Any = None) -> None:
    if args.json:
        print(json.dumps(body, default=str), file=stream or sys.stdout)
    else:
        print(text, file=stream or sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
