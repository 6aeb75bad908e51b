"""Request records: read one, write one back, and find the ones the timer must work on."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime

from shared.upgrade_requests.record import ACTIVE_STATES, CALLBACK_PENDING, UpgradeRequestRecord
from shared.upgrade_requests.store.entities import ACTIVE, FINAL, Stored, from_entity, handle, stored_from, to_entity
from shared.upgrade_requests.store.layout import (
    ACTIVE_RANGE_FILTER,
    CALLBACKS_PARTITION,
    FINAL_PREFIX,
    RECORD_ROWS_FILTER,
    active_pk,
    final_pk,
)
from shared.upgrade_requests.store.moves import Moves
from shared.upgrade_requests.store.table import WriteConflict


class Records(Moves):
    def get(self, request_id: str) -> Stored | None:
        """The record: its active copy if there is one (the truth while it exists), else its final one."""
        entity = self._get(active_pk(request_id), request_id)
        if entity is not None:
            return stored_from(entity, ACTIVE)
        entity = self._get(final_pk(request_id), request_id)
        if entity is not None:
            return stored_from(entity, FINAL)
        # Neither: absent, or reopened between the two reads (a reopen writes the active copy before
        # it deletes the final one, so a second look at the active copy finds it).
        entity = self._get(active_pk(request_id), request_id)
        return None if entity is None else stored_from(entity, ACTIVE)

    def _get_many(self, request_ids: Sequence[str]) -> list[Stored | None]:
        """Point reads in parallel (a list page or the callbacks due), in the given order."""
        return self._in_parallel([lambda request_id=request_id: self.get(request_id) for request_id in request_ids])

    def replace(self, record: UpgradeRequestRecord, etag: str) -> Stored:
        """Write the record if nobody changed it since `etag`; else `WriteConflict`.

        An active record that becomes final moves from `a-` to `f-` (see `moves`)."""
        try:
            where, revision, raw = handle(etag)
        except ValueError:
            raise WriteConflict(record.request_id) from None
        if where == FINAL:
            return self._replace_final(record, revision + 1, raw)
        if not record.is_final:
            new_etag = self._update(to_entity(record, active_pk(record.request_id), revision + 1), raw)
            return Stored(record, f"{ACTIVE} {revision + 1} {new_etag}")
        return self._finalise(record, revision + 1, raw)

    def due(self, now: datetime, limit: int) -> list[Stored]:
        """Active records whose next step is due and whose lease (if any) has expired."""
        states = " or ".join(f"State eq '{state}'" for state in sorted(ACTIVE_STATES))
        query = f"{ACTIVE_RANGE_FILTER} and ({states}) and NextAttemptAt le @now and LeaseUntil le @now"
        found: list[Stored] = []
        for entity in self._query(query, {"now": now}, page_size=min(1000, limit)):
            found.append(stored_from(entity, ACTIVE))
            if len(found) >= limit:
                break
        return found

    def due_callbacks(self, now: datetime, limit: int) -> list[Stored]:
        """Final records whose completion callback is still to be (re)tried now (from the `cb`
        partition, which holds only pending callbacks; a stale entry is dropped)."""
        query = f"PartitionKey eq '{CALLBACKS_PARTITION}' and NextAt le @now"
        entries = list(itertools.islice(self._query(query, {"now": now}, page_size=limit), limit))
        ids = [entry["RowKey"] for entry in entries]
        found: list[Stored] = []
        for entry, stored in zip(entries, self._get_many(ids), strict=True):
            if stored is None:
                self._delete(CALLBACKS_PARTITION, entry["RowKey"], entry.metadata["etag"])
                continue
            if stored.record.is_final and stored.record.callback_state != CALLBACK_PENDING:
                self._drop_callback_entry(entry["RowKey"], handle(stored.etag)[1], entry)
                continue
            record = stored.record
            if record.is_final and record.callback_next_at is not None and record.callback_next_at <= now:
                found.append(stored)
            if len(found) >= limit:
                break
        return found

    def all_records(self) -> Iterator[UpgradeRequestRecord]:
        """Every request record, streamed (operators' exports and tests), each id once: the active
        ones, then the final ones (a final copy left beside an active one is skipped)."""
        active_ids: set[str] = set()
        for entity in self._query(f"{ACTIVE_RANGE_FILTER} and {RECORD_ROWS_FILTER}", {}, page_size=1000):
            active_ids.add(entity["RowKey"])
            yield from_entity(entity)
        query = f"PartitionKey ge '{FINAL_PREFIX}' and PartitionKey lt 'f.'"
        for entity in self._query(query, {}, page_size=1000):
            if entity["RowKey"] not in active_ids:
                yield from_entity(entity)
