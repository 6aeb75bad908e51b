"""HTTP handlers for durable upgrade requests (POST accepts, GET follows one request).

Answers follow the asynchronous request-reply pattern that Power Automate's HTTP action and
Logic Apps follow by themselves: `202 Accepted` + `Location` (this request's status URL) +
`Retry-After` while the request is not final, `200` with the final record once it is.
A request refused by Partner Center on its first submission answers with the matching 4xx
problem+json (it is stored as `rejected`, and GET shows it).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from urllib.parse import quote, urljoin

import azure.functions as func

from shared.api.caller_auth import Role, current_caller, requires
from shared.api.responses import json_response, problem_response
from shared.api.upgrade_routes import UPGRADE_FIELDS, handled
from shared.correlation import RESPONSE_CORRELATION_HEADER
from shared.errors import NotFound, error_class_for
from shared.runtime import get_runtime, get_settings
from shared.settings import FUNCTION_KEY
from shared.upgrade_requests.flow import accept_and_submit, refresh, set_callback
from shared.upgrade_requests.intake import idempotency_key_hash
from shared.upgrade_requests.record import REJECTED, SUBMITTED, UpgradeRequestRecord, utc_now
from shared.validation import read_json_object, upgrade_id_value, upgrade_target
from shared.webhooks.callback_urls import check_callback_url
from shared.webhooks.inbound_signatures import verify_inbound

REQUEST_ROUTE = "product-upgrade-requests"
POLL_AFTER_SECONDS = 30  # what we suggest to pollers while Partner Center works on the upgrade
MAX_SUGGESTED_WAIT_SECONDS = 3600


def wants_queue(req: func.HttpRequest) -> bool:
    """`Prefer: respond-async` (RFC 7240) asks to store the request for the timer, not submit now."""
    prefer = req.headers.get("prefer") or ""
    return any(token.strip().lower() == "respond-async" for token in prefer.split(","))


@handled
@requires(Role.SUBMIT)
def submit_request(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """POST product-upgrades: store the request, then (unless queued) submit it now."""
    settings = get_settings()  # input is checked before any storage or Key Vault client is built
    body = req.get_body()
    key = req.headers.get("idempotency-key")
    requested_by = current_caller().requested_by
    if settings.inbound_signatures_required:
        webhook_id = verify_inbound(req.headers, body, get_runtime().secrets, settings.inbound_signing_secret_name)
        # The signed webhook-id is THE idempotency key: an Idempotency-Key header is not signed, so
        # a captured delivery replayed with a new one must still answer the original request.
        key = f"webhook:{webhook_id}"
        if requested_by.auth_method == FUNCTION_KEY:  # the signature says more than the shared key
            requested_by = replace(requested_by, auth_method="signed-webhook")
    document = read_json_object(req.headers, body, (*UPGRADE_FIELDS, "callbackUrl"))
    target = upgrade_target(document)
    callback_url = None
    if document.get("callbackUrl") is not None:
        callback_url = check_callback_url(
            document["callbackUrl"], allow_private_networks=settings.callback_allow_private_networks
        )
    key_hash = idempotency_key_hash(key)
    queue = wants_queue(req)
    accepted = accept_and_submit(
        get_runtime(),
        target,
        correlation_id,
        key_hash,
        queue=queue,
        callback_url=callback_url,
        requested_by=requested_by,
    )
    record = accepted.stored.record
    if record.state == REJECTED and not accepted.replayed:
        return _rejection(record, correlation_id, req)
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
    return record_response(record, req, correlation_id, headers)


@handled
@requires(Role.READ)
def get_request(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """GET product-upgrade-requests/{requestId}: the stored request, refreshed from Partner Center
    when it has an upgrade id and is not final (the same step the timer would take)."""
    request_id = upgrade_id_value(req.route_params.get("requestId"), field="requestId")
    runtime = get_runtime()
    stored = runtime.store.get(request_id)
    if stored is None:
        raise NotFound(f"No upgrade request {request_id}")
    return record_response(refresh(runtime, stored).record, req, correlation_id)


@handled
@requires(Role.SUBMIT)
def put_callback(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """PUT product-upgrade-requests/{requestId}/callback {"url": ...}: subscribe to completion."""
    request_id = upgrade_id_value(req.route_params.get("requestId"), field="requestId")
    document = read_json_object(req.headers, req.get_body(), ("url",))
    url = check_callback_url(document.get("url"), allow_private_networks=get_settings().callback_allow_private_networks)
    stored = set_callback(get_runtime(), request_id, url)
    body = stored.record.public_view()
    return json_response(body, 200, correlation_id, {"Location": request_url(req, request_id)})


@handled
@requires(Role.SUBMIT)
def delete_callback(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """DELETE product-upgrade-requests/{requestId}/callback: unsubscribe (idempotent)."""
    request_id = upgrade_id_value(req.route_params.get("requestId"), field="requestId")
    set_callback(get_runtime(), request_id, None)
    return func.HttpResponse(status_code=204, headers={RESPONSE_CORRELATION_HEADER: correlation_id})


def record_response(
    record: UpgradeRequestRecord, req: func.HttpRequest, correlation_id: str, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    status_url = request_url(req, record.request_id)
    body = record.public_view()
    body["statusUrl"] = status_url
    if record.upgrade_id:
        body["upgradeStatusUrl"] = urljoin(
            req.url, f"/api/product-upgrades/{record.upgrade_id}?customerId={quote(record.customer_id)}"
        )
    all_headers = {"Location": status_url, **(headers or {})}
    if record.is_final:
        return json_response(body, 200, correlation_id, all_headers)
    all_headers["Retry-After"] = str(suggested_wait(record))
    return json_response(body, 202, correlation_id, all_headers)


def suggested_wait(record: UpgradeRequestRecord) -> int:
    """Seconds until something can change: the next attempt, or a poll interval."""
    if record.state == SUBMITTED:
        return POLL_AFTER_SECONDS
    wait = (record.next_attempt_at - utc_now()) / timedelta(seconds=1)
    return int(min(MAX_SUGGESTED_WAIT_SECONDS, max(POLL_AFTER_SECONDS, wait)))


def request_url(req: func.HttpRequest, request_id: str) -> str:
    return str(urljoin(req.url, f"/api/{REQUEST_ROUTE}/{request_id}"))


def _rejection(record: UpgradeRequestRecord, correlation_id: str, req: func.HttpRequest) -> func.HttpResponse:
    cls = error_class_for(record.last_error_type)
    extensions = {"requestId": record.request_id, "statusUrl": request_url(req, record.request_id)}
    details = record.error_details or {}
    if details.get("code"):
        extensions["partnerCenterErrorCode"] = details["code"]
    if details.get("partnerCenterStatus"):
        extensions["partnerCenterStatus"] = details["partnerCenterStatus"]
    return problem_response(cls(record.last_error or cls.title, extensions=extensions), correlation_id)
