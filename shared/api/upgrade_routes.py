"""HTTP handlers for Partner Center's own views: an upgrade's status, a customer's eligibility.

(Accepting upgrade requests is in `request_api`.) Shared here: `handled`, the wrapper that gives
every handler a correlation id and turns every exception into problem+json.

Each handler takes the `func.HttpRequest` the Functions host gives and returns a
`func.HttpResponse`; `function_app.py` only wires routes to them. An `UpgradeError` becomes its
own status; anything else a 500 that says only "internal error" and the correlation id (the
details go to the log, never the body).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.api.caller_auth import Role, requires
from shared.api.responses import json_response, problem_response
from shared.correlation import CallContext, correlation_id_from, log_scope
from shared.deadlines import deadline
from shared.errors import ConfigurationError, UpgradeError
from shared.identifiers import new_guid
from shared.partner_center.exactly_once import final_state
from shared.runtime import get_runtime, get_settings
from shared.settings import HTTP_DEADLINE_SECONDS
from shared.telemetry import spans
from shared.validation import (
    DEFAULT_PRODUCT_FAMILY,
    UpgradeTarget,
    customer_id_value,
    product_family_value,
    read_json_object,
    upgrade_id_value,
    upgrade_target,
)

log = logging.getLogger(__name__)

UPGRADE_FIELDS = ("customerId", "productFamily")
ELIGIBILITY_FIELDS = ("customerId", "productFamily")

Handler = Callable[[func.HttpRequest, str], func.HttpResponse]


def handled(handler: Handler) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Give the handler a correlation id and turn every exception into problem+json."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        with log_scope(), spans.inbound_request(handler.__name__, req.method, req.url, req.headers) as span:
            response = _handle(handler, req)
            span.answered(response.status_code, response.headers)
            return response

    return wrapper


def _handle(handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
    correlation_id = new_guid()
    try:
        correlation_id = correlation_id_from(req.headers)
        # Every outbound call inside gets its share of HTTP_DEADLINE_SECONDS (shared.deadlines).
        with deadline(_http_deadline_seconds()):
            return handler(req, correlation_id)
    except UpgradeError as error:
        log.warning(
            "http.problem handler=%s status=%s type=%s correlation_id=%s detail=%s",
            handler.__name__,
            error.status,
            error.slug,
            correlation_id,
            error.detail,
        )
        return problem_response(error, correlation_id)
    except Exception:
        log.exception("http.internal_error handler=%s correlation_id=%s", handler.__name__, correlation_id)
        internal = UpgradeError(f"Internal error; quote correlation id {correlation_id} to the operators")
        return problem_response(internal, correlation_id)


def _http_deadline_seconds() -> int:
    """The configured deadline; the default while the settings are invalid (the handler then checks
    the caller first and answers the configuration problem, so no settings detail reaches a caller
    who is not allowed in)."""
    try:
        return get_settings().http_deadline_seconds
    except ConfigurationError:
        return int(HTTP_DEADLINE_SECONDS.default or 100)


@handled
@requires(Role.READ)
def get_upgrade_status(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """GET product-upgrades/{upgradeId}?customerId=...: Partner Center's status of the upgrade."""
    upgrade_id = upgrade_id_value(req.route_params.get("upgradeId"))
    target = UpgradeTarget(
        customer_id=customer_id_value(req.params.get("customerId"), "customerId"),
        product_family=product_family_value(req.params.get("productFamily", DEFAULT_PRODUCT_FAMILY)),
    )
    status = get_runtime().upgrades.status(upgrade_id, target, CallContext.new(correlation_id))
    return json_response(status_body(upgrade_id, target, status, correlation_id), 200, correlation_id)


@handled
@requires(Role.READ)
def check_eligibility(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """POST product-upgrades/eligibility: can this customer be upgraded, and if not, why."""
    target = upgrade_target(read_json_object(req.headers, req.get_body(), ELIGIBILITY_FIELDS))
    eligibility = get_runtime().upgrades.eligibility(target, CallContext.new(correlation_id))
    body = {**eligibility.public_view(), "correlationId": correlation_id}
    return json_response(body, 200, correlation_id)


def status_body(upgrade_id: str, target: UpgradeTarget, status: dict[str, Any], correlation_id: str) -> dict[str, Any]:
    """Our view of Partner Center's ProductUpgradesStatus: its fields plus a normalised `state`."""
    upstream_status = status.get("status")
    state = final_state(upstream_status if isinstance(upstream_status, str) else None) or "inProgress"
    return {
        "upgradeId": upgrade_id,
        "customerId": target.customer_id,
        "productFamily": status.get("productFamily") or target.product_family,
        "state": state,
        "status": upstream_status,
        "lineItems": status.get("lineItems") or [],
        "errorDetails": status.get("errorDetails"),
        "correlationId": correlation_id,
    }
