r"""Where each entity lives: the table's layout (version 2), in one place.

One table, these entities (`{b}` = a customer's bucket: 8 hex digits of sha256(customer id);
every request id starts with its customer's bucket, so a request id names its partitions):

| entity                      | PartitionKey            | RowKey                   | read by                  |
|-----------------------------|-------------------------|--------------------------|--------------------------|
| active request record       | `a-{b}`                 | request id               | get, due (range `a-`)    |
| active-request lock         | `a-{b}`                 | `lock\|{family}\|{cust}` | intake (point read)      |
| reopen clean-up marker      | `a-{b}`                 | `reopen\|{id}`           | repair (range `a-`)      |
| final request record        | `f-{b}`                 | request id               | get, list by customer    |
| final-state list index      | `l-{state}-{yyyymmdd}`  | `{createdAt}\|{id}`      | list, summary, retention |
| callback-due index          | `cb`                    | request id               | due_callbacks            |
| idempotency key             | `k-{h}` (h: 2 hex of the key's sha256) | sha256(key) | intake (point read)   |
| layout marker               | `meta`                  | `layout`                 | start-up (point read)    |
| retention marker            | `meta`                  | `retention`              | timer (point read)       |
| retention cursor            | `meta`                  | `retention-cursor`       | timer (point read)       |

Why: the timer's `due()` is a bounded range query over the `a-` partitions, which hold only active
requests and their locks (a final record leaves them at once); `due_callbacks()` reads the `cb`
partition, which holds only pending callbacks; lists of final requests read `l-{state}-{day}`
ranges bounded by state and creation day; retention deletes from the oldest `l-` partitions, and
with each request its key, so no partition grows with history and keys spread over 256 partitions.

Every record carries `Revision`, a counter the store raises on each write of it: a copy of a
record is only ever written over an older revision (see `moves`), so a slow writer that read an
older version can never bring it back.

Layout versions: 0 (before buckets: the request id as PartitionKey, locks in `active`), 1 (this
layout with keys in one `idempotency` partition, no revisions, no marker), 2 (this one). A table
of another version is refused (`StorageLayoutMismatch`); `python -m shared.cli migrate` moves a
version 1 table to version 2 (`schema`).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from shared.upgrade_requests.record import UpgradeRequestRecord

LAYOUT_VERSION = 2
KEYS_PREFIX = "k-"
LEGACY_KEYS_PARTITION = "idempotency"  # layout 1
CALLBACKS_PARTITION = "cb"
META_PARTITION = "meta"
LAYOUT_ROW = "layout"
RETENTION_ROW = "retention"
RETENTION_CURSOR_ROW = "retention-cursor"
ACTIVE_PREFIX = "a-"
FINAL_PREFIX = "f-"
LIST_PREFIX = "l-"
LOCK_PREFIX = "lock|"
REOPEN_PREFIX = "reopen|"  # a reopen's clean-up marker, beside its record until the clean-up is done
ACTIVE_RANGE = ("a-", "a.")  # every `a-{bucket}` partition, and nothing else ('.' follows '-')
ACTIVE_RANGE_FILTER = f"PartitionKey ge '{ACTIVE_RANGE[0]}' and PartitionKey lt '{ACTIVE_RANGE[1]}'"
RECORD_ROWS_FILTER = "RowKey lt 'g'"  # request ids are hex GUIDs: below every `lock|` row


def customer_bucket(customer_id: str) -> str:
    """The 8 hex digits that place a customer's records and locks (and start its request ids)."""
    return hashlib.sha256(customer_id.strip().lower().encode()).hexdigest()[:8]


def new_request_id(customer_id: str) -> str:
    """A GUID whose first 8 hex digits are the customer's bucket; the rest is random (uuid4)."""
    return customer_bucket(customer_id) + str(uuid.uuid4())[8:]


def active_pk(request_id: str) -> str:
    return ACTIVE_PREFIX + request_id[:8].lower()


def final_pk(request_id: str) -> str:
    return FINAL_PREFIX + request_id[:8].lower()


def lock_pk(customer_id: str) -> str:
    return ACTIVE_PREFIX + customer_bucket(customer_id)


def lock_row(customer_id: str, product_family: str) -> str:
    return f"{LOCK_PREFIX}{product_family.lower()}|{customer_id.strip().lower()}"


def key_pk(key_hash: str) -> str:
    return KEYS_PREFIX + key_hash[:2].lower()


def iso_key(value: datetime | None) -> str:
    """A fixed-width UTC timestamp that sorts as text in time order."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def list_key(record: UpgradeRequestRecord) -> tuple[str, str]:
    created = record.created_at.astimezone(UTC)
    return f"{LIST_PREFIX}{record.state}-{created:%Y%m%d}", f"{iso_key(created)}|{record.request_id}"
