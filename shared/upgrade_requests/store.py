"""Upgrade requests in Azure Table Storage, with optimistic concurrency on every write.

One table holds three kinds of entity, each found by a point read:

| entity              | PartitionKey    | RowKey                    | why                                     |
|---------------------|-----------------|---------------------------|-----------------------------------------|
| request record      | request id      | "request"                 | GET by request id is one point read     |
| idempotency key     | "idempotency"   | sha256(Idempotency-Key)   | a key claims its request id atomically  |
| active-request lock | "active"        | "{customerId}|{family}"   | one active request per customer/family  |

Every update is conditional on the ETag read (`If-Match`); "insert" fails if the entity exists.
Those two primitives are what make claims, leases and idempotency safe across instances.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.deadlines import IDENTITY_SECONDS, STORAGE_SECONDS, azure_client_options, azure_transport, expired
from shared.errors import ConfigurationError, DeadlineExceeded, StorageUnavailable
from shared.upgrade_requests.record import ACTIVE_STATES, RequestedBy, UpgradeRequestRecord

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from shared.settings import StorageTarget

log = logging.getLogger(__name__)

RECORD_ROW = "request"
KEYS_PARTITION = "idempotency"
ACTIVE_PARTITION = "active"
_JSON_FIELDS = {"line_items", "error_details"}


class WriteConflict(Exception):
    """The entity exists (insert) or changed since it was read (conditional update)."""


@dataclass(frozen=True)
class Stored:
    """A record with the ETag it was read or written with."""

    record: UpgradeRequestRecord
    etag: str


@dataclass(frozen=True)
class Pointer:
    """An idempotency key or active lock: which request it points at, and its ETag."""

    request_id: str
    fingerprint: str
    etag: str
    written_at: datetime


class RequestStore:
    """CRUD for the three entity kinds; all storage errors become `StorageUnavailable` or `WriteConflict`."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    # --- request records ---

    def create(self, record: UpgradeRequestRecord) -> Stored:
        etag = self._insert(_to_entity(record))
        return Stored(record, etag)

    def get(self, request_id: str) -> Stored | None:
        entity = self._get(request_id, RECORD_ROW)
        return None if entity is None else Stored(_from_entity(entity), entity.metadata["etag"])

    def replace(self, record: UpgradeRequestRecord, etag: str) -> Stored:
        """Write the record if nobody changed it since `etag`; else `WriteConflict`."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            metadata = self._table.update_entity(
                _to_entity(record), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise WriteConflict(record.request_id) from None
        except Exception as error:
            raise _storage_error(error) from None
        return Stored(record, metadata["etag"])

    def due(self, now: datetime, limit: int) -> list[Stored]:
        """Active records whose next step is due and whose lease (if any) has expired."""
        states = " or ".join(f"State eq '{state}'" for state in sorted(ACTIVE_STATES))
        query = f"RowKey eq '{RECORD_ROW}' and ({states}) and NextAttemptAt le @now and LeaseUntil le @now"
        found: list[Stored] = []
        for entity in self._query(query, {"now": now}):
            found.append(Stored(_from_entity(entity), entity.metadata["etag"]))
            if len(found) >= limit:
                break
        return found

    def due_callbacks(self, now: datetime, limit: int) -> list[Stored]:
        """Final records whose completion callback is still to be (re)tried now."""
        query = f"RowKey eq '{RECORD_ROW}' and CallbackState eq 'pending' and CallbackNextAt le @now"
        found: list[Stored] = []
        for entity in self._query(query, {"now": now}):
            record = _from_entity(entity)
            if record.is_final:
                found.append(Stored(record, entity.metadata["etag"]))
            if len(found) >= limit:
                break
        return found

    def all_records(self) -> Iterator[UpgradeRequestRecord]:
        """Every request record (operators' reports and tests; a full scan)."""
        for entity in self._query(f"RowKey eq '{RECORD_ROW}'", {}):
            yield _from_entity(entity)

    # --- idempotency keys and active locks ---

    def key(self, key_hash: str) -> Pointer | None:
        return self._pointer(KEYS_PARTITION, key_hash)

    def create_key(self, key_hash: str, request_id: str, fingerprint: str) -> None:
        self._insert(_pointer_entity(KEYS_PARTITION, key_hash, request_id, fingerprint))

    def repoint_key(self, key_hash: str, request_id: str, pointer: Pointer) -> None:
        self._replace_pointer(_pointer_entity(KEYS_PARTITION, key_hash, request_id, pointer.fingerprint), pointer.etag)

    def active(self, customer_id: str, product_family: str) -> Pointer | None:
        return self._pointer(ACTIVE_PARTITION, _active_row(customer_id, product_family))

    def create_active(self, customer_id: str, product_family: str, request_id: str) -> None:
        self._insert(_pointer_entity(ACTIVE_PARTITION, _active_row(customer_id, product_family), request_id, ""))

    def release_active(self, customer_id: str, product_family: str, request_id: str) -> None:
        """Delete the lock if (and only if) it still belongs to `request_id`."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        row = _active_row(customer_id, product_family)
        pointer = self._pointer(ACTIVE_PARTITION, row)
        if pointer is None or pointer.request_id != request_id:
            return
        try:
            self._table.delete_entity(
                ACTIVE_PARTITION, row, etag=pointer.etag, match_condition=MatchConditions.IfNotModified
            )
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
                ACTIVE_PARTITION,
                _active_row(customer_id, product_family),
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

    def _get(self, partition: str, row: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        except Exception as error:
            raise _storage_error(error) from None

    def _query(self, query: str, parameters: Mapping[str, Any]) -> Iterator[Any]:
        try:
            yield from self._table.query_entities(query, parameters=dict(parameters), results_per_page=200)
        except Exception as error:
            raise _storage_error(error) from None

    def _pointer(self, partition: str, row: str) -> Pointer | None:
        entity = self._get(partition, row)
        if entity is None:
            return None
        written_at = entity.metadata.get("timestamp") or datetime.now(UTC)
        return Pointer(entity["RequestId"], entity.get("Fingerprint", ""), entity.metadata["etag"], written_at)

    def _replace_pointer(self, entity: dict[str, Any], etag: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise WriteConflict(entity["RowKey"]) from None
        except Exception as error:
            raise _storage_error(error) from None


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


def _active_row(customer_id: str, product_family: str) -> str:
    return f"{customer_id}|{product_family.lower()}"


def _pointer_entity(partition: str, row: str, request_id: str, fingerprint: str) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": row, "RequestId": request_id, "Fingerprint": fingerprint}


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


_COLUMNS = {f.name: _column(f.name) for f in fields(UpgradeRequestRecord)}


def _to_entity(record: UpgradeRequestRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": record.request_id, "RowKey": RECORD_ROW}
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
    try:
        service.create_table(table_name)
    except ResourceExistsError:
        pass
    except Exception as error:
        raise _storage_error(error) from None
    return RequestStore(service.get_table_client(table_name))
