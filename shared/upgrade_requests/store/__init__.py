"""Upgrade requests in Azure Table Storage: one store, in modules by concern.

- `layout`: where each entity lives (the layout table) and the layout version.
- `entities`: a record as an entity and back; `Stored`, the handle a record is written back with.
- `table`: the table operations (insert-if-absent, ETag-guarded writes), errors mapped to ours.
- `moves`: finalising, reopening and `repair()`, with the rules that keep them safe concurrently.
- `records`: get, replace, the timer's `due()` and `due_callbacks()`, `all_records()`.
- `listing`: paged lists and the summary. `retention`: what goes, in which order.
- `pointers`: idempotency keys and customer locks. `schema`: the layout check and `migrate`.

Each write's crash protocol (its writes in order, what a crash after each leaves, who finishes it)
is tabled in docs/exactly-once.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.deadlines import (
    IDENTITY_SECONDS,
    STORAGE_SECONDS,
    azure_client_options,
    azure_transport,
    read_transport_environment_once,
)
from shared.errors import ConfigurationError
from shared.upgrade_requests.store.entities import Pointer, Stored
from shared.upgrade_requests.store.layout import LAYOUT_VERSION, customer_bucket, new_request_id
from shared.upgrade_requests.store.listing import MAX_PAGE, ListFilter, Page, Summary
from shared.upgrade_requests.store.retention import Retention
from shared.upgrade_requests.store.schema import Migration, Schema
from shared.upgrade_requests.store.table import WriteConflict, storage_error

if TYPE_CHECKING:
    from shared.settings import StorageTarget

__all__ = [
    "LAYOUT_VERSION",
    "MAX_PAGE",
    "ListFilter",
    "Migration",
    "Page",
    "Pointer",
    "RequestStore",
    "Stored",
    "Summary",
    "WriteConflict",
    "build_request_store",
    "customer_bucket",
    "new_request_id",
]


class RequestStore(Retention, Schema):
    """The request store: every public operation of the modules above, over one table."""


def build_request_store(
    storage: StorageTarget, table_name: str, max_concurrency: int = 10, *, check_layout: bool = True
) -> RequestStore:
    """Connect as the Functions host does (connection string, or identity-based endpoint), create
    the table if it is missing, and (unless migrating) refuse a table of another layout. The
    connection pool holds `max_concurrency` connections: the SDK's default of 10 made a timer run at
    higher concurrency discard and re-open (TLS) connections on every request (measured by the
    benchmark)."""
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
        raise storage_error(error) from None
    store = RequestStore(service.get_table_client(table_name))
    if check_layout:
        store.check_layout()
    return store
