"""The table's layout version: checked before the app reads or writes a table, and migrated by an
operator's command, never silently.

Why: a table written by another layout reads as empty to this one (its records sit under other
keys), so a GET answers 404 for a request that exists and a new POST sends a second create for a
customer whose first may have landed. A marker entity (`meta`/`layout`) names the version; a new,
empty table gets it on first use; any other table is refused with `StorageLayoutMismatch` (503
`storage-layout`) until `python -m shared.cli migrate` has moved it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.errors import StorageLayoutMismatch
from shared.upgrade_requests.store.entities import pointer_entity
from shared.upgrade_requests.store.layout import (
    CALLBACKS_PARTITION,
    LAYOUT_ROW,
    LAYOUT_VERSION,
    LEGACY_KEYS_PARTITION,
    META_PARTITION,
    key_pk,
)
from shared.upgrade_requests.store.table import TableOps, WriteConflict

log = logging.getLogger(__name__)

LAYOUT_0_PARTITION = "active"  # layout 0 kept its locks here, and its records under RowKey "request"
LAYOUT_0_RECORD_ROW = "request"


@dataclass(frozen=True)
class Migration:
    from_version: int
    keys_moved: int


class Schema(TableOps):
    def layout_version(self) -> int | None:
        """The table's layout: its marker, else what its entities show (None: an empty table)."""
        marker = self._get(META_PARTITION, LAYOUT_ROW)
        if marker is not None:
            version = marker.get("Version")
            return int(version) if isinstance(version, int) else -1
        for entity in self._query(f"PartitionKey ne '{META_PARTITION}'", {}, page_size=1):
            written_by_0 = entity["PartitionKey"] == LAYOUT_0_PARTITION or entity["RowKey"] == LAYOUT_0_RECORD_ROW
            return 0 if written_by_0 else 1
        return None

    def check_layout(self) -> None:
        """Refuse a table of another layout; mark an empty one as ours."""
        version = self.layout_version()
        if version is None:
            try:
                self._insert(self._marker())
                return
            except WriteConflict:  # another instance marked it first: read what it wrote
                version = self.layout_version()
        if version != LAYOUT_VERSION:
            raise layout_mismatch(self._table.table_name, version)

    def migrate(self) -> Migration:
        """Move a layout 1 table to layout 2 (idempotent: a crashed run is simply run again).

        Layout 1 differs in two places: its idempotency keys share one partition, and its callback
        entries do not say when they are due. Its records, locks and list entries are read by layout
        2 as they are (a record without `Revision` is at 0)."""
        version = self.layout_version()
        if version == LAYOUT_VERSION:
            return Migration(LAYOUT_VERSION, 0)
        if version not in (None, 1):
            raise layout_mismatch(self._table.table_name, version)
        moved = 0
        for entity in self._query(f"PartitionKey eq '{LEGACY_KEYS_PARTITION}'", {}, page_size=1000):
            key_hash = entity["RowKey"]
            moved_key = pointer_entity(key_pk(key_hash), key_hash, entity["RequestId"], entity.get("Fingerprint", ""))
            self._upsert(moved_key)
            self._delete(LEGACY_KEYS_PARTITION, key_hash, entity.metadata["etag"])
            moved += 1
        now = datetime.now(UTC)
        for entry in self._query(f"PartitionKey eq '{CALLBACKS_PARTITION}'", {}, page_size=1000):
            if "NextAt" not in entry:  # layout 1's callback entries: due now (the record says when)
                self._upsert({**entry, "NextAt": now})
        self._upsert(self._marker() | {"MigratedFrom": version or LAYOUT_VERSION, "MigratedAt": now})
        log.warning("store.migrated from_version=%s keys_moved=%s", version, moved)
        return Migration(version or LAYOUT_VERSION, moved)

    @staticmethod
    def _marker() -> dict[str, object]:
        return {"PartitionKey": META_PARTITION, "RowKey": LAYOUT_ROW, "Version": LAYOUT_VERSION}


def layout_mismatch(table: str, version: int | None) -> StorageLayoutMismatch:
    if version == 1:
        fix = (
            "stop every instance of the older app, then run `python -m shared.cli migrate` with this app's "
            "settings (docs/operating.md, 'Moving the request table to a new layout')"
        )
    elif version == 0:
        fix = (
            "layout 0 (request ids as partition keys) cannot be migrated: finish its requests with the app "
            "version that wrote it, or set UPGRADE_REQUESTS_TABLE to a new table"
        )
    else:
        fix = "deploy the app version that wrote it, or set UPGRADE_REQUESTS_TABLE to another table"
    return StorageLayoutMismatch(
        f"The request table '{table}' was written by layout {version}; this app reads layout "
        f"{LAYOUT_VERSION}. Nothing was read or written: {fix}",
        extensions={"layoutFound": version, "layoutExpected": LAYOUT_VERSION},
        retry_after=None,
    )
