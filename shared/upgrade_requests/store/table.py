"""The table operations the store is made of, each mapping the SDK's errors to ours.

Every write is an insert-if-absent, an ETag-guarded replace or delete, or an upsert of an entity
that only ever holds derived data (an index entry): the two primitives that make claims, leases
and idempotency safe across instances. Storage failures become `StorageUnavailable` (or
`DeadlineExceeded` when the answer's deadline ran out); "exists" and "changed since read" become
`WriteConflict`, which callers answer by reading again.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.deadlines import expired
from shared.errors import DeadlineExceeded, StorageUnavailable
from shared.upgrade_requests.store.entities import Pointer

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("shared.upgrade_requests.store")


class WriteConflict(Exception):
    """The entity exists (insert) or changed since it was read (conditional write)."""


class TableOps:
    """The primitives, over one `TableClient` (`_table`: the network edge tests wrap)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def _insert(self, entity: dict[str, Any]) -> str:
        from azure.core.exceptions import ResourceExistsError

        try:
            return str(self._table.create_entity(entity)["etag"])
        except ResourceExistsError:
            raise WriteConflict(entity["PartitionKey"]) from None
        except Exception as error:
            raise storage_error(error) from None

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
            raise storage_error(error) from None
        return str(metadata["etag"])

    def _upsert(self, entity: dict[str, Any]) -> str:
        from azure.data.tables import UpdateMode

        try:
            return str(self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)["etag"])
        except Exception as error:
            raise storage_error(error) from None

    def _delete(self, partition: str, row: str, etag: str | None = None) -> bool:
        """Delete if present (and unchanged since `etag`, when given). False: absent or changed."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            if etag is None:
                self._table.delete_entity(partition, row)
            else:
                self._table.delete_entity(partition, row, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        except Exception as error:
            raise storage_error(error) from None
        return True

    def _transaction(self, operations: list[Any]) -> bool:
        """One entity-group transaction. False: one of its conditions failed (nothing was done)."""
        from azure.data.tables import TableTransactionError

        try:
            self._table.submit_transaction(operations)
        except TableTransactionError as error:
            if error.status_code in (404, 409, 412):
                return False
            raise storage_error(error) from None
        except Exception as error:
            raise storage_error(error) from None
        return True

    def _get(self, partition: str, row: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        except Exception as error:
            raise storage_error(error) from None

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
            raise storage_error(error) from None

    def _pointer(self, partition: str, row: str) -> Pointer | None:
        entity = self._get(partition, row)
        if entity is None:
            return None
        written_at = entity.metadata.get("timestamp") or datetime.now(UTC)
        return Pointer(entity["RequestId"], entity.get("Fingerprint", ""), entity.metadata["etag"], written_at)

    def _in_parallel(self, reads: list[Any]) -> list[Any]:
        """Run point reads (callables) on a small pool, in order; each in a copy of this context,
        so the answer's deadline holds on the pool too."""
        if len(reads) <= 1:
            return [read() for read in reads]
        with ThreadPoolExecutor(max_workers=min(8, len(reads)), thread_name_prefix="store-get") as pool:
            jobs = [pool.submit(contextvars.copy_context().run, read) for read in reads]
            return [job.result() for job in jobs]


def storage_error(error: Exception) -> StorageUnavailable | DeadlineExceeded:
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
