"""Fake Partner Center product-upgrade API (``/v1/productUpgrades``).

Shapes follow the Partner Center docs as collected in ``/work/research/partner-center-facts.md``:
create answers ``202`` with an empty body and ``Location: productUpgrades/{id}`` (relative, no
``/v1/``); eligibility returns ``{customerId, productFamily, isEligible, upgradeId?, reason?}``;
status is a POST with a ``{customerId, productFamily}`` body, at ``.../{id}/status`` and at
``.../{id}``, returning ``{id, status, productFamily, lineItems, errorDetails?}``. Only
``"Completed"`` is a documented status value; ``"InProgress"`` and ``"Failed"`` are the sandbox's
(PascalCase, like the documented one), so clients must treat unknown values as non-terminal.
Errors are ``{code, description, data, source}`` with the documented codes. ``MS-RequestId``
makes create idempotent, as the headers doc promises.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from .error_bodies import partner_center_error, throttled_error
from .state import PARTNER_CENTER_RESOURCE, SandboxState
from .wire import Request, Response, is_guid, new_guid

if TYPE_CHECKING:
    from .faults import FaultAction
    from .upgrades import Upgrade

STATUS_VALUES = {"in_progress": "InProgress", "complete": "Completed", "failed": "Failed"}
SOURCE_PRODUCT_NAME = "AzureSubscription"
TARGET_PRODUCT_NAME = "Microsoft Azure plan"
SUPPORTED_FAMILIES = ("azure",)


def tracing_headers(request: Request) -> dict[str, str]:
    """Echo MS-CorrelationId / MS-RequestId (or mint them, as the service does) and add MS-CV."""
    cv = request.headers.get("MS-CV")
    return {
        "MS-CorrelationId": request.headers.get("MS-CorrelationId") or new_guid(),
        "MS-RequestId": request.headers.get("MS-RequestId") or new_guid(),
        "MS-CV": f"{cv}.0" if cv else secrets.token_urlsafe(12) + ".0",
        "MS-ServerId": "030020525",
    }


def error(request: Request, status: int, code: int, description: str, extra: dict[str, str] | None = None) -> Response:
    """A Partner Center error response with the usual tracing headers."""
    return Response.json(status, partner_center_error(code, description), {**tracing_headers(request), **(extra or {})})


def authenticate(request: Request, state: SandboxState, *, app_only_allowed: bool = False) -> Response | None:
    """App+User token for Partner Center issued by the sandbox's Entra, unexpired; else 401.
    ``app_only_allowed``: an app-only token will do too (listing customers accepts both)."""
    realm = {"WWW-Authenticate": f"OAuth realm=urn:cpsvc:cpid:{new_guid()}"}
    token = request.bearer_token()
    if token is None:
        return error(request, 401, 800001, "Partner Token missing in request context", realm)
    record = state.tokens.access_token(token)
    if record is None or record.issuer != "entra" or not record.is_for(PARTNER_CENTER_RESOURCE):
        return error(request, 401, 400, "Access denied: the token is not a Partner Center token.", realm)
    if record.expired():
        return error(request, 401, 400, "Access denied: the token has expired.", realm)
    if not record.delegated and not app_only_allowed:
        return error(
            request,
            401,
            400,
            "Access denied: this API supports App+User authentication only.",
            realm,
        )
    return None


def _authorized_upgrade_request(request: Request, state: SandboxState) -> Response | tuple[str, str]:
    """Every product-upgrade operation starts the same way: a valid token, then the body."""
    return authenticate(request, state) or _upgrade_request(request)


def _upgrade_request(request: Request) -> Response | tuple[str, str]:
    """(customerId, productFamily) from a ProductUpgradeRequest body, or the 400 to send."""
    try:
        payload = request.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return error(request, 400, 800002, "Invalid request input")
    customer_id, family = payload.get("customerId"), payload.get("productFamily")
    if not isinstance(customer_id, str) or not customer_id or not isinstance(family, str) or not family:
        return error(request, 400, 800002, "Invalid request input: customerId and productFamily are required.")
    if not is_guid(customer_id):
        return error(request, 400, 900118, "Invalid Customer ID")
    if family.lower() not in SUPPORTED_FAMILIES:
        return error(request, 400, 900107, "Can't process Azure upgrade since Azure catalog item wasn't found")
    return customer_id, family


def _ensure_preexisting(state: SandboxState, customer_id: str, family: str) -> None:
    """Materialise a scenario's ``existing_upgrade`` the first time the customer is seen."""
    scenario = state.customers.get(customer_id)
    if not scenario.existing_upgrade or state.upgrades.latest_for(customer_id, family) is not None:
        return
    existing = "complete" if scenario.existing_upgrade is True else str(scenario.existing_upgrade)
    if existing == "in_progress":
        state.upgrades.create(customer_id, family, scenario, preexisting=True)
    else:
        state.upgrades.create(customer_id, family, scenario, preexisting=True, outcome=existing, finished=True)


def _location(state: SandboxState, upgrade: Upgrade) -> str:
    relative = f"productUpgrades/{upgrade.id}"
    return f"{state.base_url}/v1/{relative}" if state.location_style == "absolute" else relative


def create_upgrade(request: Request, state: SandboxState) -> Response:
    """``POST /v1/productUpgrades``: start an upgrade, idempotent on MS-RequestId."""
    parsed = _authorized_upgrade_request(request, state)
    if isinstance(parsed, Response):
        return parsed
    customer_id, family = parsed
    request_id = request.headers.get("MS-RequestId")
    with state.upgrades.lock:
        replay = state.upgrades.by_request_id(request_id)
        if replay is not None:
            response = Response.empty(202, {**tracing_headers(request), "Location": _location(state, replay)})
            response.replayed = True
            return response
        _ensure_preexisting(state, customer_id, family)
        latest = state.upgrades.latest_for(customer_id, family)
        if latest is not None and latest.state == "in_progress":
            description = f"This upgrade isn't allowed as original upgrade {latest.id} is in progress"
            return error(request, 409, 900109, description)
        if latest is not None and latest.state == "complete":
            description = f"Can't process the upgrade request for completed upgrade {latest.id}"
            return error(request, 400, 900110, description)
        scenario = state.customers.get(customer_id)
        if not scenario.eligible:
            return error(request, scenario.error_status, scenario.error_code, scenario.ineligible_reason)
        upgrade = state.upgrades.create(customer_id, family, scenario, request_id=request_id)
    return Response.empty(202, {**tracing_headers(request), "Location": _location(state, upgrade)})


def eligibility(request: Request, state: SandboxState) -> Response:
    """``POST /v1/productUpgrades/eligibility``: ProductUpgradesEligibility."""
    parsed = _authorized_upgrade_request(request, state)
    if isinstance(parsed, Response):
        return parsed
    customer_id, family = parsed
    with state.upgrades.lock:
        _ensure_preexisting(state, customer_id, family)
        latest = state.upgrades.latest_for(customer_id, family)
        latest_state = latest.state if latest else None
    scenario = state.customers.get(customer_id)
    body: dict[str, Any] = {"customerId": customer_id, "productFamily": family}
    if latest is not None:
        body["upgradeId"] = latest.id
    if latest is not None and latest_state == "in_progress":
        body.update(isEligible=False, reason=f"The upgrade {latest.id} is in progress.")
    elif latest is not None and latest_state == "complete":
        body.update(isEligible=False, reason=f"The customer was already upgraded by upgrade {latest.id}.")
    elif not scenario.eligible:
        body.update(isEligible=False, reason=scenario.ineligible_reason)
    else:
        body["isEligible"] = True
    return Response.json(200, body, tracing_headers(request))


def _error_details(upgrade: Upgrade) -> dict[str, str]:
    return {"code": upgrade.failure_code, "message": upgrade.failure_message}


def status_body(upgrade: Upgrade) -> dict[str, Any]:
    """ProductUpgradesStatus for the upgrade's current state."""
    state = upgrade.state
    status = STATUS_VALUES[state]
    upgraded_date = (
        time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(upgrade.finished_at))
        if state == "complete" and upgrade.finished_at
        else None
    )
    line_items = []
    for item in upgrade.line_items:
        line: dict[str, Any] = {
            "sourceProduct": {"id": item.source_id, "name": SOURCE_PRODUCT_NAME},
            "targetProduct": {"id": item.target_id, "name": TARGET_PRODUCT_NAME},
            "status": status,
        }
        if upgraded_date:
            line["upgradedDate"] = upgraded_date
        if state == "failed":
            line["errorDetails"] = _error_details(upgrade)
        line_items.append(line)
    body: dict[str, Any] = {
        "id": upgrade.id,
        "status": status,
        "productFamily": upgrade.product_family,
        "lineItems": line_items,
    }
    if state == "failed":
        body["errorDetails"] = _error_details(upgrade)
    return body


def upgrade_status(request: Request, state: SandboxState, upgrade_id: str) -> Response:
    """``POST /v1/productUpgrades/{id}/status`` (and ``/{id}``): ProductUpgradesStatus; each call is a poll."""
    parsed = _authorized_upgrade_request(request, state)
    if isinstance(parsed, Response):
        return parsed
    customer_id, _family = parsed
    with state.upgrades.lock:
        upgrade = state.upgrades.get(upgrade_id)
        if upgrade is None:
            return error(request, 404, 900106, "No upgrade request was found")
        if upgrade.customer_id.lower() != customer_id.lower():
            mapped = state.upgrades.latest_for(customer_id)
            if mapped is None:
                return error(request, 404, 900106, "No upgrade request was found")
            return error(
                request,
                400,
                900111,
                f"The upgrade ID provided doesn't belong to customer {customer_id}. The customer is mapped to "
                f"upgrade ID {mapped.id}",
            )
        upgrade.poll()
        body = status_body(upgrade)
    return Response.json(200, body, tracing_headers(request))


def throttled(request: Request, retry_after_seconds: int) -> Response:
    """Over the partner's rate (``state.throttle``): 429, Retry-After and Partner Center's own body."""
    seconds = str(retry_after_seconds)
    return Response.json(429, throttled_error(seconds), {**tracing_headers(request), "Retry-After": seconds})


def fault_response(request: Request, action: FaultAction, state: SandboxState) -> Response:
    """An injected error: 429 uses the throttling body, everything else the code/description shape."""
    extra = {"Retry-After": action.retry_after} if action.retry_after else None
    if action.status == 429:
        return Response.json(429, throttled_error(action.retry_after), {**tracing_headers(request), **(extra or {})})
    default_code = 800003 if action.status >= 500 else 800002
    code = int(action.params.get("code", default_code))
    description = str(
        action.params.get("description")
        or ("Unexpected service error" if action.status >= 500 else "Invalid request input")
    )
    return error(request, action.status, code, description, extra)
