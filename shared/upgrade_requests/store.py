r"""Upgrade requests in Azure Table Storage: partitions laid out so that no query the app makes
grows with the table's history, and optimistic (ETag) concurrency on every write.

One table, these entities (`{b}` = a customer's bucket: 8 hex digits of sha256(customer id);
every request id starts with its customer's bucket, so a request id names its partitions):

| entity                      | PartitionKey            | RowKey                 | read by                 |
|-----------------------------|-------------------------|------------------------|-------------------------|
| active request record       | `a-{b}`                 | request id             | get, due (range `a-`)   |
| active-request lock         | `a-{b}`                 | `lock\|{family}\|{cust}` | intake (point read)     |
| final request record        | `f-{b}`                 | request id             | get, list by customer   |
| final-state list index      | `l-{state}-{yyyymmdd}`  | `{createdAt}\|{id}`     | list, summary, retention|
| callback-due index          | `cb`                    | request id             | due_callbacks           |
| idempotency key             | `idempotency`           | sha256(key)            | intake (point read)     |
| retention marker            | `meta`                  | `retention`            | timer (point read)      |

Why: the timer's `due()` is a bounded range query over the `a-` partitions, which hold only active
requests and their locks (a final record leaves them at once); `due_callbacks()` reads the `cb`
partition, which holds only pending callbacks; lists of final requests read `l-{state}-{day}`
ranges bounded by state and creation day; retention deletes from the oldest `l-` partitions. None
of them ever filters over every record written.

The inline path writes the lock and the new record in ONE entity-group transaction (same `a-{b}`
partition), then one replace after the Partner Center call: 2 round trips.

Crash consistency: the record is the source of truth, an index entry is a hint.
- Finalising (`replace` of an active record with a final one): 0. upsert the `cb` entry when a
  callback is pending; 1. replace the `a-` record (ETag-guarded; it is now final, so no longer
  due); 2. upsert the `f-` copy; 3. upsert the `l-` entry; 4. release the customer's lock;
  5. delete the `a-` copy. A crash after 1-4 leaves a final record in `a-`: `get` still returns
  it (it reads `a-` first), and `repair()` (each timer run; a bounded query that normally returns
  nothing) redoes 2-5. A `cb` entry whose record is still active is ignored until it is final.
- Reopening (`reopen`, an operator's retry): 1. insert lock + active record (with `reopenedFrom`)
  in one transaction; 2. delete the `l-`/`cb` entries and the `f-` copy. After a crash between,
  `get` returns the active record (`a-` first); `repair()` redoes 2 for active reopened records;
  lists drop `l-` entries whose record does not match them.
- Retention: delete the `f-` record, then its `cb` and `l-` entries; an `l-` entry whose record is
  gone is deleted when retention or a list meets it.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.deadlines import (
    IDENTITY_SECONDS,
    STORAGE_SECONDS,
    azure_client_options,
    azure_transport,
    expired,
    read_transport_environment_once,
)
from shared.errors import ConfigurationError, DeadlineExceeded, InvalidRequest, StorageUnavailable
from shared.upgrade_requests.record import (
    ACTIVE_STATES,
    ALL_STATES,
    CALLBACK_PENDING,
    FINAL_STATES,
    PENDING,
    RequestedBy,
    UpgradeRequestRecord,
)

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from shared.settings import StorageTarget

log = logging.getLogger(__name__)

KEYS_PARTITION = "idempotency"
CALLBACKS_PARTITION = "cb"
META_PARTITION = "meta"
RETENTION_ROW = "retention"
ACTIVE_PREFIX = "a-"
FINAL_PREFIX = "f-"
LIST_PREFIX = "l-"
LOCK_PREFIX = "lock|"
ACTIVE_RANGE = ("a-", "a.")  # every `a-{bucket}` partition, and nothing else ('.' follows '-')
_JSON_FIELDS = {"line_items", "error_details"}
_ACTIVE_ETAG = "a "
_FINAL_ETAG = "f "
MAX_PAGE = 500
TOKEN_VERSION = 1
TOKEN_MAX_AGE = timedelta(hours=24)


class WriteConflict(Exception):
    """The entity exists (insert) or changed since it was read (conditional update)."""


@dataclass(frozen=True)
class Stored:
    """A record with the ETag it was read or written with (which also says where it is stored)."""

    record: UpgradeRequestRecord
    etag: str


@dataclass(frozen=True)
class Pointer:
    """An idempotency key or active lock: which request it points at, and its ETag."""

    request_id: str
    fingerprint: str
    etag: str
    written_at: datetime


@dataclass(frozen=True)
class ListFilter:
    """What `list_page` selects: states (empty: all), one customer, a creation window [from, to)."""

    states: tuple[str, ...] = ()
    customer_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def fingerprint(self) -> str:
        text = json.dumps(
            [sorted(self.states), self.customer_id, _iso_key(self.created_from), _iso_key(self.created_to)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Page:
    records: list[UpgradeRequestRecord]
    continuation_token: str | None


@dataclass(frozen=True)
class Summary:
    by_state: dict[str, int]
    by_error: dict[str, int]
    oldest_pending_created_at: datetime | None
    by_partner_center_error: dict[str, int]


@dataclass(frozen=True)
class _Source:
    """One query of a list: a partition range (or point) and a server-side filter."""

    pk_from: str
    pk_to: str  # exclusive
    condition: str
    parameters: dict[str, Any]
    state: str | None  # an `l-` index source: its entries name records in this state


def customer_bucket(customer_id: str) -> str:
    """The 8 hex digits that place a customer's records and locks (and start its request ids)."""
    return hashlib.sha256(customer_id.strip().lower().encode()).hexdigest()[:8]


def new_request_id(customer_id: str) -> str:
    """A GUID whose first 8 hex digits are the customer's bucket; the rest is random (uuid4)."""
    import uuid

    return customer_bucket(customer_id) + str(uuid.uuid4())[8:]


class RequestStore:
    """CRUD for the entity kinds above; all storage errors become `StorageUnavailable` (or
    `DeadlineExceeded`) or `WriteConflict`."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    # --- request records ---

    def create(self, record: UpgradeRequestRecord) -> Stored:
        """Insert a new active record alone (its lock is written by `create_with_lock`)."""
        etag = self._insert(_to_entity(record, _active_pk(record.request_id)))
        return Stored(record, _ACTIVE_ETAG + etag)

    def create_with_lock(self, record: UpgradeRequestRecord) -> Stored:
        """Insert the customer's active lock and the new record in one entity-group transaction.

        `WriteConflict("lock")` if the lock exists, `WriteConflict("record")` if the record does."""
        from azure.data.tables import TableTransactionError

        pk = _active_pk(record.request_id)
        lock = _pointer_entity(pk, _lock_row(record.customer_id, record.product_family), record.request_id, "")
        try:
            results = self._table.submit_transaction([("create", lock), ("create", _to_entity(record, pk))])
        except TableTransactionError as error:
            if error.status_code != 409:  # not "the entity already exists": storage failed
                raise _storage_error(error) from None
            raise WriteConflict("record" if error.index == 1 else "lock") from None
        except Exception as error:
            raise _storage_error(error) from None
        return Stored(record, _ACTIVE_ETAG + str(results[1]["etag"]))

    def get(self, request_id: str) -> Stored | None:
        """The record: its active copy if there is one (the truth while it exists), else its final one."""
        entity = self._get(_active_pk(request_id), request_id)
        if entity is not None:
            return Stored(_from_entity(entity), _ACTIVE_ETAG + entity.metadata["etag"])
        entity = self._get(_final_pk(request_id), request_id)
        return None if entity is None else Stored(_from_entity(entity), _FINAL_ETAG + entity.metadata["etag"])

    def replace(self, record: UpgradeRequestRecord, etag: str) -> Stored:
        """Write the record if nobody changed it since `etag`; else `WriteConflict`.

        An active record that becomes final moves from `a-` to `f-` (see the module docstring)."""
        where, raw = etag[:2], etag[2:]
        if where == _FINAL_ETAG:
            if not record.is_final:
                raise WriteConflict(record.request_id)  # a final record is reopened with `reopen`
            if record.callback_state == CALLBACK_PENDING:
                self._upsert(_callback_entry(record.request_id))
            new_etag = self._update(_to_entity(record, _final_pk(record.request_id)), raw)
            if record.callback_state != CALLBACK_PENDING:
                self._delete(CALLBACKS_PARTITION, record.request_id)
            return Stored(record, _FINAL_ETAG + new_etag)
        if not record.is_final:
            return Stored(record, _ACTIVE_ETAG + self._update(_to_entity(record, _active_pk(record.request_id)), raw))
        if record.callback_state == CALLBACK_PENDING:
            self._upsert(_callback_entry(record.request_id))
        active_etag = self._update(_to_entity(record, _active_pk(record.request_id)), raw)
        moved = self._finish_move(record, active_etag)
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

    def _finish_move(self, record: UpgradeRequestRecord, active_etag: str) -> Stored:
        """Steps 2-5 of finalising: the `f-` copy, its `l-` entry, the customer's lock (if still
        this request's), then the `a-` copy goes (last: until then `repair()` can redo them)."""
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError

        final_etag = self._upsert(_to_entity(record, _final_pk(record.request_id)))
        self._upsert(_list_entry(record))
        # Steps 4 and 5 in one transaction (the lock and the record share the `a-` partition).
        pk, lock_row = _active_pk(record.request_id), _lock_row(record.customer_id, record.product_family)
        lock = self._pointer(_lock_pk(record.customer_id), lock_row)
        guarded = {"etag": active_etag, "match_condition": MatchConditions.IfNotModified}
        operations: list[Any] = [("delete", {"PartitionKey": pk, "RowKey": record.request_id}, guarded)]
        if lock is not None and lock.request_id == record.request_id and _lock_pk(record.customer_id) == pk:
            lock_guard = {"etag": lock.etag, "match_condition": MatchConditions.IfNotModified}
            operations.insert(0, ("delete", {"PartitionKey": pk, "RowKey": lock_row}, lock_guard))
        try:
            self._table.submit_transaction(operations)
        except TableTransactionError:  # one of them changed or went: do each on its own
            self._delete(pk, record.request_id, active_etag)
            # The lock goes only while no active copy exists: a request reopened since (a retry)
            # has the same id and a new active copy, and its lock must stay.
            if self._get(pk, record.request_id) is None:
                self.release_active(record.customer_id, record.product_family, record.request_id)
            else:  # reopened since: the final copy and index entry written above are stale
                self._delete(_final_pk(record.request_id), record.request_id, final_etag)
                self._delete(*_list_key(record))
        except Exception as error:
            raise _storage_error(error) from None
        return Stored(record, _FINAL_ETAG + final_etag)

    def reopen(self, stored: Stored, record: UpgradeRequestRecord) -> Stored:
        """Make a final record active again (an operator's retry): lock + record in one transaction,
        then the final copy and its index entries go. `WriteConflict("lock")`: the customer has
        another active request; `WriteConflict("record")`: someone else reopened it first."""
        if not stored.etag.startswith(_FINAL_ETAG) or record.is_final:
            raise WriteConflict(record.request_id)
        # The decision was made on this final copy: claim it (ETag-guarded) before reopening, so a
        # retry decided on a copy that has since changed (cancelled, retried, finished again) is a
        # `WriteConflict("record")` and the caller decides again, never undoing a newer state.
        final = _to_entity(stored.record, _final_pk(record.request_id))
        claimed_etag = self._update(final, stored.etag[len(_FINAL_ETAG) :])
        reopened = self.create_with_lock(record)
        self._cleanup_reopened(stored.record, claimed_etag)
        return reopened

    def _cleanup_reopened(self, final: UpgradeRequestRecord, final_etag: str | None) -> None:
        pk, row = _list_key(final)
        self._delete(pk, row)
        self._delete(CALLBACKS_PARTITION, final.request_id)
        self._delete(_final_pk(final.request_id), final.request_id, final_etag)

    def due(self, now: datetime, limit: int) -> list[Stored]:
        """Active records whose next step is due and whose lease (if any) has expired."""
        states = " or ".join(f"State eq '{state}'" for state in sorted(ACTIVE_STATES))
        query = f"{_ACTIVE_RANGE_FILTER} and ({states}) and NextAttemptAt le @now and LeaseUntil le @now"
        found: list[Stored] = []
        for entity in self._query(query, {"now": now}, page_size=min(1000, limit)):
            found.append(Stored(_from_entity(entity), _ACTIVE_ETAG + entity.metadata["etag"]))
            if len(found) >= limit:
                break
        return found

    def due_callbacks(self, now: datetime, limit: int) -> list[Stored]:
        """Final records whose completion callback is still to be (re)tried now (from the `cb`
        partition, which holds only pending callbacks; a stale entry is dropped)."""
        ids = [e["RowKey"] for e in self._query(f"PartitionKey eq '{CALLBACKS_PARTITION}'", {}, page_size=1000)]
        found: list[Stored] = []
        for request_id, stored in zip(ids, self._get_many(ids), strict=True):
            if stored is None or (stored.record.is_final and stored.record.callback_state != CALLBACK_PENDING):
                self._delete(CALLBACKS_PARTITION, request_id)
                continue
            record = stored.record
            if record.is_final and record.callback_next_at is not None and record.callback_next_at <= now:
                found.append(stored)
            if len(found) >= limit:
                break
        return found

    def repair(self, limit: int = 200) -> int:
        """Finish what a crash interrupted: final records still in `a-` (moved now) and reopened
        active records whose old final copy or index entries may remain. Returns how many."""
        final = " or ".join(f"State eq '{state}'" for state in sorted(FINAL_STATES))
        active = " or ".join(f"State eq '{state}'" for state in sorted(ACTIVE_STATES))
        query = f"{_ACTIVE_RANGE_FILTER} and (({final}) or (ReopenedFrom gt '' and ({active})))"
        repaired = 0
        for entity in self._query(query, {}, page_size=limit):
            record = _from_entity(entity)
            if record.is_final:
                self._finish_move(record, entity.metadata["etag"])
                repaired += 1
            elif record.reopened_from in FINAL_STATES:
                stale = self._get(_final_pk(record.request_id), record.request_id)
                if stale is not None:
                    self._cleanup_reopened(_from_entity(stale), stale.metadata["etag"])
                    repaired += 1
        if repaired:
            log.warning("store.repaired count=%s", repaired)
        return repaired

    def purge_expired(self, cutoff: datetime, batch: int, *, at_most_every: timedelta | None = None) -> int:
        """Delete up to `batch` final records created before `cutoff`, with their index entries.

        With `at_most_every`, a marker entity (one point read) skips the run if the last one that
        found nothing more to delete was more recent than that (the timer: once an hour)."""
        now = datetime.now(UTC)
        if at_most_every is not None:
            marker = self._get(META_PARTITION, RETENTION_ROW)
            last = marker.get("LastRunAt") if marker is not None else None
            if isinstance(last, datetime) and now - last < at_most_every:
                return 0
        deleted = self._purge(cutoff, batch)
        if at_most_every is not None and deleted < batch:  # all caught up: rest until next time
            self._upsert({"PartitionKey": META_PARTITION, "RowKey": RETENTION_ROW, "LastRunAt": now})
        return deleted

    def _purge(self, cutoff: datetime, batch: int) -> int:
        deleted = 0
        day = cutoff.strftime("%Y%m%d")
        for state in sorted(FINAL_STATES):
            prefix = f"{LIST_PREFIX}{state}-"
            query = f"PartitionKey ge '{prefix}' and PartitionKey lt '{prefix}{day}'"
            keys = ["PartitionKey", "RowKey", "RequestId"]
            for entry in self._query(query, {}, page_size=batch - deleted, select=keys):
                request_id = entry["RequestId"]
                final = self._get(_final_pk(request_id), request_id)
                if final is not None and _from_entity(final).state == state:
                    self._delete(_final_pk(request_id), request_id, final.metadata["etag"])
                    self._delete(CALLBACKS_PARTITION, request_id)
                self._delete(entry["PartitionKey"], entry["RowKey"])
                deleted += 1
                if deleted >= batch:
                    break
            if deleted >= batch:
                break
        if deleted:
            log.info("store.retention_deleted count=%s cutoff=%s", deleted, cutoff.isoformat())
        return deleted

    def all_records(self) -> Iterator[UpgradeRequestRecord]:
        """Every request record, streamed (operators' exports and tests): the active ones, then
        the final ones (a final copy left behind by an interrupted reopen is skipped)."""
        active_ids: set[str] = set()
        for entity in self._query(f"{_ACTIVE_RANGE_FILTER} and RowKey lt 'g'", {}, page_size=1000):
            active_ids.add(entity["RowKey"])
            yield _from_entity(entity)
        query = f"PartitionKey ge '{FINAL_PREFIX}' and PartitionKey lt 'f.'"
        for entity in self._query(query, {}, page_size=1000):
            if entity["RowKey"] not in active_ids:
                yield _from_entity(entity)

    # --- lists and the summary ---

    def list_page(self, selection: ListFilter, top: int, token: str | None) -> Page:
        """Up to `top` records matching `selection`, and a token for the next page (None: last)."""
        sources = _sources(selection)
        index, after = _read_token(token, selection, sources) if token else (0, None)
        records: list[UpgradeRequestRecord] = []
        while index < len(sources) and len(records) < top:
            source = sources[index]
            want = top - len(records)
            entities, more = self._source_page(source, after, want)
            records.extend(self._resolve(source, entities))
            if more and entities:
                last = entities[-1]
                return Page(records, _make_token(selection, index, (last["PartitionKey"], last["RowKey"])))
            index, after = index + 1, None
        return Page(records, _make_token(selection, index, None) if index < len(sources) else None)

    def _source_page(self, source: _Source, after: tuple[str, str] | None, want: int) -> tuple[list[Any], bool]:
        condition = f"PartitionKey ge @pkFrom and PartitionKey lt @pkTo and {source.condition}"
        parameters = {"pkFrom": source.pk_from, "pkTo": source.pk_to, **source.parameters}
        if after is not None:
            # (the SDK substitutes `@name` only as a whole space-separated word: hence "@afterRk )")
            condition += " and (PartitionKey gt @afterPk or (PartitionKey eq @afterPk and RowKey gt @afterRk ) )"
            parameters |= {"afterPk": after[0], "afterRk": after[1]}
        taken: list[Any] = []
        for entity in self._query(condition, parameters, page_size=want + 1):
            if len(taken) == want:
                return taken, True
            taken.append(entity)
        return taken, False

    def _resolve(self, source: _Source, entities: list[Any]) -> list[UpgradeRequestRecord]:
        if source.state is None:
            return [_from_entity(entity) for entity in entities]
        records: list[UpgradeRequestRecord] = []
        ids = [entity["RequestId"] for entity in entities]
        for entry, stored in zip(entities, self._get_many(ids), strict=True):
            if stored is None:  # retention deleted the record first: the entry goes too
                self._delete(entry["PartitionKey"], entry["RowKey"])
            elif stored.record.state == source.state:
                records.append(stored.record)
            # else: reopened since; its entry is removed by `repair()`; ignored here
        return records

    def summary(self, created_from: datetime, created_to: datetime | None = None) -> Summary:
        """Counts by state and by last error type: active requests from the `a-` range, final ones
        from the `l-` index created in [created_from, created_to); the oldest pending's creation."""
        by_state = dict.fromkeys(ALL_STATES, 0)
        by_error: dict[str, int] = {}
        by_code: dict[str, int] = {}
        oldest: datetime | None = None
        records = f"{_ACTIVE_RANGE_FILTER} and RowKey lt 'g'"
        for entity in self._query(records, {}, page_size=1000, select=["State", "CreatedAt", "LastErrorType"]):
            state = entity.get("State")
            if state not in ACTIVE_STATES:
                continue  # a final record whose move a crash interrupted: counted below once moved
            by_state[state] += 1
            if entity.get("LastErrorType"):
                by_error[entity["LastErrorType"]] = by_error.get(entity["LastErrorType"], 0) + 1
            created = entity.get("CreatedAt")
            if state == PENDING and isinstance(created, datetime) and (oldest is None or created < oldest):
                oldest = datetime.fromtimestamp(created.timestamp(), UTC)
        for state in sorted(FINAL_STATES):
            source = _final_source(state, created_from, created_to)
            condition = f"PartitionKey ge @pkFrom and PartitionKey lt @pkTo and {source.condition}"
            parameters = {"pkFrom": source.pk_from, "pkTo": source.pk_to, **source.parameters}
            select = ["LastErrorType", "PartnerCenterErrorCode"]
            for entry in self._query(condition, parameters, page_size=1000, select=select):
                by_state[state] += 1
                if entry.get("LastErrorType"):
                    by_error[entry["LastErrorType"]] = by_error.get(entry["LastErrorType"], 0) + 1
                if entry.get("PartnerCenterErrorCode"):
                    code = entry["PartnerCenterErrorCode"]
                    by_code[code] = by_code.get(code, 0) + 1
        return Summary(by_state, by_error, oldest, by_code)

    # --- idempotency keys and active locks ---

    def key(self, key_hash: str) -> Pointer | None:
        return self._pointer(KEYS_PARTITION, key_hash)

    def create_key(self, key_hash: str, request_id: str, fingerprint: str) -> None:
        self._insert(_pointer_entity(KEYS_PARTITION, key_hash, request_id, fingerprint))

    def repoint_key(self, key_hash: str, request_id: str, pointer: Pointer) -> None:
        self._replace_pointer(_pointer_entity(KEYS_PARTITION, key_hash, request_id, pointer.fingerprint), pointer.etag)

    def active(self, customer_id: str, product_family: str) -> Pointer | None:
        return self._pointer(_lock_pk(customer_id), _lock_row(customer_id, product_family))

    def create_active(self, customer_id: str, product_family: str, request_id: str) -> None:
        row = _lock_row(customer_id, product_family)
        self._insert(_pointer_entity(_lock_pk(customer_id), row, request_id, ""))

    def release_active(self, customer_id: str, product_family: str, request_id: str) -> None:
        """Delete the lock if (and only if) it still belongs to `request_id`."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        pk, row = _lock_pk(customer_id), _lock_row(customer_id, product_family)
        pointer = self._pointer(pk, row)
        if pointer is None or pointer.request_id != request_id:
            return
        try:
            self._table.delete_entity(pk, row, etag=pointer.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return
        except Exception as error:
            raise _storage_error(error) from None

    def delete_stale_active(self, customer_id: str, product_family: str, pointer: Pointer) -> None:
        """Remove a lock that points at a request that is final or missing (ETag-guarded)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self._table.delete_entity(
                _lock_pk(customer_id),
                _lock_row(customer_id, product_family),
                etag=pointer.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise WriteConflict("active lock changed") from None
        except Exception as error:
            raise _storage_error(error) from None

    # --- primitives ---

    def _insert(self, entity: dict[str, Any]) -> str:
        from azure.core.exceptions import ResourceExistsError

        try:
            return str(self._table.create_entity(entity)["etag"])
        except ResourceExistsError:
            raise WriteConflict(entity["PartitionKey"]) from None
        except Exception as error:
            raise _storage_error(error) from None

    def _update(self, entity: dict[str, Any], etag: str) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            metadata = self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise WriteConflict(entity["RowKey"]) from None
        except Exception as error:
            raise _storage_error(error) from None
        return str(metadata["etag"])

    def _upsert(self, entity: dict[str, Any]) -> str:
        from azure.data.tables import UpdateMode

        try:
            return str(self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)["etag"])
        except Exception as error:
            raise _storage_error(error) from None

    def _delete(self, partition: str, row: str, etag: str | None = None) -> None:
        """Delete if present (and unchanged since `etag`, when given); absent or changed is fine."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            if etag is None:
                self._table.delete_entity(partition, row)
            else:
                self._table.delete_entity(partition, row, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return
        except Exception as error:
            raise _storage_error(error) from None

    def _get(self, partition: str, row: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        except Exception as error:
            raise _storage_error(error) from None

    def _get_many(self, request_ids: Sequence[str]) -> list[Stored | None]:
        """Point reads in parallel (a list page or the callbacks due), in the given order."""
        if len(request_ids) <= 1:
            return [self.get(request_id) for request_id in request_ids]
        with ThreadPoolExecutor(max_workers=min(8, len(request_ids)), thread_name_prefix="store-get") as pool:
            # Each read runs in a copy of this context, so the answer's deadline holds on the pool too.
            jobs = [pool.submit(contextvars.copy_context().run, self.get, request_id) for request_id in request_ids]
            return [job.result() for job in jobs]

    def _query(
        self, query: str, parameters: Mapping[str, Any], *, page_size: int = 200, select: Iterable[str] | None = None
    ) -> Iterator[Any]:
        try:
            yield from self._table.query_entities(
                query,
                parameters=dict(parameters),
                results_per_page=max(1, min(1000, page_size)),
                select=list(select) if select else None,
            )
        except Exception as error:
            raise _storage_error(error) from None

    def _pointer(self, partition: str, row: str) -> Pointer | None:
        entity = self._get(partition, row)
        if entity is None:
            return None
        written_at = entity.metadata.get("timestamp") or datetime.now(UTC)
        return Pointer(entity["RequestId"], entity.get("Fingerprint", ""), entity.metadata["etag"], written_at)

    def _replace_pointer(self, entity: dict[str, Any], etag: str) -> None:
        self._update(entity, etag)


_ACTIVE_RANGE_FILTER = f"PartitionKey ge '{ACTIVE_RANGE[0]}' and PartitionKey lt '{ACTIVE_RANGE[1]}'"


def _active_pk(request_id: str) -> str:
    return ACTIVE_PREFIX + request_id[:8].lower()


def _final_pk(request_id: str) -> str:
    return FINAL_PREFIX + request_id[:8].lower()


def _lock_pk(customer_id: str) -> str:
    return ACTIVE_PREFIX + customer_bucket(customer_id)


def _lock_row(customer_id: str, product_family: str) -> str:
    return f"{LOCK_PREFIX}{product_family.lower()}|{customer_id.strip().lower()}"


def _iso_key(value: datetime | None) -> str:
    """A fixed-width UTC timestamp that sorts as text in time order."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _list_key(record: UpgradeRequestRecord) -> tuple[str, str]:
    created = record.created_at.astimezone(UTC)
    return f"{LIST_PREFIX}{record.state}-{created:%Y%m%d}", f"{_iso_key(created)}|{record.request_id}"


def _list_entry(record: UpgradeRequestRecord) -> dict[str, Any]:
    pk, row = _list_key(record)
    entry = {"PartitionKey": pk, "RowKey": row, "RequestId": record.request_id, "CustomerId": record.customer_id}
    if record.last_error_type:
        entry["LastErrorType"] = record.last_error_type
    code = (record.error_details or {}).get("code")
    if code:
        entry["PartnerCenterErrorCode"] = str(code)
    return entry


def _callback_entry(request_id: str) -> dict[str, Any]:
    return {"PartitionKey": CALLBACKS_PARTITION, "RowKey": request_id, "RequestId": request_id}


def _final_source(state: str, created_from: datetime | None, created_to: datetime | None) -> _Source:
    prefix = f"{LIST_PREFIX}{state}-"
    pk_from = prefix + (f"{created_from.astimezone(UTC):%Y%m%d}" if created_from else "")
    pk_to = prefix + (f"{created_to.astimezone(UTC):%Y%m%d}~" if created_to else "~")
    condition, parameters = "RowKey ge @rowFrom", {"rowFrom": _iso_key(created_from)}
    if created_to is not None:
        condition += " and RowKey lt @rowTo"
        parameters["rowTo"] = _iso_key(created_to)
    return _Source(pk_from, pk_to, condition, parameters, state)


def _sources(selection: ListFilter) -> list[_Source]:
    """The queries a list runs, in order: each a bounded partition range with its filter."""
    states = [state for state in ALL_STATES if not selection.states or state in selection.states]
    created: list[str] = []
    parameters: dict[str, Any] = {}
    if selection.created_from is not None:
        created.append("CreatedAt ge @createdFrom")
        parameters["createdFrom"] = selection.created_from
    if selection.created_to is not None:
        created.append("CreatedAt lt @createdTo")
        parameters["createdTo"] = selection.created_to
    if selection.customer_id is not None:
        bucket = customer_bucket(selection.customer_id)
        state_filter = " or ".join(f"State eq '{state}'" for state in states)
        condition = " and ".join(["CustomerId eq @customerId", f"({state_filter})", *created])
        parameters["customerId"] = selection.customer_id
        return [
            _Source(f"{ACTIVE_PREFIX}{bucket}", f"{ACTIVE_PREFIX}{bucket}~", condition, parameters, None),
            _Source(f"{FINAL_PREFIX}{bucket}", f"{FINAL_PREFIX}{bucket}~", condition, parameters, None),
        ]
    sources: list[_Source] = []
    for state in states:
        if state in ACTIVE_STATES:
            condition = " and ".join([f"State eq '{state}'", *created])
            sources.append(_Source(ACTIVE_RANGE[0], ACTIVE_RANGE[1], condition, parameters, None))
        else:
            sources.append(_final_source(state, selection.created_from, selection.created_to))
    return sources


def _make_token(selection: ListFilter, index: int, after: tuple[str, str] | None) -> str:
    body = {"v": TOKEN_VERSION, "q": selection.fingerprint(), "i": index, "a": list(after) if after else None}
    body["t"] = int(time.time())
    raw = json.dumps(body, separators=(",", ":")).encode()
    check = hashlib.sha256(b"continuation|" + raw).hexdigest()[:12]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + check


def _read_token(token: str, selection: ListFilter, sources: list[_Source]) -> tuple[int, tuple[str, str] | None]:
    """Where the previous page stopped; `InvalidRequest` (400) for an edited, stale or foreign token.
    The checksum catches edits, not a token built by someone who knows the format: such a token can
    only move within the listing its filters select (the caller's Read role is the boundary)."""
    bad = InvalidRequest(
        "continuationToken is not valid for this query (forged, expired or from other filters): start again without it",
        extensions={"parameter": "continuationToken"},
    )
    try:
        encoded, check = token.split(".", 1)
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        body = json.loads(raw)
    except (ValueError, TypeError):
        raise bad from None
    if hashlib.sha256(b"continuation|" + raw).hexdigest()[:12] != check or not isinstance(body, dict):
        raise bad
    index, after, issued = body.get("i"), body.get("a"), body.get("t")
    if body.get("v") != TOKEN_VERSION or body.get("q") != selection.fingerprint():
        raise bad
    if not isinstance(index, int) or not 0 <= index < len(sources) or not isinstance(issued, int):
        raise bad
    if time.time() - issued > TOKEN_MAX_AGE.total_seconds() or issued > time.time() + 300:
        raise bad
    if after is None:
        return index, None
    if not (isinstance(after, list) and len(after) == 2 and all(isinstance(v, str) for v in after)):
        raise bad
    source = sources[index]
    if not source.pk_from <= after[0] < source.pk_to:
        raise bad
    return index, (after[0], after[1])


def _storage_error(error: Exception) -> StorageUnavailable | DeadlineExceeded:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(error, DeadlineExceeded):
        return error
    if expired(final_write=True):
        log.error("storage.error reason=deadline")
        return DeadlineExceeded("The request store did not answer within the deadline")
    if isinstance(error, ClientAuthenticationError):
        reason = "the app's identity could not authenticate to storage"
    elif isinstance(error, HttpResponseError) and error.status_code == 403:
        reason = "the app's identity lacks 'Storage Table Data Contributor'"
    elif isinstance(error, ServiceRequestError):
        reason = "storage is unreachable"
    else:
        reason = type(error).__name__
    log.error("storage.error reason=%s", reason)
    return StorageUnavailable(f"The request store is unavailable: {reason}", retry_after=30)


def _pointer_entity(partition: str, row: str, request_id: str, fingerprint: str) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": row, "RequestId": request_id, "Fingerprint": fingerprint}


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


_COLUMNS = {f.name: _column(f.name) for f in fields(UpgradeRequestRecord)}


def _to_entity(record: UpgradeRequestRecord, partition: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": record.request_id}
    for name, column in _COLUMNS.items():
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            value = json.dumps(value) if value else None
        elif isinstance(value, RequestedBy):
            value = json.dumps(value.public_view())
        if value is not None:
            entity[column] = value
    return entity


def _from_entity(entity: Mapping[str, Any]) -> UpgradeRequestRecord:
    values: dict[str, Any] = {}
    for name, column in _COLUMNS.items():
        if column not in entity:
            continue
        value = entity[column]
        if name in _JSON_FIELDS:
            value = json.loads(value) if value else None
        elif name == "requested_by":
            value = RequestedBy.from_public_view(json.loads(value)) if value else None
        elif isinstance(value, datetime):
            value = datetime.fromtimestamp(value.timestamp(), UTC)
        values[name] = value
    values["line_items"] = values.get("line_items") or []
    return UpgradeRequestRecord(**values)


def build_request_store(storage: StorageTarget, table_name: str, max_concurrency: int = 10) -> RequestStore:
    """Connect as the Functions host does (connection string, or identity-based endpoint) and
    create the table if it is missing. The connection pool holds `max_concurrency` connections:
    the SDK's default of 10 made a timer run at higher concurrency discard and re-open (TLS)
    connections on every request (measured by the benchmark)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableServiceClient

    # Every storage call is held to `STORAGE_SECONDS` and the answer's deadline (`shared.deadlines`);
    # storage writes may use the time kept back for an answer's final writes.
    transport = azure_transport(STORAGE_SECONDS, final_write=True, pool_maxsize=max(10, max_concurrency))
    options = azure_client_options(STORAGE_SECONDS)
    if storage.connection_string:
        try:
            service = TableServiceClient.from_connection_string(
                storage.connection_string, transport=transport, **options
            )
        except ValueError:
            raise ConfigurationError("AzureWebJobsStorage is not a valid storage connection string") from None
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(
            managed_identity_client_id=storage.client_id,
            transport=azure_transport(IDENTITY_SECONDS),
            **azure_client_options(IDENTITY_SECONDS),
        )
        service = TableServiceClient(
            endpoint=str(storage.table_endpoint), credential=credential, transport=transport, **options
        )
    read_transport_environment_once(transport, service.url)  # one host: see shared.deadlines
    try:
        service.create_table(table_name)
    except ResourceExistsError:
        pass
    except Exception as error:
        raise _storage_error(error) from None
    return RequestStore(service.get_table_client(table_name))
