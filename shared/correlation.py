"""Correlation and request ids: what ties one caller's request to Partner Center's logs.

`correlation_id` follows the caller's request end to end (from `MS-CorrelationId` or
`x-ms-correlation-id`, else new) and is echoed in our response. `request_id` is Partner Center's
`MS-RequestId`, its idempotency key: one per logical operation, the same on every retry of that
operation, never shared by two operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from shared.errors import InvalidRequest
from shared.identifiers import is_guid, new_guid

CORRELATION_HEADERS = ("MS-CorrelationId", "x-ms-correlation-id")
RESPONSE_CORRELATION_HEADER = "MS-CorrelationId"


@dataclass(frozen=True)
class CallContext:
    correlation_id: str
    request_id: str

    @classmethod
    def new(cls, correlation_id: str | None = None) -> CallContext:
        return cls(correlation_id=correlation_id or new_guid(), request_id=new_guid())

    def next_operation(self) -> CallContext:
        """Same correlation, a fresh MS-RequestId: for a different Partner Center operation."""
        return replace(self, request_id=new_guid())


def correlation_id_from(headers: Mapping[str, str]) -> str:
    """The caller's correlation id if it sent one (it must be a GUID, as Partner Center wants)."""
    for name in CORRELATION_HEADERS:
        value = headers.get(name) or headers.get(name.lower())
        if value is None:
            continue
        value = value.strip()
        if not is_guid(value):
            raise InvalidRequest(f"Header {name} must be a GUID", extensions={"header": name})
        return value.lower()
    return new_guid()
