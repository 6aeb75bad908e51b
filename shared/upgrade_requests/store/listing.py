"""Lists and the summary: every query a bounded partition range (by state and creation day for
final requests, the `a-` range for active ones, one customer's two bucket partitions), pages
continued by a checksummed token bound to the filters that made it."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import InvalidRequest
from shared.upgrade_requests.record import ACTIVE_STATES, ALL_STATES, FINAL_STATES, PENDING, UpgradeRequestRecord
from shared.upgrade_requests.store.entities import from_entity
from shared.upgrade_requests.store.layout import (
    ACTIVE_PREFIX,
    ACTIVE_RANGE,
    ACTIVE_RANGE_FILTER,
    FINAL_PREFIX,
    LIST_PREFIX,
    RECORD_ROWS_FILTER,
    customer_bucket,
    iso_key,
)
from shared.upgrade_requests.store.records import Records

MAX_PAGE = 500
TOKEN_VERSION = 1
TOKEN_MAX_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class ListFilter:
    """What `list_page` selects: states (empty: all), one customer, a creation window [from, to)."""

    states: tuple[str, ...] = ()
    customer_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def fingerprint(self) -> str:
        text = json.dumps([sorted(self.states), self.customer_id, iso_key(self.created_from), iso_key(self.created_to)])
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
    beside_active: str | None = None  # a customer's final copies: skip ids active in this partition


class Listing(Records):
    def list_page(self, selection: ListFilter, top: int, token: str | None) -> Page:
        """Up to `top` records matching `selection`, and a token for the next page (None: last)."""
        sources = _sources(selection)
        index, after = _read_token(token, selection, sources) if token else (0, None)
        records: list[UpgradeRequestRecord] = []
        while index < len(sources) and len(records) < top:
            source = sources[index]
            want = top - len(records)
            entities, more = self._source_page(source, after, want)
            seen = {record.request_id for record in records}
            # (a request that changed state between two sources' reads is listed once, the first time)
            records.extend(record for record in self._resolve(source, entities) if record.request_id not in seen)
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
        """The records a page of one source names, each id once and as `get` returns it."""
        if source.beside_active is not None and entities:
            # A final copy beside an active one (an interrupted move or reopen): the active copy is
            # the record, listed by the customer's active source; this copy is not listed again.
            query = f"PartitionKey eq @pk and {RECORD_ROWS_FILTER}"
            active = {e["RowKey"] for e in self._query(query, {"pk": source.beside_active}, select=["RowKey"])}
            return [from_entity(entity) for entity in entities if entity["RowKey"] not in active]
        if source.state is None:
            return [from_entity(entity) for entity in entities]
        records: list[UpgradeRequestRecord] = []
        ids = [entity["RequestId"] for entity in entities]
        for entry, stored in zip(entities, self._get_many(ids), strict=True):
            if stored is None:  # retention deleted the record first: the entry goes too
                self._delete(entry["PartitionKey"], entry["RowKey"], entry.metadata["etag"])
            elif stored.record.state == source.state:
                records.append(stored.record)
            # else: reopened since: the record is listed under its state now, not under this one
        return records

    def summary(self, created_from: datetime, created_to: datetime | None = None) -> Summary:
        """Counts by state and by last error type: active requests from the `a-` range, final ones
        from the `l-` index created in [created_from, created_to); the oldest pending's creation."""
        by_state = dict.fromkeys(ALL_STATES, 0)
        by_error: dict[str, int] = {}
        by_code: dict[str, int] = {}
        oldest: datetime | None = None
        records = f"{ACTIVE_RANGE_FILTER} and {RECORD_ROWS_FILTER}"
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


def _final_source(state: str, created_from: datetime | None, created_to: datetime | None) -> _Source:
    prefix = f"{LIST_PREFIX}{state}-"
    pk_from = prefix + (f"{created_from.astimezone(UTC):%Y%m%d}" if created_from else "")
    pk_to = prefix + (f"{created_to.astimezone(UTC):%Y%m%d}~" if created_to else "~")
    condition, parameters = "RowKey ge @rowFrom", {"rowFrom": iso_key(created_from)}
    if created_to is not None:
        condition += " and RowKey lt @rowTo"
        parameters["rowTo"] = iso_key(created_to)
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
            _Source(
                f"{FINAL_PREFIX}{bucket}",
                f"{FINAL_PREFIX}{bucket}~",
                condition,
                parameters,
                None,
                ACTIVE_PREFIX + bucket,
            ),
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
