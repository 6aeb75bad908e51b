"""`python -m shared.cli campaign ...`: transition campaigns (issue 19) from a terminal, with the
same rules, store and views as the HTTP routes (`shared.upgrade_requests.campaigns`,
`shared.api.campaigns`). The timer does the work; these commands create, steer and show it.

    campaign create --name N (--file customers.csv | --from-partner-center [--company-prefix P])
                    [--per-hour N] [--not-before T] [--start]
    campaign list [--top N] [--all]
    campaign show ID                 progress bar and counts
    campaign start|pause|resume|cancel ID
    campaign report ID [--output report.csv|report.json]   (stdout as CSV without --output)
    campaign watch ID [--interval S] [--once]

Exit codes: the table of `exit_codes` (bad input 2, unknown campaign or a refused action 3,
settings or storage 5).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.cli import exit_codes
from shared.upgrade_requests.campaigns.model import MEMBER_STATES, SOURCE_PARTNER_CENTER

ACTIONS = ("start", "pause", "resume", "cancel")
BAR_WIDTH = 40


def add_commands(commands: Any) -> None:
    group = commands.add_parser("campaign", help="transition campaigns: create, steer, show, report")
    sub = group.add_subparsers(dest="campaign_command", required=True)
    create = sub.add_parser("create", help="a campaign over a CSV of customer ids, or Partner Center's list")
    create.add_argument("--name", required=True)
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="CSV with a customerId column (or one id per line)")
    source.add_argument("--from-partner-center", action="store_true", help="every customer Partner Center lists")
    create.add_argument("--company-prefix", help="with --from-partner-center: names starting so")
    create.add_argument("--product-family", default="Azure")
    create.add_argument("--per-hour", type=int, help="Partner Center calls per hour (1-36000)")
    create.add_argument("--not-before", help="ISO 8601 time before which nothing is sent")
    create.add_argument("--start", action="store_true", help="start by itself once assessed (autoStart)")
    create.set_defaults(handler=_command(cmd_create))
    listing = sub.add_parser("list", help="campaigns, newest first")
    listing.add_argument("--top", type=int, default=50)
    listing.add_argument("--all", action="store_true", help="every page")
    listing.set_defaults(handler=_command(cmd_list))
    show = sub.add_parser("show", help="a campaign: progress bar and counts")
    show.add_argument("campaign_id")
    show.set_defaults(handler=_command(cmd_show))
    for action in ACTIONS:
        parser = sub.add_parser(action, help=f"{action} a campaign")
        parser.add_argument("campaign_id")
        parser.set_defaults(handler=_command(_action(action)))
    report = sub.add_parser("report", help="one row per member, CSV or JSON")
    report.add_argument("campaign_id")
    report.add_argument("--output", type=Path, help="report.csv or report.json (default: CSV on stdout)")
    report.set_defaults(handler=_command(cmd_report))
    watch = sub.add_parser("watch", help="the campaign's progress, refreshed until Ctrl-C")
    watch.add_argument("campaign_id")
    watch.add_argument("--interval", type=float, default=5.0)
    watch.add_argument("--once", action="store_true")
    watch.set_defaults(handler=_command(cmd_watch))


Emit = Callable[[dict[str, Any], str], None]


def cmd_create(args: argparse.Namespace, emit: Emit) -> int:
    from shared.cli.operator import current_operator
    from shared.runtime import get_settings
    from shared.upgrade_requests.campaigns import steering

    document: dict[str, Any] = {"name": args.name, "productFamily": args.product_family, "autoStart": args.start}
    if args.from_partner_center:
        document["source"] = SOURCE_PARTNER_CENTER
        if args.company_prefix is not None:
            document["companyNamePrefix"] = args.company_prefix
    else:
        document["customers"] = read_customer_file(args.file)
    if args.per_hour is not None:
        document["perHour"] = args.per_hour
    if args.not_before is not None:
        document["notBefore"] = args.not_before
    settings = get_settings()
    new = steering.new_campaign(
        document,
        max_members=settings.campaign_max_members,
        default_per_hour=settings.campaign_default_per_hour,
        requested_by=current_operator(),
    )
    stored = steering.create(_store(), new)
    view = _view(stored.campaign)
    view["duplicatesIgnored"] = new.duplicates
    emit(
        view, f"campaign {view['campaignId']} created: {view['members']} members ({new.duplicates} duplicates ignored)"
    )
    return exit_codes.OK


def read_customer_file(path: Path) -> list[str]:
    """Customer ids from a CSV with a `customerId` column, or one id per line (first column)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("customerid") if "customerid" in header else 0
    body = rows[1:] if "customerid" in header else rows
    return [row[column].strip() for row in body if len(row) > column]


def cmd_list(args: argparse.Namespace, emit: Emit) -> int:
    store = _store()
    campaigns: list[dict[str, Any]] = []
    after = None
    while True:
        page, after = store.list_page(max(1, min(500, args.top)), after)
        campaigns.extend(_view(campaign) for campaign in page)
        if not args.all or after is None:
            break
    lines = [f"{c['campaignId']}  {c['state']:<10} {c['progress']['percent']:5.1f}%  {c['name']}" for c in campaigns]
    emit({"value": campaigns}, "\n".join(lines) or "no campaigns")
    return exit_codes.OK


def progress_text(view: dict[str, Any]) -> str:
    """A progress bar, the counts and the pace, as `show` and `watch` print them."""
    progress = view["progress"]
    filled = int(BAR_WIDTH * progress["percent"] / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    counts = ", ".join(f"{state} {view['counts'][state]}" for state in MEMBER_STATES if view["counts"][state])
    pace = view["pace"]
    throttling = view["throttling"]
    left = view["remainingSeconds"]
    lines = [
        f"{view['name']} ({view['campaignId']}): {view['state']}",
        f"[{bar}] {progress['percent']:.1f}% ({progress['done']}/{progress['total']})",
        f"members: {counts or 'none yet'}",
        f"pace: asked {pace['askedPerHour']}/h, allowed {pace['allowedPerHour']}/h, "
        f"achieved {pace['achievedLastHour']} in the last hour"
        + (f"; about {int(left) // 60} min left" if left is not None else ""),
    ]
    if throttling["throttles"]:
        lines.append(
            f"429s: {throttling['throttles']}, last at {throttling['lastThrottledAt']} "
            f"(Retry-After {throttling['lastRetryAfterSeconds']} s)"
        )
    if view["lastError"]:
        lines.append(f"last error: {view['lastError']}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace, emit: Emit) -> int:
    from shared.upgrade_requests.campaigns import steering

    view = _view(steering.get(_store(), args.campaign_id.strip().lower()).campaign)
    emit(view, progress_text(view))
    return exit_codes.OK


def _action(action: str) -> Callable[[argparse.Namespace, Emit], int]:
    def run(args: argparse.Namespace, emit: Emit) -> int:
        from shared.upgrade_requests.campaigns import steering

        view = _view(steering.act(_store(), args.campaign_id.strip().lower(), action))
        emit(view, f"campaign {view['campaignId']}: {view['state']}")
        return exit_codes.OK

    return run


def cmd_report(args: argparse.Namespace, emit: Emit) -> int:
    from shared.api.campaigns import csv_lines, json_lines, report_row
    from shared.upgrade_requests.campaigns import steering

    store = _store()
    campaign_id = args.campaign_id.strip().lower()
    steering.get(store, campaign_id)
    as_json = args.output is not None and args.output.suffix.lower() == ".json"
    rows = (report_row(member) for member in store.all_members(campaign_id))
    chunks = json_lines(rows) if as_json else csv_lines(rows)
    if args.output is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        return exit_codes.OK
    with args.output.open("w", encoding="utf-8", newline="") as out:
        for chunk in chunks:
            out.write(chunk)
    print(f"report written to {args.output}", file=sys.stderr)
    return exit_codes.OK


def cmd_watch(args: argparse.Namespace, emit: Emit) -> int:
    from shared.upgrade_requests.campaigns import steering

    store = _store()
    campaign_id = args.campaign_id.strip().lower()
    try:
        while True:
            view = _view(steering.get(store, campaign_id).campaign)
            emit(view, progress_text(view) + "\n")
            if args.once or view["state"] in ("complete", "cancelled"):
                return exit_codes.OK
            time.sleep(max(0.5, args.interval))
    except KeyboardInterrupt:
        return exit_codes.OK


def _store() -> Any:
    from shared.api.campaign_wiring import campaign_store

    return campaign_store()


def _view(campaign: Any) -> dict[str, Any]:
    from shared.api.campaigns import campaign_view

    return campaign_view(campaign)


def _command(run: Callable[[argparse.Namespace, Emit], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        def emit(body: dict[str, Any], text: str) -> None:
            print(json.dumps(body, default=str) if args.json else text)

        return run(args, emit)

    return command
