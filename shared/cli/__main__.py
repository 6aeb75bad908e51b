"""`python -m shared.cli`: upgrade customers by hand, with the app's own core and settings.

Settings come from the environment, else from `local.settings.json` (`--settings`), exactly the
names the function app reads. Global flags (--json, --settings, -v) go before or after the
command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.cli import campaign, campaigns, exit_codes, migrate
from shared.cli.messages import error_line, plural
from shared.cli.results_file import OUTPUT_FORMATS
from shared.correlation import CallContext, log_scope
from shared.errors import ConfigurationError, UpgradeError
from shared.identifiers import new_guid
from shared.local_settings import apply, check_local_env_is_live, load_local_settings, unsourced_runner_hint
from shared.upgrade_requests.intake import idempotency_key_hash
from shared.upgrade_requests.record import RequestedBy
from shared.validation import (
    DEFAULT_PRODUCT_FAMILY,
    UpgradeTarget,
    customer_id_value,
    product_family_value,
    upgrade_id_value,
)

log = logging.getLogger("shared.cli")


GLOBAL_FLAGS_HELP = {
    "--json": "machine-readable output on stdout",
    "--settings": "local.settings.json to read when a setting is not in the environment",
    "--verbose": "log progress to stderr",
}


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help=GLOBAL_FLAGS_HELP["--json"])
    parser.add_argument(
        "--settings", type=Path, default=Path("local.settings.json"), help=GLOBAL_FLAGS_HELP["--settings"]
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=GLOBAL_FLAGS_HELP["--verbose"])


def _global_flags_parser() -> argparse.ArgumentParser:
    """Picks the global flags out of argv wherever they are, so every subcommand (including ones
    registered by other modules) accepts them before or after its name."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_global_flags(parser)
    return parser


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, else an error stating the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number between {low} and {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.cli",
        description=__doc__,
        epilog=exit_codes.table_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_global_flags(parser)
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
    batch.add_argument("--concurrency", type=int_in_range(1, 32), default=4, help="customers at once (1-32)")
    batch.add_argument("--output", type=Path, help="results file, .csv or .json (default: FILE.results.csv)")
    batch.add_argument("--format", choices=OUTPUT_FORMATS, help="results format (default: from --output's extension)")
    batch.add_argument("--queue", action="store_true", help="store every row for the timer instead of submitting now")

    commands.add_parser("process-pending", help="one timer run now")
    campaign.add_commands(commands)  # more commands: one line per module
    migrate.add_commands(commands)
    campaigns.add_commands(commands)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    flags, rest = _global_flags_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rest)
    for name, value in vars(flags).items():  # taken out of argv above: the parser saw only defaults
        setattr(args, name, value)
    return args


def _customer_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customer-id", required=True)
    parser.add_argument("--product-family", default=DEFAULT_PRODUCT_FAMILY)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s %(message)s",
    )
    for noisy in ("azure", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        check_local_env_is_live()
        apply(load_local_settings(args.settings))
        handler = getattr(args, "handler", None) or getattr(args, "func", None) or COMMANDS[args.command]
        with log_scope():
            return int(handler(args))
    except UpgradeError as error:
        hint = unsourced_runner_hint() if isinstance(error, ConfigurationError) else None
        _emit(
            args,
            {"error": error.slug, "title": error.title, "detail": error.detail, **error.extensions},
            error_line(error) + (f"\n{hint}" if hint else ""),
            stream=sys.stderr,
        )
        return exit_codes.for_error(error)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:  # a command with work to save (batch) handles Ctrl-C itself
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
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


def _operator() -> RequestedBy:
    """Who runs this command; also named on every log line from here on (`caller_oid=`)."""
    from shared.cli.operator import current_operator
    from shared.correlation import bind_caller_to_log_lines

    operator = current_operator()
    bind_caller_to_log_lines(operator.log_id)
    return operator


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
    accepted = accept_and_submit(runtime, target, new_guid(), key, queue=args.queue, requested_by=_operator())
    record = accepted.stored.record
    view = {**record.public_view(), "replayed": accepted.replayed}
    summary = f"{record.customer_id}: request {record.request_id} is {record.state}"
    if accepted.replayed:
        summary = f"replayed (an earlier request, nothing new submitted): {summary}"
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
            raise NotFound(f"No upgrade request {args.request_id} in table {runtime.settings.upgrade_requests_table}")
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
    return exit_codes.OK if eligibility.is_eligible and not eligibility.upgrade_id else exit_codes.REFUSED


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.cli.batch import distinct_rows, read_rows, run_batch, write_results
    from shared.cli.results_file import results_format

    output = args.output or args.file.with_suffix(".results.csv")
    output_format = results_format(output, args.format)  # before any customer is touched
    rows, duplicates = distinct_rows(read_rows(args.file))
    for duplicate in duplicates:
        print(f"warning: {duplicate}", file=sys.stderr)
    runtime = _runtime()
    with tqdm(total=len(rows), unit="customer", file=sys.stderr, disable=None) as bar:
        run = run_batch(
            runtime,
            rows,
            concurrency=args.concurrency,
            queue=args.queue,
            progress=bar.update,
            requested_by=_operator(),
        )
    results = run.results
    write_results(results, output, output_format)
    by_status: dict[str, int] = {}
    for result in results:
        key = result.status or "error"
        by_status[key] = by_status.get(key, 0) + 1
    replayed = sum(1 for result in results if result.replayed)
    summary = {
        "rows": len(results),
        "byStatus": by_status,
        "replayed": replayed,
        "duplicates": duplicates,
        "results": str(output),
        "interrupted": run.interrupted,
    }
    _emit(
        args,
        summary,
        f"{plural(len(results), 'row')}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
        + (f" ({replayed} replayed: accepted earlier, nothing new submitted)" if replayed else "")
        + (f"; {plural(len(duplicates), 'duplicate row')} skipped" if duplicates else "")
        + f"; results in {output}",
    )
    if run.interrupted:
        print(
            f"interrupted: {run.not_reached} of {plural(len(results), 'row')} not reached (results in {output}); "
            "run the same command again to finish: rows already accepted are replayed, never submitted twice",
            file=sys.stderr,
        )
        return exit_codes.INTERRUPTED
    return exit_codes.worst([result.exitCode for result in results])


def cmd_process_pending(args: argparse.Namespace) -> int:
    from shared.api.timer_trigger import process_pending

    report = process_pending().as_dict()
    summary = f"due {report['due']}, outcomes {report['outcomes']}, not started {report['notStarted']}"
    _emit(args, report, summary + (f", interrupted {report['interrupted']}" if report.get("interrupted") else ""))
    return exit_codes.OK


COMMANDS = {
    "upgrade": cmd_upgrade,
    "status": cmd_status,
    "eligibility": cmd_eligibility,
    "batch": cmd_batch,
    "process-pending": cmd_process_pending,
    "migrate": lambda args: migrate.cmd_migrate(args, _emit),
    **campaign.COMMANDS,
}


def _emit(args: argparse.Namespace, body: dict[str, Any], text: str, stream: Any = None) -> None:
    if args.json:
        print(json.dumps(body, default=str), file=stream or sys.stdout)
    else:
        print(text, file=stream or sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
