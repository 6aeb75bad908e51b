"""HTTP handlers of transition campaigns (issue 19; rules in `shared.upgrade_requests.campaigns`).

- `POST campaigns` (Submit): `202` + `Location: /api/campaigns/{campaignId}`; bad input is a `400`
  naming what is wrong, with nothing stored.
- `GET campaigns?top=&continuationToken=` (Read): newest first, `nextLink` while there are more.
- `GET campaigns/{campaignId}` (Read): counts by member state, pace asked and achieved over the
  last hour, the time the rest will take at that pace, the last throttling.
- `POST campaigns/{campaignId}/start|pause|resume|cancel` (Submit): `200` the campaign, `409`
  when the campaign's state does not allow it.
- `GET campaigns/{campaignId}/members?state=&top=&continuationToken=` (Read).
- `GET campaigns/{campaignId}/report` (Read): one row per member, CSV, or JSON with
  `Accept: application/json`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import azure.functions as func

from shared.api.caller_auth import Role, current_caller, requires
from shared.api.campaign_routes import next_link, page_size, query_parameters
from shared.api.campaign_wiring import campaign_store
from shared.api.responses import json_response
from shared.api.upgrade_routes import handled
from shared.correlation import RESPONSE_CORRELATION_HEADER
from shared.errors import InvalidRequest
from shared.identifiers import GUID_PATTERN
from shared.runtime import get_settings
from shared.upgrade_requests.campaigns import pace, steering
from shared.upgrade_requests.campaigns.model import (
    ELIGIBLE,
    MEMBER_FINAL,
    MEMBER_STATES,
    PENDING,
    READY,
    RUNNING,
    Campaign,
    Member,
    iso,
)
from shared.upgrade_requests.record import utc_now
from shared.validation import read_json_object

_LIST_TOKEN = re.compile(rf"^\d{{10}}\|{GUID_PATTERN}$", re.ASCII)
_MEMBER_TOKEN = re.compile(rf"^m\|{GUID_PATTERN}$", re.ASCII)
REPORT_FIELDS = (
    "customerId",
    "eligibility",
    "reason",
    "requestId",
    "upgradeId",
    "finalState",
    "state",
    "assessedAt",
    "requestedAt",
    "finishedAt",
    "attempts",
    "lastError",
)


@handled
@requires(Role.SUBMIT)
def create_campaign(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    settings = get_settings()
    max_bytes = create_body_limit(settings.campaign_max_members)
    document = read_json_object(req.headers, req.get_body(), steering.CREATE_FIELDS, max_bytes)
    new = steering.new_campaign(
        document,
        max_members=settings.campaign_max_members,
        default_per_hour=settings.campaign_default_per_hour,
        requested_by=current_caller().requested_by,
    )
    stored = steering.create(campaign_store(), new)
    body = campaign_view(stored.campaign, app_root(req))
    body["duplicatesIgnored"] = new.duplicates
    return json_response(body, 202, correlation_id, {"Location": campaign_url(req, stored.campaign.campaign_id)})


@handled
@requires(Role.READ)
def list_campaigns(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    query = query_parameters(req, ("top", "continuationToken"))
    top = page_size(query.get("top"))
    token = _token(query, _LIST_TOKEN)
    campaigns, after = campaign_store().list_page(top, token)
    body: dict[str, Any] = {"value": [campaign_view(campaign, app_root(req)) for campaign in campaigns]}
    if after:
        body["nextLink"] = next_link(req, after)
    return json_response(body, 200, correlation_id)


@handled
@requires(Role.READ)
def get_campaign(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    query_parameters(req, ())
    stored = steering.get(campaign_store(), _campaign_id(req))
    return json_response(campaign_view(stored.campaign, app_root(req)), 200, correlation_id)


def _action(req: func.HttpRequest, correlation_id: str, action: str) -> func.HttpResponse:
    body = req.get_body()
    if body.strip():
        read_json_object(req.headers, body, ())
    campaign = steering.act(campaign_store(), _campaign_id(req), action)
    return json_response(campaign_view(campaign, app_root(req)), 200, correlation_id)


@handled
@requires(Role.SUBMIT)
def start_campaign(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    return _action(req, correlation_id, "start")


@handled
@requires(Role.SUBMIT)
def pause_campaign(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    return _action(req, correlation_id, "pause")


@handled
@requires(Role.SUBMIT)
def resume_campaign(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    return _action(req, correlation_id, "resume")


@handled
@requires(Role.SUBMIT)
def cancel_campaign(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    return _action(req, correlation_id, "cancel")


@handled
@requires(Role.READ)
def list_members(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    query = query_parameters(req, ("state", "top", "continuationToken"))
    campaign_id = _campaign_id(req)
    states = query.get("state") or []
    state = states[-1].strip().lower() if states else None
    if state is not None and state not in MEMBER_STATES:
        raise InvalidRequest(f"state must be one of: {', '.join(MEMBER_STATES)}", extensions={"parameter": "state"})
    store = campaign_store()
    steering.get(store, campaign_id)
    members, after = store.members_page(campaign_id, state, page_size(query.get("top")), _token(query, _MEMBER_TOKEN))
    body: dict[str, Any] = {"value": [member.public_view() for member in members]}
    if after:
        body["nextLink"] = next_link(req, after)
    return json_response(body, 200, correlation_id)


@handled
@requires(Role.READ)
def campaign_report(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    query_parameters(req, ())
    campaign_id = _campaign_id(req)
    store = campaign_store()
    steering.get(store, campaign_id)
    as_json = "application/json" in (req.headers.get("accept") or "").lower()
    rows = (report_row(member) for member in store.all_members(campaign_id))
    body = "".join(json_lines(rows) if as_json else csv_lines(rows))
    return func.HttpResponse(
        body,
        status_code=200,
        headers={
            RESPONSE_CORRELATION_HEADER: correlation_id,
            "Content-Disposition": f'attachment; filename="campaign-{campaign_id}.{"json" if as_json else "csv"}"',
        },
        mimetype="application/json" if as_json else "text/csv",
        charset="utf-8",
    )


# --- views -----------------------------------------------------------------------------------------


def campaign_view(campaign: Campaign, root: str = "") -> dict[str, Any]:
    """The campaign as the API shows it; its URLs under `root` (scheme and host; "" for the CLI)."""
    now = utc_now()
    counts = {state: campaign.count(state) for state in MEMBER_STATES}
    done = sum(counts[state] for state in MEMBER_FINAL)
    achieved = pace.achieved_last_hour(campaign, now)
    allowed = pace.rate(campaign)
    left = counts[PENDING] + (counts[ELIGIBLE] if campaign.state in (READY, RUNNING) else 0)
    if not campaign.discovery_done:
        left += 1  # at least one more page of the listing
    at = achieved or allowed
    url = f"{root}/api/campaigns/{campaign.campaign_id}"
    p = campaign.pace
    return {
        "campaignId": campaign.campaign_id,
        "name": campaign.name,
        "productFamily": campaign.product_family,
        "source": campaign.source,
        "companyNamePrefix": campaign.company_name_prefix,
        "state": campaign.state,
        "perHour": campaign.per_hour,
        "notBefore": iso(campaign.not_before),
        "autoStart": campaign.auto_start,
        "requestedBy": campaign.requested_by.public_view() if campaign.requested_by else None,
        "createdAt": iso(campaign.created_at),
        "updatedAt": iso(campaign.updated_at),
        "finishedAt": iso(campaign.finished_at),
        "members": campaign.members,
        "counts": counts,
        "progress": {
            "done": done,
            "total": campaign.members,
            "percent": round(100.0 * done / campaign.members, 1) if campaign.members else 0.0,
        },
        "pace": {
            "askedPerHour": campaign.per_hour,
            "allowedPerHour": round(allowed, 1),
            "achievedLastHour": achieved,
            "nextCallAt": iso(p.next_at),
            "calls": p.calls,
        },
        "remainingCalls": left,
        "remainingSeconds": round(left * 3600.0 / at) if at else None,
        "throttling": {
            "throttles": p.throttles,
            "lastThrottledAt": iso(p.last_throttled_at),
            "lastRetryAfterSeconds": p.last_retry_after,
            "pausedUntil": iso(p.throttled_until) if p.throttled_until and p.throttled_until > now else None,
        },
        "discovery": {"done": campaign.discovery_done, "pages": campaign.discovery_pages},
        "lastError": campaign.last_error,
        "statusUrl": url,
        "membersUrl": url + "/members",
        "reportUrl": url + "/report",
    }


def report_row(member: Member) -> dict[str, Any]:
    view = member.public_view()
    if member.assessed_at is None and member.state in (PENDING, "cancelled"):
        eligibility = "not-assessed"
    elif member.state in ("ineligible", "already-upgraded", "assessment-failed"):
        eligibility = member.state
    else:
        eligibility = "eligible"
    return {
        "customerId": member.customer_id,
        "eligibility": eligibility,
        "reason": member.reason,
        "requestId": member.request_id,
        "upgradeId": member.upgrade_id,
        "finalState": member.state if member.state in MEMBER_FINAL else None,
        "state": member.state,
        "assessedAt": view["assessedAt"],
        "requestedAt": view["requestedAt"],
        "finishedAt": view["finishedAt"],
        "attempts": member.attempts,
        "lastError": member.last_error,
    }


def csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def json_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield '{"value":['
    for index, row in enumerate(rows):
        yield ("," if index else "") + json.dumps(row, separators=(",", ":"))
    yield "]}"


# --- query helpers ---------------------------------------------------------------------------------


def app_root(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def campaign_url(req: func.HttpRequest, campaign_id: str) -> str:
    return str(urljoin(req.url, f"/api/campaigns/{campaign_id}"))


def _campaign_id(req: func.HttpRequest) -> str:
    value = (req.route_params.get("campaignId") or "").strip().lower()
    return value


def _token(query: dict[str, list[str]], pattern: re.Pattern[str]) -> str | None:
    values = query.get("continuationToken")
    if not values:
        return None
    if not pattern.match(values[-1]):
        raise InvalidRequest(
            "continuationToken is not valid: take it from nextLink", extensions={"parameter": "continuationToken"}
        )
    return values[-1].lower()


def create_body_limit(max_members: int) -> int:
    """A create's body may list `max_members` GUIDs (about 40 bytes each in JSON) and its options."""
    return 64 * 1024 + 40 * max_members
