"""A record changing place: finalising (active -> final), reopening (final -> active), and
`repair()`, which finishes either after a crash. The crash protocol of each, write by write, is
the table in docs/exactly-once.md; the rules that make them safe when they run at the same time:

- While an active copy (`a-`) exists, it is the record: `get` reads it first, lists show it and
  not a final copy of the same id, and nothing deletes it but the move that wrote its final state
  (ETag-guarded) or the intake that finds it final (the same guarded delete).
- A final copy (`f-`) is only ever written over an older revision, never deleted by a move, and
  deleted only by a reopen (the copy it claimed, ETag-guarded) or retention. So a slow or stale
  writer can lose its race but never remove or roll back what another wrote.
- The customer's lock is released only together with the active copy, in one entity-group
  transaction whose two deletes are both ETag-guarded: never by a check followed by a delete.
"""

from __future__ import annotations

from typing import Any

from shared.upgrade_requests.record import ACTIVE_STATES, CALLBACK_PENDING, FINAL_STATES, UpgradeRequestRecord
from shared.upgrade_requests.store.entities import (
    ACTIVE,
    FINAL,
    Stored,
    callback_entry,
    from_entity,
    handle,
    list_entry,
    make_handle,
    reopen_marker,
    revision_of,
    to_entity,
)
from shared.upgrade_requests.store.layout import (
    ACTIVE_RANGE_FILTER,
    CALLBACKS_PARTITION,
    REOPEN_PREFIX,
    active_pk,
    final_pk,
    list_key,
    lock_pk,
    lock_row,
)
from shared.upgrade_requests.store.table import TableOps, WriteConflict, log

MAX_COPY_ROUNDS = 5


class Moves(TableOps):
    def create_with_lock(
        self, record: UpgradeRequestRecord, revision: int = 1, reopened: UpgradeRequestRecord | None = None
    ) -> Stored:
        """Insert the customer's active lock and the new record in one entity-group transaction
        (with a reopen, also its clean-up marker: see `reopen`).

        `WriteConflict("lock")` if the lock exists, `WriteConflict("record")` if the record does."""
        from azure.data.tables import TableTransactionError

        from shared.upgrade_requests.store.entities import pointer_entity
        from shared.upgrade_requests.store.table import storage_error

        pk = active_pk(record.request_id)
        lock = pointer_entity(pk, lock_row(record.customer_id, record.product_family), record.request_id, "")
        try:
            operations: list[Any] = [("create", lock), ("create", to_entity(record, pk, revision))]
            if reopened is not None:
                operations.append(("upsert", reopen_marker(reopened, revision)))
            results = self._table.submit_transaction(operations)
        except TableTransactionError as error:
            if error.status_code != 409:  # not "the entity already exists": storage failed
                raise storage_error(error) from None
            raise WriteConflict("record" if error.index == 1 else "lock") from None
        except Exception as error:
            raise storage_error(error) from None
        return Stored(record, make_handle(ACTIVE, revision, str(results[1]["etag"])))

    def _finalise(self, record: UpgradeRequestRecord, revision: int, etag: str) -> Stored:
        """Steps 0-1 of finalising (the record's own write), then the move."""
        if record.callback_state == CALLBACK_PENDING:
            self._upsert(callback_entry(record, revision))
        active_etag = self._update(to_entity(record, active_pk(record.request_id), revision), etag)
        moved = self._finish_move(record, revision, active_etag)
        log.info(
            "request.final request_id=%s state=%s last_error_type=%s partner_center_error_code=%s "
            "attempts=%s customer_id=%s",
            record.request_id,
            record.state,
            record.last_error_type or "none",
            (record.error_details or {}).get("code") or "none",
            record.attempts,
            record.customer_id,
        )
        return moved

    def _finish_move(self, record: UpgradeRequestRecord, revision: int, active_etag: str) -> Stored:
        """Steps 2-4 of finalising a record whose final state is in its active copy at
        `active_etag`: the final copy (over an older revision only), its list entry, then the active
        copy and the customer's lock (if it is this request's) in one guarded transaction.

        `WriteConflict` when a newer revision of the record exists: its writer finishes the move."""
        from azure.core import MatchConditions

        final_etag = self._write_final_copy(record, revision)
        entry_etag = self._upsert(list_entry(record, revision))
        pk, row = active_pk(record.request_id), lock_row(record.customer_id, record.product_family)
        guarded = {"etag": active_etag, "match_condition": MatchConditions.IfNotModified}
        record_delete = ("delete", {"PartitionKey": pk, "RowKey": record.request_id}, guarded)
        lock = self._pointer(lock_pk(record.customer_id), row)
        ours = lock is not None and lock.request_id == record.request_id and lock_pk(record.customer_id) == pk
        if ours and lock is not None:
            lock_guard = {"etag": lock.etag, "match_condition": MatchConditions.IfNotModified}
            if self._transaction([("delete", {"PartitionKey": pk, "RowKey": row}, lock_guard), record_delete]):
                return Stored(record, make_handle(FINAL, revision, final_etag))
            # The active copy changed since our write (another writer moves it now), or the lock
            # was deleted as stale by an intake: in that case only, the copy goes on its own.
            lock = self._pointer(lock_pk(record.customer_id), row)
            if lock is not None and lock.request_id == record.request_id:
                self._drop_entry_if_reopened(record, entry_etag)
                return Stored(record, make_handle(FINAL, revision, final_etag))
        if not self._delete(pk, record.request_id, active_etag):  # guarded: a newer copy stays
            self._drop_entry_if_reopened(record, entry_etag)
        return Stored(record, make_handle(FINAL, revision, final_etag))

    def _drop_entry_if_reopened(self, record: UpgradeRequestRecord, entry_etag: str) -> None:
        """A move that lost its race wrote a list entry; if the record is active again (reopened
        meanwhile), that entry is stale: it goes unless someone rewrote it since."""
        current = self._get(active_pk(record.request_id), record.request_id)
        if current is not None and from_entity(current).state in ACTIVE_STATES:
            self._delete(*list_key(record), entry_etag)

    def withdraw(self, stored: Stored) -> bool:
        """Delete a record its intake just wrote, with its lock, if neither changed since (one guarded
        transaction). False: someone already works on it; it stands."""
        from azure.core import MatchConditions

        record = stored.record
        _, _, etag = handle(stored.etag)
        pk, row = active_pk(record.request_id), lock_row(record.customer_id, record.product_family)
        lock = self._pointer(lock_pk(record.customer_id), row)
        if lock is None or lock.request_id != record.request_id:
            return False
        guard = MatchConditions.IfNotModified
        return self._transaction(
            [
                ("delete", {"PartitionKey": pk, "RowKey": row}, {"etag": lock.etag, "match_condition": guard}),
                ("delete", {"PartitionKey": pk, "RowKey": record.request_id}, {"etag": etag, "match_condition": guard}),
            ]
        )

    def _write_final_copy(self, record: UpgradeRequestRecord, revision: int) -> str:
        """The final copy at `revision`, written only over an older one; its ETag."""
        entity = to_entity(record, final_pk(record.request_id), revision)
        for _ in range(MAX_COPY_ROUNDS):
            existing = self._get(entity["PartitionKey"], record.request_id)
            try:
                if existing is None:
                    return self._insert(entity)
                if revision_of(existing) < revision:
                    return self._update(entity, existing.metadata["etag"])
            except WriteConflict:
                continue  # written meanwhile: compare again
            if revision_of(existing) == revision:
                return str(existing.metadata["etag"])  # the same write, by a repair or an earlier try
            raise WriteConflict(record.request_id)  # a newer revision exists: not ours to write
        raise WriteConflict(record.request_id)

    def reopen(self, stored: Stored, record: UpgradeRequestRecord) -> Stored:
        """Make a final record active again (an operator's retry): claim the final copy, then lock +
        record in one transaction, then the claimed copy and its list entry go. `WriteConflict("lock")`:
        the customer has another active request; `WriteConflict("record")`: the copy changed since
        it was read (someone else reopened, cancelled or finished it first)."""
        where, revision, etag = handle(stored.etag)
        if where != FINAL or record.is_final:
            raise WriteConflict(record.request_id)
        # The decision was made on this final copy: claim it (ETag-guarded, next revision) so that
        # a retry decided on a copy that has since changed is a conflict, never undoing a newer state.
        claimed = to_entity(stored.record, final_pk(record.request_id), revision + 1)
        try:
            claimed_etag = self._update(claimed, etag)
        except WriteConflict:
            raise WriteConflict("record") from None
        reopened = self.create_with_lock(record, revision + 2, reopened=stored.record)
        self._drop_stale_final(stored.record, revision + 2, claimed_etag)
        self._delete(active_pk(record.request_id), REOPEN_PREFIX + record.request_id)
        return reopened

    def _drop_stale_final(self, final: UpgradeRequestRecord, active_revision: int, final_etag: str) -> None:
        """The final copy and list entry a reopen left, each only while older than the active record."""
        pk, row = list_key(final)
        entry = self._get(pk, row)
        if entry is not None and revision_of(entry) < active_revision:
            self._delete(pk, row, entry.metadata["etag"])
        self._delete(final_pk(final.request_id), final.request_id, final_etag)

    def repair(self, limit: int = 200) -> int:
        """Finish what a crash interrupted, at most `limit` entities a run: final records still in
        `a-` (moved now) and reopens whose clean-up marker remains (an older final copy or list
        entry may be left). Both are rare: the query returns only them. Returns how many."""
        final = " or ".join(f"State eq '{state}'" for state in sorted(FINAL_STATES))
        markers = f"RowKey ge '{REOPEN_PREFIX}' and RowKey lt 'reopen}}'"
        query = f"{ACTIVE_RANGE_FILTER} and (({final}) or ({markers}))"
        repaired = 0
        for examined, entity in enumerate(self._query(query, {}, page_size=limit), start=1):
            if entity["RowKey"].startswith(REOPEN_PREFIX):
                self._finish_reopen(entity)
                repaired += 1
            else:
                record, revision = from_entity(entity), revision_of(entity)
                try:
                    self._finish_move(record, revision, entity.metadata["etag"])
                    repaired += 1
                except WriteConflict:
                    pass  # a newer revision was written since we read: its writer moves it
            if examined >= limit:
                break
        if repaired:
            log.warning("store.repaired count=%s", repaired)
        return repaired

    def _finish_reopen(self, marker: Any) -> None:
        """A reopen's clean-up after a crash: the claimed final copy and its list entry, each only
        while older than the reopened record; then the marker."""
        request_id, revision = marker["RequestId"], revision_of(marker)
        stale = self._get(final_pk(request_id), request_id)
        if stale is not None and revision_of(stale) < revision:
            self._drop_stale_final(from_entity(stale), revision, stale.metadata["etag"])
        else:  # the final copy is newer (finished again): only a stale list entry may remain
            pk, row = marker["ListPartition"], marker["ListRow"]
            entry = self._get(pk, row)
            if entry is not None and revision_of(entry) < revision:
                self._delete(pk, row, entry.metadata["etag"])
        self._delete(marker["PartitionKey"], marker["RowKey"], marker.metadata["etag"])

    def _replace_final(self, record: UpgradeRequestRecord, revision: int, etag: str) -> Stored:
        """A final record changed where it is final (its callback): the copy, and the `cb` entry."""
        if not record.is_final:
            raise WriteConflict(record.request_id)  # a final record is reopened with `reopen`
        if record.callback_state == CALLBACK_PENDING:
            self._upsert(callback_entry(record, revision))
        new_etag = self._update(to_entity(record, final_pk(record.request_id), revision), etag)
        if record.callback_state != CALLBACK_PENDING:
            self._drop_callback_entry(record.request_id, revision)
        return Stored(record, make_handle(FINAL, revision, new_etag))

    def _drop_callback_entry(self, request_id: str, read_revision: int, entry: Any = None) -> None:
        """Drop the `cb` entry of a record read at `read_revision` with no callback pending, unless
        a later write (one this reader has not seen) made it pending again."""
        entry = entry if entry is not None else self._get(CALLBACKS_PARTITION, request_id)
        if entry is not None and revision_of(entry) <= read_revision:
            self._delete(CALLBACKS_PARTITION, request_id, entry.metadata["etag"])
