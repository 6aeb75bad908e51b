"""HTTP handlers for steering a campaign: list requests (paged), a summary for dashboards, and
cancel / retry one request (rules in `shared.upgrade_requests.campaign`).

- `GET product-upgrade-requests?state=&customerId=&createdFrom=&createdTo=&top=&continuationToken=`
  answers `200 {"value": [...records...], "nextLink": "<url>"}` (`nextLink` absent on the last
  page), the shape Power Automate pages through by itself (`x-ms-pageable`).
- `GET product-upgrade-requests/summary`: counts by state and by last error, oldest pending age.
- `POST product-upgrade-requests/{requestId}/cancel` and `.../retry` (`{"force": true}` optional).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import azure.functions as func

from shared.api.caller_auth import Role, requires
from shared.api.request_routes import record_response, request_url
from shared.api.responses import json_response
from shared.api.upgrade_routes import handled
from shared.errors import InvalidRequest
from shared.runtime import get_runtime
from shared.upgrade_requests.campaign import cancel, retry
from shared.upgrade_requests.record import ALL_STATES, utc_now
from shared.upgrade_requests.store import MAX_PAGE, ListFilter
from shared.validation import customer_id_value, read_json_object, refuse_unknown, upgrade_id_value

DEFAULT_PAGE = 100
SUMMARY_DEFAULT_DAYS = 30
LIST_PARAMETERS = ("state", "customerId", "createdFrom", "createdTo", "top", "continuationToken")
SUMMARY_PARAMETERS = ("createdFrom", "createdTo")


@handled
@requires(Role.READ)
def list_requests(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """GET product-upgrade-requests: one page of stored requests matching the filters."""
    query = query_parameters(req, LIST_PARAMETERS)
    selection = list_filter(query)
    top = page_size(query.get("top"))
    tokens = query.get("continuationToken") or []
    token = tokens[-1] if tokens else None
    page = get_runtime().store.list_page(selection, top, token)
    body: dict[str, Any] = {"value": [_listed(record.public_view(), req) for record in page.records]}
    if page.continuation_token:
        body["nextLink"] = next_link(req, page.continuation_token)
    return json_response(body, 200, correlation_id)


@handled
@requires(Role.READ)
def summary(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """GET product-upgrade-requests/summary: counts by state and last error, oldest pending age."""
    query = query_parameters(req, SUMMARY_PARAMETERS)
    created_from = _time(query, "createdFrom") or utc_now() - timedelta(days=SUMMARY_DEFAULT_DAYS)
    created_to = _time(query, "createdTo")
    _check_window(created_from, created_to)
    return json_response(summary_body(get_runtime().store, created_from, created_to, utc_now()), 200, correlation_id)


def summary_body(store: Any, created_from: datetime, created_to: datetime | None, now: datetime) -> dict[str, Any]:
    """The summary's JSON, the same for the route and `cli summary`."""
    result = store.summary(created_from, created_to)
    oldest = result.oldest_pending_created_at
    return {
        "byState": result.by_state,
        "byLastErrorType": result.by_error,
        "byPartnerCenterErrorCode": result.by_partner_center_error,
        "oldestPendingCreatedAt": _iso(oldest),
        "oldestPendingAgeSeconds": None if oldest is None else int((now - oldest).total_seconds()),
        "finalCreatedFrom": _iso(created_from),
        "finalCreatedTo": _iso(created_to),
    }


@handled
@requires(Role.SUBMIT)
def cancel_request(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """POST product-upgrade-requests/{requestId}/cancel: cancel a request that never sent a create."""
    request_id = upgrade_id_value(req.route_params.get("requestId"), field="requestId")
    _optional_body(req, ())
    stored = cancel(get_runtime(), request_id)
    return record_response(stored.record, req, correlation_id, {"Location": request_url(req, request_id)})


@handled
@requires(Role.SUBMIT)
def retry_request(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    """POST product-upgrade-requests/{requestId}/retry: accept a failed (or, forced, rejected) request again."""
    request_id = upgrade_id_value(req.route_params.get("requestId"), field="requestId")
    document = _optional_body(req, ("force",))
    force = document.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest("force must be true or false", extensions={"field": "force"})
    stored = retry(get_runtime(), request_id, force=force)
    return record_response(stored.record, req, correlation_id)


def list_filter(query: dict[str, list[str]]) -> ListFilter:
    """The list's filters from its query parameters (repeated or comma-separated states)."""
    states: list[str] = []
    for value in query.get("state") or []:
        for state in value.split(","):
            state = state.strip().lower()
            if state not in ALL_STATES:
                raise InvalidRequest(
                    f"state must be one or more of: {', '.join(ALL_STATES)}",
                    extensions={"parameter": "state"},
                )
            if state not in states:
                states.append(state)
    customers = query.get("customerId") or []
    if len(customers) > 1:
        raise InvalidRequest("customerId may be given once", extensions={"parameter": "customerId"})
    customer_id = customer_id_value(customers[0], "customerId") if customers else None
    created_from, created_to = _time(query, "createdFrom"), _time(query, "createdTo")
    _check_window(created_from, created_to)
    return ListFilter(tuple(states), customer_id, created_from, created_to)


def query_parameters(req: func.HttpRequest, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """Every query parameter with all its values (a repeated `state` keeps each); unknown names
    are refused so a misspelt filter never silently lists everything."""
    query = parse_qs(urlsplit(req.url).query, keep_blank_values=True)
    for name, value in req.params.items():
        query.setdefault(name, [value])
    query.pop("code", None)  # the function key, when sent in the query
    refuse_unknown(query, "query parameter(s)", {"allowedParameters": list(allowed)})
    return query


def page_size(values: list[str] | None) -> int:
    """`top`: 1-MAX_PAGE, DEFAULT_PAGE when absent (every paged route: requests, campaigns, members)."""
    if not values:
        return DEFAULT_PAGE
    value = values[-1]
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidRequest(f"top must be a whole number from 1 to {MAX_PAGE}", extensions={"parameter": "top"})
    return int(value)


def _time(query: dict[str, list[str]], name: str) -> datetime | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = datetime.fromisoformat(values[-1].strip())
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an ISO 8601 date-time like 2026-11-01T00:00:00Z", extensions={"parameter": name}
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not 2000 <= value.year <= 9000:
        raise InvalidRequest(f"{name} is out of range", extensions={"parameter": name})
    return value.astimezone(UTC)


def _check_window(created_from: datetime | None, created_to: datetime | None) -> None:
    if created_from and created_to and created_to <= created_from:
        raise InvalidRequest("createdTo must be after createdFrom", extensions={"parameter": "createdTo"})


def _optional_body(req: func.HttpRequest, allowed: tuple[str, ...]) -> dict[str, Any]:
    body = req.get_body()
    if not body.strip():
        return {}
    return read_json_object(req.headers, body, allowed)


def _listed(view: dict[str, Any], req: func.HttpRequest) -> dict[str, Any]:
    view["statusUrl"] = request_url(req, view["requestId"])
    return view


def next_link(req: func.HttpRequest, token: str) -> str:
    """The request's own URL with `continuationToken` replaced: every filter carries over."""
    parts = urlsplit(req.url)
    query = [(k, v) for k, v in parse_qs(parts.query, keep_blank_values=True).items() if k != "continuationToken"]
    pairs = [(k, value) for k, values in query for value in values] + [("continuationToken", token)]
    return str(urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(pairs), "")))


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
