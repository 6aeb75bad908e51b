"""JSON and RFC 9457 problem+json responses: the only way handlers answer."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from shared.correlation import RESPONSE_CORRELATION_HEADER
from shared.errors import UpgradeError

PROBLEM_CONTENT_TYPE = "application/problem+json"
# RFC 9457's members (and ours beside them) that an error's extensions may never replace: `status`
# is the HTTP status number, so a request's state travels as `requestStatus`.
RESERVED_PROBLEM_MEMBERS = frozenset(
    {"type", "title", "status", "detail", "instance", "correlationId", "retryAfterSeconds"}
)


def json_response(
    body: dict[str, Any],
    status: int,
    correlation_id: str,
    headers: dict[str, str] | None = None,
) -> func.HttpResponse:
    all_headers = {RESPONSE_CORRELATION_HEADER: correlation_id, **(headers or {})}
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=all_headers,
        mimetype="application/json",
        charset="utf-8",
    )


def problem_response(error: UpgradeError, correlation_id: str, instance: str | None = None) -> func.HttpResponse:
    """The error as problem+json: type, title, status, detail, correlationId, then the extensions
    (never one named like a reserved member: tests/test_problem_members.py)."""
    extensions = {name: value for name, value in error.extensions.items() if name not in RESERVED_PROBLEM_MEMBERS}
    body: dict[str, Any] = {
        "type": error.problem_type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "correlationId": correlation_id,
        **extensions,
    }
    if instance:
        body["instance"] = instance
    headers = {**error.headers, RESPONSE_CORRELATION_HEADER: correlation_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
        body["retryAfterSeconds"] = error.retry_after
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=error.status,
        headers=headers,
        mimetype=PROBLEM_CONTENT_TYPE,
        charset="utf-8",
    )
