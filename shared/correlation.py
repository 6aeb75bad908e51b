"""Correlation and request ids: what ties one caller's request to Partner Center's logs.

`correlation_id` follows the caller's request end to end (from `MS-CorrelationId` or
`x-ms-correlation-id`, else new) and is echoed in our response. `request_id` is Partner Center's
`MS-RequestId`, its idempotency key: one per logical operation, the same on every retry of that
operation, never shared by two operations.

`bind_caller_to_log_lines(object_id)` (inside a `log_scope`): while a request is handled, every log line (ours and the
libraries') ends with `caller_oid=<object id>`, so Application Insights' `traces` answer "who
asked" with a `where message has` (the Python worker forwards the message text, not `extra`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator, Mapping
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


CALLER_LOG_FIELD = "caller_oid"
_caller_oid: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller_oid", default=None)
_UNSAFE = re.compile(r"[^A-Za-z0-9@._:-]")
_factory_installed = False


def _install_record_factory() -> None:
    """Wrap the log record factory once: records made while a caller is bound get its id appended.
    (The logging cookbook's way to add context to every record, libraries' included.)"""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        caller = _caller_oid.get()
        if caller is not None:
            record.caller_oid = caller
            suffix = f" {CALLER_LOG_FIELD}={caller}"
            record.msg = f"{record.msg}{suffix.replace('%', '%%') if record.args else suffix}"
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


@contextlib.contextmanager
def log_scope() -> Iterator[None]:
    """One handled request: a caller bound inside it (`bind_caller_to_log_lines`) is forgotten at
    the end, after the request's last line (its problem or error line included) was logged."""
    token = _caller_oid.set(None)
    try:
        yield
    finally:
        _caller_oid.reset(token)


def bind_caller_to_log_lines(object_id: str | None) -> None:
    """From now until the end of the `log_scope`, every log line ends with `caller_oid=...`."""
    _install_record_factory()
    _caller_oid.set(_UNSAFE.sub("_", object_id or "-")[:128])


@contextlib.contextmanager
def caller_on_log_lines(object_id: str | None) -> Iterator[None]:
    """`caller_oid=...` on every log line made inside (the timer, the CLI: one request's work)."""
    with log_scope():
        bind_caller_to_log_lines(object_id)
        yield
