"""Hooks on the `requests` instrumentation: what an operator needs on each Partner Center call.

The instrumentation traces every call made with `requests` (Partner Center; Entra under MSAL;
callbacks). A Partner Center call is recognised by the `MS-Contract-Version` header only it carries
(`shared.partner_center.client`), so the client needs no telemetry code. Each such span is named
`Partner Center <operation>` and carries the correlation id and MS-RequestId sent, the customer, and
from the answer: status, Partner Center's error code, how many resends urllib3's retry made inside
this call, the 429s among them, and `Retry-After`. The same answer feeds the 429 counter and the
latency histogram (`shared.telemetry.metrics`).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

from shared.identifiers import GUID_PATTERN
from shared.telemetry import attributes, metrics

PARTNER_CENTER_MARKER = "MS-Contract-Version"
ENTRA_TOKEN_PATH = "/oauth2/v2.0/token"  # noqa: S105 (a URL path, not a password)
_STARTED = "_csp_telemetry_started"  # set on the PreparedRequest: gone with it, even if the call raises


def operation_of(path: str) -> str:
    """create / eligibility / status / customers, else the path with ids as `{id}`."""
    path = path.rstrip("/")
    if path.endswith("/eligibility"):
        return "eligibility"
    if path.endswith("/status"):
        return "status"
    if path.endswith("/productUpgrades"):
        return "create"
    if "/customers" in path:
        return "customers"
    return re.sub(GUID_PATTERN, "{id}", path)


def request_hook(span: Any, request: Any) -> None:
    """Before the call: name the span, note what was sent (never the Authorization header)."""
    headers = request.headers
    if PARTNER_CENTER_MARKER not in headers:
        if urlsplit(request.url).path.endswith(ENTRA_TOKEN_PATH):
            span.update_name("Entra token")  # MSAL's grant for the Partner Center token
        return
    setattr(request, _STARTED, time.monotonic())
    operation = operation_of(urlsplit(request.url).path)
    span.update_name(f"Partner Center {operation}")
    values: dict[str, str] = {
        attributes.PC_OPERATION: operation,
        attributes.CORRELATION_ID: headers.get("MS-CorrelationId", ""),
        attributes.PC_REQUEST_ID: headers.get("MS-RequestId", ""),
    }
    body = _json(request.body)
    for field, name in (("customerId", attributes.CUSTOMER_ID), ("productFamily", attributes.PRODUCT_FAMILY)):
        if isinstance(body.get(field), str):
            values[name] = body[field]
    span.set_attributes(values)


def response_hook(span: Any, request: Any, response: Any) -> None:
    """After the answer (retries included): status, error code, retries, 429s, Retry-After."""
    if PARTNER_CENTER_MARKER not in request.headers:
        return
    status = int(response.status_code)
    history = getattr(getattr(response.raw, "retries", None), "history", None) or ()
    throttled = sum(1 for attempt in history if attempt.status == 429) + (status == 429)
    values: dict[str, str | int] = {
        attributes.PC_STATUS: status,
        attributes.PC_RETRIES: len(history),
        attributes.PC_THROTTLED: throttled,
    }
    retry_after = (response.headers.get("Retry-After") or "").strip()
    if retry_after:
        values[attributes.PC_RETRY_AFTER] = int(retry_after) if retry_after.isdigit() else retry_after[:64]
    if status >= 400:
        code = _json(response.content).get("code")
        if code is not None:
            values[attributes.PC_ERROR_CODE] = str(code)[:64]
    span.set_attributes(values)
    started = getattr(request, _STARTED, None)
    milliseconds = (time.monotonic() - started) * 1000 if started is not None else None
    metrics.partner_center_call(operation_of(urlsplit(request.url).path), status, milliseconds, throttled)


def _json(body: Any) -> dict[str, Any]:
    """A JSON object body, or {} (no body, not JSON, not an object)."""
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}
