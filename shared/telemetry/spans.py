"""The app's own spans: one per inbound request, one per step of an upgrade request, one per timer run.

Inbound requests continue the caller's trace. In Azure the Functions host has already started the
request (from the caller's `traceparent`) and the Python worker makes it the current context
(`PYTHON_ENABLE_OPENTELEMETRY`): the function's span is then its child. Where nothing is current
(the local runner, tests), the span continues the `traceparent` header itself, as the request.
Either way every outbound call inside is a child, and the trace id is the caller's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from shared.telemetry import attributes
from shared.telemetry.switch import active

TRACER_NAME = "csp_product_upgrade"
CORRELATION_RESPONSE_HEADER = "MS-CorrelationId"


class UpgradeRequestRecord(Protocol):
    """What a span says of a stored request (`shared.upgrade_requests.record`, a layer above)."""

    @property
    def request_id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def product_family(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def state(self) -> str: ...


class Span:
    """What a caller may add to its span; does nothing while telemetry is off."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, values: Mapping[str, str | int | float | bool | None]) -> None:
        if self._span is not None:
            self._span.set_attributes({name: value for name, value in values.items() if value is not None})

    def answered(self, status: int, headers: Mapping[str, str]) -> None:
        """The response: its status and the correlation id it carries (the caller's or ours)."""
        if self._span is None:
            return
        self.set(
            {"http.response.status_code": status, attributes.CORRELATION_ID: headers.get(CORRELATION_RESPONSE_HEADER)}
        )
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR))

    def record_step(self, record: UpgradeRequestRecord) -> None:
        """The request's identity on the span (step spans, and the inbound span once it is known)."""
        self.set(
            {
                attributes.REQUEST_ID: record.request_id,
                attributes.CUSTOMER_ID: record.customer_id,
                attributes.PRODUCT_FAMILY: record.product_family,
                attributes.CORRELATION_ID: record.correlation_id,
            }
        )


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME)


@contextlib.contextmanager
def inbound_request(function_name: str, method: str, url: str, headers: Mapping[str, str]) -> Iterator[Span]:
    """The span of one HTTP function invocation (see the module docstring for its parent)."""
    if not active():
        yield Span()
        return
    from urllib.parse import urlsplit

    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    parent = None
    kind = SpanKind.INTERNAL
    if not trace.get_current_span().get_span_context().is_valid:
        parent = propagate.extract({name.lower(): value for name, value in headers.items()})
        kind = SpanKind.SERVER
    values = {
        "faas.trigger": "http",
        "faas.name": function_name,
        "http.request.method": method,
        "url.path": urlsplit(url).path,
    }
    with _tracer().start_as_current_span(function_name, context=parent, kind=kind, attributes=values) as span:
        yield Span(span)


@contextlib.contextmanager
def request_step(record: UpgradeRequestRecord) -> Iterator[Span]:
    """One step of one upgrade request (submit, resolve, poll): the parent of its outbound calls."""
    if not active():
        yield Span()
        return
    with _tracer().start_as_current_span("upgrade request step", attributes={attributes.STATE: record.state}) as span:
        step = Span(span)
        step.record_step(record)
        yield step


@contextlib.contextmanager
def timer_run(function_name: str) -> Iterator[Span]:
    """One timer run; the steps it takes (on its pool's threads: they copy this context) are children."""
    if not active():
        yield Span()
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    kind = SpanKind.INTERNAL if trace.get_current_span().get_span_context().is_valid else SpanKind.SERVER
    attributes_ = {"faas.trigger": "timer", "faas.name": function_name}
    with _tracer().start_as_current_span(function_name, kind=kind, attributes=attributes_) as span:
        yield Span(span)
