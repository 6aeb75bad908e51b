"""Entities exactly as layout 1 of the store wrote them (before revisions, with every idempotency
key in one `idempotency` partition and no layout marker), and as layout 0 did: the tables an
upgrade of the app meets, for the layout check and `migrate` tests."""

from __future__ import annotations

import hashlib
from typing import Any

from shared.upgrade_requests.record import UpgradeRequestRecord
from shared.upgrade_requests.store.entities import list_entry, to_entity
from shared.upgrade_requests.store.layout import active_pk, final_pk, lock_pk, lock_row


def _v1(entity: dict[str, Any]) -> dict[str, Any]:
    entity.pop("Revision", None)
    return entity


def write_v1_request(table: Any, record: UpgradeRequestRecord, key: str | None = None) -> None:
    """What layout 1 left for a request: its record where its state puts it, its lock while active,
    its list entry when final, and its key."""
    if record.is_final:
        table.create_entity(_v1(to_entity(record, final_pk(record.request_id), 0)))
        table.create_entity(_v1(list_entry(record, 0)))
    else:
        pk = active_pk(record.request_id)
        table.create_entity(_v1(to_entity(record, pk, 0)))
        row = lock_row(record.customer_id, record.product_family)
        assert lock_pk(record.customer_id) == pk
        table.create_entity({"PartitionKey": pk, "RowKey": row, "RequestId": record.request_id, "Fingerprint": ""})
    if key is not None:
        table.create_entity(
            {
                "PartitionKey": "idempotency",
                "RowKey": hashlib.sha256(key.encode()).hexdigest(),
                "RequestId": record.request_id,
                "Fingerprint": _fingerprint(record),
            }
        )


def _fingerprint(record: UpgradeRequestRecord) -> str:
    from shared.upgrade_requests.record import body_fingerprint

    return body_fingerprint(record.customer_id, record.product_family)


def write_v0_request(table: Any, record: UpgradeRequestRecord) -> None:
    """Layout 0: the request id as PartitionKey, RowKey "request"; locks in partition `active`."""
    entity = _v1(to_entity(record, record.request_id, 0))
    entity["RowKey"] = "request"
    table.create_entity(entity)
    table.create_entity(
        {
            "PartitionKey": "active",
            "RowKey": f"{record.customer_id}|{record.product_family}",
            "RequestId": record.request_id,
        }
    )
