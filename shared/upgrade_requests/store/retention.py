"""Retention: final requests created and finished before the cutoff go, with everything that
names them, found through the oldest `l-` partitions (no query scans what is kept).

Order per request (a crash after any step leaves the list entry, which goes last, and the next run
finds the rest through it): 1. the final copy (ETag-guarded: a copy reopened or changed since it was
read stays, with its key), 2. its idempotency key (if it still names it; the list entry carries the
key's hash, so a run after a crash still finds it), 3. its callback entry, 4. the list entry. A
replay of the key after retention is a new request, under a new id (docs/campaigns.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.upgrade_requests.record import CALLBACK_PENDING, FINAL_STATES
from shared.upgrade_requests.store.entities import handle, revision_of
from shared.upgrade_requests.store.layout import (
    LIST_PREFIX,
    META_PARTITION,
    RETENTION_CURSOR_ROW,
    RETENTION_ROW,
    final_pk,
    iso_key,
)
from shared.upgrade_requests.store.listing import Listing
from shared.upgrade_requests.store.pointers import Pointers
from shared.upgrade_requests.store.table import log

EXAMINED_PER_DELETED = 4  # entries kept (retried late, callback pending) may stand before the expired ones


class Retention(Listing, Pointers):
    def purge_expired(self, cutoff: datetime, batch: int, *, at_most_every: timedelta | None = None) -> int:
        """Delete up to `batch` final requests created and finished before `cutoff`, none with a callback pending.

        With `at_most_every`, a marker entity (one point read) skips the run if the last one that
        found nothing more to delete was more recent than that (the timer: once an hour); a run
        that stopped at its batch leaves the marker alone, so the next run goes on at once."""
        now = datetime.now(UTC)
        if at_most_every is not None:
            marker = self._get(META_PARTITION, RETENTION_ROW)
            last = marker.get("LastRunAt") if marker is not None else None
            if isinstance(last, datetime) and now - last < at_most_every:
                return 0
        deleted, caught_up = self._purge(cutoff, batch)
        if at_most_every is not None and caught_up:
            self._upsert({"PartitionKey": META_PARTITION, "RowKey": RETENTION_ROW, "LastRunAt": now})
        return deleted

    def _purge(self, cutoff: datetime, batch: int) -> tuple[int, bool]:
        """(requests deleted, whether every entry before the cutoff was examined). A run that stops
        at its limit leaves a cursor, so the next one goes on after what it kept, not before it."""
        deleted = examined = 0
        limit = batch * EXAMINED_PER_DELETED
        day = f"{cutoff.astimezone(UTC):%Y%m%d}"
        cursor = self._get(META_PARTITION, RETENTION_CURSOR_ROW)
        states = sorted(FINAL_STATES)
        start = states.index(cursor["State"]) if cursor is not None and cursor.get("State") in states else 0
        for state in states[start:]:
            prefix = f"{LIST_PREFIX}{state}-"
            query = "PartitionKey ge @first and PartitionKey le @last and RowKey lt @before"
            parameters: dict[str, Any] = {"first": prefix, "last": prefix + day, "before": iso_key(cutoff)}
            if cursor is not None and cursor.get("State") == state:
                # (the SDK substitutes `@name` only as a whole space-separated word: hence "@afterRk )")
                query += " and (PartitionKey gt @afterPk or (PartitionKey eq @afterPk and RowKey gt @afterRk ) )"
                parameters |= {"afterPk": cursor["AfterPartition"], "afterRk": cursor["AfterRow"]}
            for entry in self._query(query, parameters, page_size=min(1000, limit - examined)):
                examined += 1
                deleted += self._expire(entry, state, cutoff)
                if deleted >= batch or examined >= limit:
                    self._upsert(
                        {
                            "PartitionKey": META_PARTITION,
                            "RowKey": RETENTION_CURSOR_ROW,
                            "State": state,
                            "AfterPartition": entry["PartitionKey"],
                            "AfterRow": entry["RowKey"],
                        }
                    )
                    self._log(deleted, cutoff)
                    return deleted, False
        if cursor is not None:
            self._delete(META_PARTITION, RETENTION_CURSOR_ROW)
        self._log(deleted, cutoff)
        return deleted, cursor is None  # a pass that began at a cursor starts over from the oldest next

    def _expire(self, entry: Any, state: str, cutoff: datetime) -> bool:
        entry_key = (entry["PartitionKey"], entry["RowKey"], entry.metadata["etag"])
        stored = self.get(entry["RequestId"])
        if stored is None:  # the request went first (an earlier run stopped): its key and entry go too
            if entry.get("KeyHash"):
                self.delete_key(entry["KeyHash"], entry["RequestId"])
            self._delete(*entry_key)
            return False
        record = stored.record
        _, revision, etag = handle(stored.etag)
        if stored.is_active_copy:
            if not record.is_final and revision_of(entry) < revision:  # reopened since: a stale entry
                self._delete(*entry_key)
            return False  # final but not yet moved: repair() moves it, a later run deletes it
        if record.state != state:  # finished again in another state: this entry is stale
            self._delete(*entry_key)
            return False
        if (record.finished_at or record.updated_at) >= cutoff or record.callback_state == CALLBACK_PENDING:
            return False  # retried (final again since the cutoff) or still calling back: kept
        if not self._delete(final_pk(record.request_id), record.request_id, etag):
            return False  # reopened or changed since it was read: kept, with its key
        if record.idempotency_key_hash:
            self.delete_key(record.idempotency_key_hash, record.request_id)
        self._drop_callback_entry(record.request_id, revision)
        self._delete(*entry_key)
        return True

    def _log(self, deleted: int, cutoff: datetime) -> None:
        if deleted:
            log.info("store.retention_deleted count=%s cutoff=%s", deleted, cutoff.isoformat())
