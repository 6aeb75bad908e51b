"""A record as a table entity and back, and the handle (`Stored`) a caller writes it back with.

`Stored.etag` is opaque to callers. It says where the copy was read (`a` active, `f` final), its
revision and the storage ETag: `replace` needs all three to write it back only if nobody changed
it since, in the right place, with the next revision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from shared.upgrade_requests.record import RequestedBy, UpgradeRequestRecord
from shared.upgrade_requests.store.layout import CALLBACKS_PARTITION, list_key

ACTIVE = "a"
FINAL = "f"
_JSON_FIELDS = {"line_items", "error_details"}


@dataclass(frozen=True)
class Stored:
    """A record with the handle it was read or written with."""

    record: UpgradeRequestRecord
    etag: str

    @property
    def is_active_copy(self) -> bool:
        return handle(self.etag)[0] == ACTIVE


@dataclass(frozen=True)
class Pointer:
    """An idempotency key or active lock: which request it points at, and its ETag."""

    request_id: str
    fingerprint: str
    etag: str
    written_at: datetime


def make_handle(where: str, revision: int, etag: str) -> str:
    return f"{where} {revision} {etag}"


def handle(value: str) -> tuple[str, int, str]:
    """(where, revision, storage ETag) of a `Stored.etag`; a malformed one is a conflict upstream."""
    where, revision, etag = value.split(" ", 2)
    return where, int(revision), etag


def stored_from(entity: Mapping[str, Any], where: str) -> Stored:
    return Stored(from_entity(entity), make_handle(where, revision_of(entity), entity.metadata["etag"]))  # type: ignore[attr-defined]


def revision_of(entity: Mapping[str, Any]) -> int:
    """The record's revision (0 for a copy written by layout 1, before revisions)."""
    value = entity.get("Revision")
    return int(value) if isinstance(value, int) else 0


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


_COLUMNS = {f.name: _column(f.name) for f in fields(UpgradeRequestRecord)}


def to_entity(record: UpgradeRequestRecord, partition: str, revision: int) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": record.request_id, "Revision": revision}
    for name, column in _COLUMNS.items():
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            value = json.dumps(value) if value else None
        elif isinstance(value, RequestedBy):
            value = json.dumps(value.public_view())
        if value is not None:
            entity[column] = value
    return entity


def from_entity(entity: Mapping[str, Any]) -> UpgradeRequestRecord:
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


def pointer_entity(partition: str, row: str, request_id: str, fingerprint: str) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": row, "RequestId": request_id, "Fingerprint": fingerprint}


def list_entry(record: UpgradeRequestRecord, revision: int) -> dict[str, Any]:
    pk, row = list_key(record)
    entry = {
        "PartitionKey": pk,
        "RowKey": row,
        "RequestId": record.request_id,
        "CustomerId": record.customer_id,
        "Revision": revision,
    }
    if record.idempotency_key_hash:  # so retention can delete the key even after the record went
        entry["KeyHash"] = record.idempotency_key_hash
    if record.last_error_type:
        entry["LastErrorType"] = record.last_error_type
    code = (record.error_details or {}).get("code")
    if code:
        entry["PartnerCenterErrorCode"] = str(code)
    return entry


def reopen_marker(final: UpgradeRequestRecord, active_revision: int) -> dict[str, Any]:
    """Written with a reopened record (same transaction), deleted when the final copy it replaced
    and that copy's list entry are gone: `repair()` finds only reopens whose clean-up a crash stopped."""
    from shared.upgrade_requests.store.layout import REOPEN_PREFIX, active_pk

    pk, row = list_key(final)
    return {
        "PartitionKey": active_pk(final.request_id),
        "RowKey": REOPEN_PREFIX + final.request_id,
        "RequestId": final.request_id,
        "Revision": active_revision,
        "ListPartition": pk,
        "ListRow": row,
    }


def callback_entry(record: UpgradeRequestRecord, revision: int) -> dict[str, Any]:
    """The `cb` entry of a record whose write at `revision` made its callback pending: an entry is
    dropped only by someone who read that revision or a later one (see `Moves._drop_callback_entry`).
    `NextAt` (when the callback is next due) lets the timer read only the entries due now."""
    entry: dict[str, Any] = {
        "PartitionKey": CALLBACKS_PARTITION,
        "RowKey": record.request_id,
        "RequestId": record.request_id,
        "Revision": revision,
    }
    if record.callback_next_at is not None:
        entry["NextAt"] = record.callback_next_at
    return entry
