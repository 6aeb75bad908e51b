"""The function app's table of contents: each trigger and route, calling into `shared/`.

Every function here is a few lines; the logic lives in `shared/` (see README "Code map").
"""

import azure.functions as func

from shared.api import campaign_routes, campaigns, request_routes, timer_trigger, upgrade_routes
from shared.api.caller_auth import host_auth_level
from shared.settings import PENDING_SCHEDULE_BINDING
from shared.telemetry.setup import configure as configure_telemetry

# Application Insights through OpenTelemetry when APPLICATIONINSIGHTS_CONNECTION_STRING is set (Azure);
# otherwise nothing is set up or sent (docs/operating.md, "Telemetry").
configure_telemetry()

# FUNCTION (a function key at the host) only with CALLER_AUTH=function-key; otherwise ANONYMOUS and
# each route checks the caller's Entra token and app role itself (see shared/api/caller_auth.py).
app = func.FunctionApp(http_auth_level=host_auth_level())


@app.function_name("submit_product_upgrade")
@app.route(route="product-upgrades", methods=["POST"])
def submit_product_upgrade(req: func.HttpRequest) -> func.HttpResponse:
    """Store an upgrade request and submit it to Partner Center (or queue it: Prefer: respond-async)."""
    return request_routes.submit_request(req)


@app.function_name("list_product_upgrade_requests")
@app.route(route="product-upgrade-requests", methods=["GET"])
def list_product_upgrade_requests(req: func.HttpRequest) -> func.HttpResponse:
    """Stored requests by state, customer and creation time, a page at a time (nextLink)."""
    return campaign_routes.list_requests(req)


@app.function_name("get_product_upgrade_request_summary")
@app.route(route="product-upgrade-requests/summary", methods=["GET"])
def get_product_upgrade_request_summary(req: func.HttpRequest) -> func.HttpResponse:
    """Counts by state and by last error, and the oldest pending request's age (dashboards)."""
    return campaign_routes.summary(req)


@app.function_name("cancel_product_upgrade_request")
@app.route(route="product-upgrade-requests/{requestId}/cancel", methods=["POST"])
def cancel_product_upgrade_request(req: func.HttpRequest) -> func.HttpResponse:
    """Cancel a request that has not sent a create yet (409 once one may have been sent)."""
    return campaign_routes.cancel_request(req)


@app.function_name("retry_product_upgrade_request")
@app.route(route="product-upgrade-requests/{requestId}/retry", methods=["POST"])
def retry_product_upgrade_request(req: func.HttpRequest) -> func.HttpResponse:
    """Accept a failed (or, with force, rejected) request again, under the exactly-once rules."""
    return campaign_routes.retry_request(req)


@app.function_name("get_product_upgrade_request")
@app.route(route="product-upgrade-requests/{requestId}", methods=["GET"])
def get_product_upgrade_request(req: func.HttpRequest) -> func.HttpResponse:
    """One upgrade request: 202 + Retry-After while it is not final, 200 once it is."""
    return request_routes.get_request(req)


@app.function_name("put_product_upgrade_callback")
@app.route(route="product-upgrade-requests/{requestId}/callback", methods=["PUT"])
def put_product_upgrade_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Subscribe: POST the final record, signed, to this URL when the request completes."""
    return request_routes.put_callback(req)


@app.function_name("delete_product_upgrade_callback")
@app.route(route="product-upgrade-requests/{requestId}/callback", methods=["DELETE"])
def delete_product_upgrade_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Unsubscribe the request's completion callback."""
    return request_routes.delete_callback(req)


@app.function_name("check_product_upgrade_eligibility")
@app.route(route="product-upgrades/eligibility", methods=["POST"])
def check_product_upgrade_eligibility(req: func.HttpRequest) -> func.HttpResponse:
    """Can this customer be upgraded, and if not, why (or which upgrade is already in place)."""
    return upgrade_routes.check_eligibility(req)


@app.function_name("get_product_upgrade_status")
@app.route(route="product-upgrades/{upgradeId}", methods=["GET"])
def get_product_upgrade_status(req: func.HttpRequest) -> func.HttpResponse:
    """Partner Center's status of an upgrade (status and line items)."""
    return upgrade_routes.get_upgrade_status(req)


@app.function_name("create_campaign")
@app.route(route="campaigns", methods=["POST"])
def create_campaign(req: func.HttpRequest) -> func.HttpResponse:
    """A transition campaign: its customers (or Partner Center's list), assessed then started, paced."""
    return campaigns.create_campaign(req)


@app.function_name("list_campaigns")
@app.route(route="campaigns", methods=["GET"])
def list_campaigns(req: func.HttpRequest) -> func.HttpResponse:
    """Campaigns, newest first, a page at a time (nextLink)."""
    return campaigns.list_campaigns(req)


@app.function_name("get_campaign")
@app.route(route="campaigns/{campaignId}", methods=["GET"])
def get_campaign(req: func.HttpRequest) -> func.HttpResponse:
    """A campaign: counts by member state, pace asked and achieved, time left, last throttling."""
    return campaigns.get_campaign(req)


@app.function_name("start_campaign")
@app.route(route="campaigns/{campaignId}/start", methods=["POST"])
def start_campaign(req: func.HttpRequest) -> func.HttpResponse:
    """Request the upgrade of every eligible member, at the campaign's pace."""
    return campaigns.start_campaign(req)


@app.function_name("pause_campaign")
@app.route(route="campaigns/{campaignId}/pause", methods=["POST"])
def pause_campaign(req: func.HttpRequest) -> func.HttpResponse:
    """Send nothing new (requests already made finish)."""
    return campaigns.pause_campaign(req)


@app.function_name("resume_campaign")
@app.route(route="campaigns/{campaignId}/resume", methods=["POST"])
def resume_campaign(req: func.HttpRequest) -> func.HttpResponse:
    """Go on from where the campaign was paused."""
    return campaigns.resume_campaign(req)


@app.function_name("cancel_campaign")
@app.route(route="campaigns/{campaignId}/cancel", methods=["POST"])
def cancel_campaign(req: func.HttpRequest) -> func.HttpResponse:
    """Members not requested yet become cancelled; requests already made finish."""
    return campaigns.cancel_campaign(req)


@app.function_name("list_campaign_members")
@app.route(route="campaigns/{campaignId}/members", methods=["GET"])
def list_campaign_members(req: func.HttpRequest) -> func.HttpResponse:
    """A campaign's members (by state), a page at a time (nextLink)."""
    return campaigns.list_members(req)


@app.function_name("get_campaign_report")
@app.route(route="campaigns/{campaignId}/report", methods=["GET"])
def get_campaign_report(req: func.HttpRequest) -> func.HttpResponse:
    """One row per member: eligibility, reason, request, upgrade, final state, times (CSV or JSON)."""
    return campaigns.campaign_report(req)


@app.function_name("process_pending_requests")
# "%PENDING_SCHEDULE%": the host reads the app setting when it loads the timer, so a bad value
# only stops the timer; indexing (and every HTTP route) never depends on it.
@app.timer_trigger(schedule=PENDING_SCHEDULE_BINDING, arg_name="timer", run_on_startup=False, use_monitor=True)
def process_pending_requests(timer: func.TimerRequest, context: func.Context) -> None:
    """Submit pending requests, resolve interrupted ones, poll submitted upgrades until final."""
    timer_trigger.process_pending(timer, context)
