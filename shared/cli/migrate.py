"""`python -m shared.cli migrate`: move the request table to the layout this app reads.

Run it once after deploying a version whose store layout changed, with every older instance
stopped: the app refuses a table of another layout (503 `storage-layout`) until it has run. It is
idempotent (a crashed run is simply run again) and changes nothing on a table already migrated.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from shared.cli import exit_codes


def add_commands(commands: Any) -> None:
    commands.add_parser("migrate", help="move the request table to the layout this app reads (after an upgrade)")


def cmd_migrate(args: argparse.Namespace, emit: Callable[..., None]) -> int:
    from shared.runtime import get_settings
    from shared.upgrade_requests.store import LAYOUT_VERSION, build_request_store

    settings = get_settings()
    table = settings.upgrade_requests_table
    store = build_request_store(settings.storage, table, check_layout=False)
    found = store.layout_version()
    migration = store.migrate()
    if found == LAYOUT_VERSION:
        text = f"table {table} is already at layout {LAYOUT_VERSION}: nothing to do"
    else:
        text = (
            f"table {table} moved from layout {found if found is not None else '(empty)'} to {LAYOUT_VERSION}: "
            f"{migration.keys_moved} idempotency key(s) moved"
        )
    emit(args, {"table": table, "from": found, "to": LAYOUT_VERSION, "keysMoved": migration.keys_moved}, text)
    return exit_codes.OK
