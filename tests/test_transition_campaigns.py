"""Transition campaigns (issue 19) through the HTTP functions, the timer, the sandbox's Partner
Center and Azurite: creation and its validation, assessment, start, following requests to the
end, steering, the report, discovery, pacing and 429s, crashes between writes, and the reads of
a timer run following its work, not the campaign's size."""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from shared.api.campaign_wiring import campaign_runner, campaign_store
from shared.cli import exit_codes
from shared.errors import StorageUnavailable
from shared.runtime import get_runtime, reset_runtime
from shared.upgrade_requests.campaigns import runner as runner_module
from shared.upgrade_requests.campaigns.runner import CampaignRunner
from shared.upgrade_requests.processor import RequestProcessor
from shared.upgrade_requests.record import utc_now
from shared.upgrade_requests.store.campaigns import CampaignStore
from shared.upgrade_requests.timer_run import process_pending

from .conftest import Api
from .test_campaign import Crash, TableEdge, run_timer

FAST = 36000  # the fastest pace: one call every 0.1 s


@pytest.fixture(autouse=True)
def follow_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Members look at their request on every run (production: every 30 s)."""
    monkeypatch.setattr(runner_module, "FOLLOW_SECONDS", 0.0)


@pytest.fixture(autouse=True)
def throttle_off(sandbox):
    sandbox.set_throttle(None)
    yield
    sandbox.set_throttle(None)


def guids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def create(api: Api, body: dict[str, Any]) -> Any:
    return api.call("create_campaign", "POST", "campaigns", json_body=body)


def show(api: Api, campaign_id: str) -> Any:
    return api.call("get_campaign", "GET", f"campaigns/{campaign_id}", route_params={"campaignId": campaign_id})


def act(api: Api, campaign_id: str, action: str) -> Any:
    return api.call(
        f"{action}_campaign", "POST", f"campaigns/{campaign_id}/{action}", route_params={"campaignId": campaign_id}
    )


def members(api: Api, campaign_id: str, **params: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return api.call(
        "list_campaign_members",
        "GET",
        f"campaigns/{campaign_id}/members" + (f"?{query}" if query else ""),
        route_params={"campaignId": campaign_id},
    )


def report(api: Api, campaign_id: str, accept: str | None = None) -> Any:
    return api.call(
        "get_campaign_report",
        "GET",
        f"campaigns/{campaign_id}/report",
        route_params={"campaignId": campaign_id},
        headers={"Accept": accept} if accept else None,
    )


def new_campaign(api: Api, customers: list[str], **extra: Any) -> str:
    reply = create(api, {"name": "wave 1", "productFamily": "Azure", "customers": customers, "perHour": FAST, **extra})
    assert reply.status == 202, reply.body
    return reply.json()["campaignId"]


def run_campaigns(max_steps: int | None = None, seconds: float = 60.0) -> dict[str, Any]:
    return campaign_runner().run(time.monotonic() + seconds, max_steps).as_dict()


def run_until_done(api: Api, *campaign_ids: str, rounds: int = 8) -> None:
    """Timer runs (requests and campaigns), each as if status polls were due: the requests'
    processor sees a clock that has moved on by a poll interval per round."""
    runtime = get_runtime()
    for n in range(1, rounds + 1):
        later = n * (runtime.settings.status_poll_seconds + 1)
        processor = RequestProcessor(
            runtime.store,
            runtime.upgrades,
            runtime.processor.policy,
            clock=lambda later=later: utc_now() + timedelta(seconds=later),
        )
        process_pending(
            processor,
            owner="timer",
            concurrency=2,
            budget_seconds=30,
            campaigns=lambda until: campaign_runner().run(until).as_dict(),
        )
        if all(show(api, c).json()["state"] in ("complete", "cancelled") and not _open(api, c) for c in campaign_ids):
            return


def _open(api: Api, campaign_id: str) -> int:
    counts = show(api, campaign_id).json()["counts"]
    return counts["pending"] + counts["eligible"] + counts["requested"]


def campaign_entities() -> list[Any]:
    table = get_runtime().store._table
    return [e for e in table.query_entities("PartitionKey ge 'c' and PartitionKey lt 'd'")]


# --- creation ----------------------------------------------------------------------------------


def test_create_answers_202_with_location_and_counts_duplicates_once(api: Api):
    customers = guids(5)
    reply = create(
        api,
        {"name": "wave 1", "productFamily": "Azure", "customers": [*customers, customers[0].upper(), customers[1]]},
    )
    assert reply.status == 202, reply.body
    body = reply.json()
    assert reply.headers["location"].endswith(f"/api/campaigns/{body['campaignId']}")
    assert body["duplicatesIgnored"] == 2 and body["members"] == 5
    assert body["state"] == "assessing" and body["perHour"] == 600 and body["autoStart"] is False
    assert body["requestedBy"]["authMethod"] == "function-key"
    shown = show(api, body["campaignId"]).json()
    assert shown["counts"]["pending"] == 5 and shown["progress"] == {"done": 0, "total": 5, "percent": 0.0}
    listed = api.call("list_campaigns", "GET", "campaigns").json()
    assert [c["campaignId"] for c in listed["value"]] == [body["campaignId"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "customers": ["not-a-guid", "also bad"]}, "customers"),
        ({"name": "x", "customers": []}, "customers"),
        ({"name": "x", "customers": ["00000000-0000-0000-0000-000000000001"], "perHour": 0}, "perHour"),
        ({"name": "x", "customers": ["00000000-0000-0000-0000-000000000001"], "perHour": 36001}, "perHour"),
        ({"name": "x", "customers": ["00000000-0000-0000-0000-000000000001"], "notBefore": "soon"}, "notBefore"),
        ({"name": "x", "customers": ["00000000-0000-0000-0000-000000000001"], "autoStart": "yes"}, "autoStart"),
        ({"name": "x", "source": "partner-center", "customers": ["00000000-0000-0000-0000-000000000001"]}, "customers"),
        ({"name": "", "customers": ["00000000-0000-0000-0000-000000000001"]}, "name"),
        ({"name": "x"}, "source"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_stores_nothing(api: Api, body, field):
    reply = create(api, body)
    assert reply.status == 400, reply.body
    assert reply.json()["field"] == field
    assert campaign_entities() == []


def test_unknown_fields_and_too_many_members_are_400_with_nothing_stored(api: Api, monkeypatch):
    reply = create(api, {"name": "x", "customers": guids(1), "customer": "typo"})
    assert reply.status == 400 and "customer" in reply.json()["detail"]
    monkeypatch.setenv("CAMPAIGN_MAX_MEMBERS", "3")
    from shared.runtime import reset_runtime

    reset_runtime()
    reply = create(api, {"name": "x", "customers": guids(4)})
    assert reply.status == 400 and reply.json()["maxMembers"] == 3
    assert campaign_entities() == []


def test_not_guids_lists_the_first_20(api: Api):
    reply = create(api, {"name": "x", "customers": [f"bad-{i}" for i in range(30)] + guids(2)})
    problem = reply.json()
    assert reply.status == 400 and problem["invalidCount"] == 30
    assert [item["index"] for item in problem["invalid"]] == list(range(20))


def test_unknown_campaign_is_404(api: Api):
    missing = str(uuid.uuid4())
    assert show(api, missing).status == 404
    assert act(api, missing, "start").status == 404
    assert report(api, missing).status == 404
    assert show(api, "not-a-guid").status == 404


# --- assessment, start, follow, complete ---------------------------------------------------------


def seed(sandbox) -> tuple[str, str, str]:
    eligible, ineligible, upgraded = guids(3)
    sandbox.customers.set(ineligible, eligible=False, reason="Customer has no Azure subscriptions.")
    sandbox.customers.set(upgraded, existing_upgrade=True)
    return eligible, ineligible, upgraded


def test_a_campaign_from_assessment_to_complete(api: Api, sandbox):
    eligible, ineligible, upgraded = seed(sandbox)
    campaign_id = new_campaign(api, [eligible, ineligible, upgraded])

    run_timer()
    body = show(api, campaign_id).json()
    assert body["state"] == "ready", body
    assert {k: v for k, v in body["counts"].items() if v} == {"eligible": 1, "ineligible": 1, "already-upgraded": 1}
    assert len(sandbox.calls("partner_center", "eligibility")) == 3
    assert body["pace"]["achievedLastHour"] == 3
    by_customer = {m["customerId"]: m for m in members(api, campaign_id).json()["value"]}
    assert by_customer[ineligible]["reason"] == "Customer has no Azure subscriptions."
    assert by_customer[upgraded]["upgradeId"]

    assert act(api, campaign_id, "start").json()["state"] == "running"
    run_until_done(api, campaign_id)
    body = show(api, campaign_id).json()
    assert body["state"] == "complete", body
    assert body["counts"]["complete"] == 1 and body["progress"]["percent"] == 100.0
    member = {m["customerId"]: m for m in members(api, campaign_id).json()["value"]}[eligible]
    assert member["state"] == "complete" and member["upgradeId"] and member["requestId"]
    request = api.request_status(member["requestId"]).json()
    assert request["status"] == "complete" and request["requestedBy"]["authMethod"] == "function-key"
    assert sandbox.submissions(eligible) == 1
    assert sandbox.submissions(ineligible) == 0 and sandbox.submissions(upgraded) == 0
    # finished: the timer no longer reads it, and nothing steers it any more
    assert campaign_store().active() == []
    for action in ("pause", "start", "resume", "cancel"):
        reply = act(api, campaign_id, action)
        assert reply.status == 409 and reply.json()["campaignState"] == "complete", (action, reply.body)


def test_auto_start_and_members_by_state(api: Api, sandbox):
    customers = guids(3)
    campaign_id = new_campaign(api, customers, autoStart=True)
    run_timer()
    assert show(api, campaign_id).json()["state"] == "running"
    page = members(api, campaign_id, top="2").json()
    assert len(page["value"]) == 2 and "continuationToken=m%7C" in page["nextLink"]
    assert len(members(api, campaign_id, state="eligible").json()["value"]) == 3
    assert members(api, campaign_id, state="bogus").status == 400


def test_a_customer_in_two_campaigns_gets_one_upgrade(api: Api, sandbox):
    customer = str(uuid.uuid4())
    first = new_campaign(api, [customer], autoStart=True)
    second = new_campaign(api, [customer, *guids(1)], autoStart=True)
    run_until_done(api, first, second)
    assert sandbox.submissions(customer) == 1
    states = {show(api, c).json()["state"] for c in (first, second)}
    assert states == {"complete"}
    ids = [
        {m["customerId"]: m for m in members(api, c).json()["value"]}[customer]["upgradeId"] for c in (first, second)
    ]
    assert ids[0] == ids[1]


# --- steering ------------------------------------------------------------------------------------


def test_start_pause_resume_cancel_rules(api: Api, sandbox):
    campaign_id = new_campaign(api, guids(2))
    reply = act(api, campaign_id, "start")
    assert reply.status == 409 and reply.json()["campaignState"] == "assessing"
    assert act(api, campaign_id, "resume").status == 409
    assert act(api, campaign_id, "pause").json()["state"] == "paused"
    run_timer()
    assert sandbox.calls("partner_center", "eligibility") == []  # nothing sent while paused
    assert act(api, campaign_id, "resume").json()["state"] == "assessing"
    run_timer()
    assert show(api, campaign_id).json()["state"] == "ready"
    assert act(api, campaign_id, "cancel").json()["state"] == "cancelled"
    assert act(api, campaign_id, "cancel").status == 200
    assert act(api, campaign_id, "pause").status == 409
    run_timer()
    body = show(api, campaign_id).json()
    assert body["counts"]["cancelled"] == 2 and body["counts"]["eligible"] == 0
    assert campaign_store().active() == []


def test_cancel_while_running_lets_requests_made_finish(api: Api, sandbox):
    customers = guids(4)
    campaign_id = new_campaign(api, customers, autoStart=True)
    run_campaigns()  # assessed, running
    run_campaigns(max_steps=2)  # two requests made
    assert act(api, campaign_id, "cancel").json()["state"] == "cancelled"
    run_until_done(api, campaign_id)
    body = show(api, campaign_id).json()
    assert body["counts"]["cancelled"] == 2 and body["counts"]["complete"] == 2, body
    assert sum(sandbox.submissions(c) for c in customers) == 2


def test_not_before_holds_every_call(api: Api, sandbox):
    campaign_id = new_campaign(api, guids(2), notBefore="2999-01-01T00:00:00Z")
    run_timer()
    assert sandbox.calls("partner_center", "eligibility") == []
    assert show(api, campaign_id).json()["notBefore"] == "2999-01-01T00:00:00Z"


# --- report --------------------------------------------------------------------------------------


def test_report_csv_by_default_and_json_when_asked(api: Api, sandbox):
    eligible, ineligible, upgraded = seed(sandbox)
    campaign_id = new_campaign(api, [eligible, ineligible, upgraded])
    run_timer()
    reply = report(api, campaign_id)
    assert reply.status == 200 and reply.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    assert {r["customerId"]: r["eligibility"] for r in rows} == {
        eligible: "eligible",
        ineligible: "ineligible",
        upgraded: "already-upgraded",
    }
    as_json = report(api, campaign_id, "application/json")
    assert as_json.content_type.startswith("application/json")
    assert len(as_json.json()["value"]) == 3


# --- discovery -----------------------------------------------------------------------------------


def test_partner_center_source_discovers_resumably_then_assesses(api: Api, sandbox):
    sandbox.seed_customers(700, random_seed=3)  # two pages of 500
    reply = create(api, {"name": "all", "source": "partner-center", "perHour": FAST})
    assert reply.status == 202, reply.body
    campaign_id = reply.json()["campaignId"]
    run_campaigns(max_steps=1)
    body = show(api, campaign_id).json()
    assert body["discovery"] == {"done": False, "pages": 1} and body["members"] == 500
    run_campaigns(max_steps=1)
    body = show(api, campaign_id).json()
    assert body["discovery"] == {"done": True, "pages": 2} and body["members"] == 700
    assert len(sandbox.calls("partner_center", "list_customers")) == 2
    run_campaigns(max_steps=5)
    assert len(sandbox.calls("partner_center", "eligibility")) == 5


def test_company_name_prefix_filters_the_listing(api: Api, sandbox):
    sandbox.seed_customers(50, random_seed=5)
    name = sandbox.listed_customers()[0].company_name
    reply = create(api, {"name": "one", "source": "partner-center", "companyNamePrefix": name, "perHour": FAST})
    campaign_id = reply.json()["campaignId"]
    run_campaigns(max_steps=1)
    expected = [p for p in sandbox.listed_customers() if p.company_name.lower().startswith(name.lower())]
    assert show(api, campaign_id).json()["members"] == len(expected)


# --- pacing and 429 ------------------------------------------------------------------------------


def test_calls_are_spread_at_the_pace_within_and_across_runs(api: Api, sandbox):
    reply = create(api, {"name": "paced", "customers": guids(6), "perHour": 3600})
    campaign_id = reply.json()["campaignId"]
    run_campaigns(seconds=2.5)
    run_campaigns(seconds=2.0)
    at = [call.at for call in sandbox.calls("partner_center", "eligibility")]
    assert 3 <= len(at) <= 5, at
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert min(gaps) >= 0.9, gaps
    assert show(api, campaign_id).json()["pace"]["achievedLastHour"] == len(at)


def test_a_429_pauses_for_its_retry_after_halves_the_rate_and_shows_in_get(api: Api, sandbox):
    campaign_id = new_campaign(api, guids(6))
    sandbox.set_throttle(2, window_seconds=60)  # two calls a minute, then 429 + Retry-After
    report_ = run_campaigns(seconds=3.0)
    assert report_["throttled"] >= 1
    body = show(api, campaign_id).json()
    assert body["throttling"]["throttles"] >= 1 and body["throttling"]["lastRetryAfterSeconds"] >= 1
    assert body["throttling"]["pausedUntil"] is not None
    assert body["pace"]["allowedPerHour"] <= FAST / 2
    assert body["counts"]["pending"] == 4  # the throttled member was not lost nor failed


# --- crashes and reads ---------------------------------------------------------------------------


def audit(campaign_id: str) -> dict[str, int]:
    """Members by state as stored, checked against the campaign's counts and queues."""
    store = campaign_store()
    stored = store.get(campaign_id)
    assert stored is not None
    by_state: dict[str, int] = {}
    for member in store.all_members(campaign_id):
        by_state[member.state] = by_state.get(member.state, 0) + 1
        if member.state in ("pending", "eligible", "requested"):
            assert member.queue_row, member
    counts = {k: v for k, v in stored.campaign.counts.items() if v}
    if stored.campaign.chunks_expanded >= stored.campaign.chunks:
        assert counts == by_state, (counts, by_state)
    return counts


def test_a_crash_before_any_write_of_a_run_loses_nothing(api: Api, sandbox):
    customers = guids(5)
    campaign_id = new_campaign(api, customers, autoStart=True)
    runtime = get_runtime()
    for crash_at in range(0, 40, 3):
        base = campaign_store()
        edge = TableEdge(base._table)
        edge.crash_before_write = crash_at
        crashing = CampaignRunner(CampaignStore(edge), runtime.store, runtime.intake, campaign_runner()._pc)
        crashed = ""
        try:
            crashing.run(time.monotonic() + 30)
        except (Crash, StorageUnavailable) as error:
            crashed = str(error)
        assert crashed == "" or "Crash" in crashed
        audit(campaign_id)
    run_until_done(api, campaign_id)
    assert show(api, campaign_id).json()["state"] == "complete"
    assert audit(campaign_id) == {"complete": 5}
    assert all(sandbox.submissions(c) == 1 for c in customers)


def test_a_crash_inside_create_leaves_nothing_visible(api: Api):
    from shared.upgrade_requests.campaigns import steering

    store = campaign_store()
    for crash_at in range(3):
        edge = TableEdge(store._table)
        edge.crash_before_write = crash_at
        new = steering.new_campaign(
            {"name": "x", "customers": guids(3)}, max_members=10, default_per_hour=600, requested_by=None
        )
        with pytest.raises((Crash, StorageUnavailable), match="Crash"):
            steering.create(CampaignStore(edge), new)
    assert api.call("list_campaigns", "GET", "campaigns").json()["value"] == []
    run_campaigns()  # the orphan active entries are young: kept, harmless


def reads_of_one_run(campaign_id: str, steps: int) -> int:
    runtime = get_runtime()
    edge = TableEdge(campaign_store()._table)
    runner = CampaignRunner(CampaignStore(edge), runtime.store, runtime.intake, campaign_runner()._pc)
    runner.run(time.monotonic() + 60, steps)
    return edge.returned + edge.calls.count("get_entity")


def test_a_run_reads_entities_for_its_work_not_the_campaign_size(api: Api, sandbox, monkeypatch):
    reads = {}
    for size in (1000, 10000):
        monkeypatch.setenv("UPGRADE_REQUESTS_TABLE", f"t{uuid.uuid4().hex[:20]}")  # each alone in its table
        reset_runtime()
        campaign_id = new_campaign(api, guids(size))
        reads_of_one_run(campaign_id, 10)  # the first run also expands a chunk of 1,000 ids
        reads[size] = reads_of_one_run(campaign_id, 10)
    print("entities read by a run of 10 calls:", reads)
    assert reads[1000] == reads[10000], reads
    assert reads[1000] <= 30, reads


# --- CLI -----------------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str]:
    from shared.cli.__main__ import main

    code = main(["--settings", "/nonexistent.json", *args])
    return code, capsys.readouterr().out


def test_cli_create_show_steer_report_and_exit_codes(api: Api, sandbox, capsys, tmp_path):
    eligible, ineligible, upgraded = seed(sandbox)
    listing = tmp_path / "customers.csv"
    listing.write_text(f"customerId,name\n{eligible},a\n{ineligible},b\n{upgraded},c\n{eligible},a again\n")
    code, out = cli(
        capsys, "--json", "campaign", "create", "--name", "cli", "--file", str(listing), "--per-hour", "36000"
    )
    created = json.loads(out)
    assert code == 0 and created["members"] == 3 and created["duplicatesIgnored"] == 1
    assert created["requestedBy"]["authMethod"] == "cli"
    campaign_id = created["campaignId"]
    assert cli(capsys, "campaign", "start", campaign_id)[0] == exit_codes.REFUSED  # 409: still assessing
    run_timer()
    code, out = cli(capsys, "campaign", "show", campaign_id)
    assert code == 0 and "ready" in out and "[" in out and "eligible 1" in out
    code, out = cli(capsys, "campaign", "list")
    assert code == 0 and campaign_id in out
    assert cli(capsys, "campaign", "start", campaign_id)[0] == 0
    run_until_done(api, campaign_id)
    code, out = cli(capsys, "campaign", "watch", campaign_id, "--once")
    assert code == 0 and "complete" in out
    report_file = tmp_path / "report.json"
    assert cli(capsys, "campaign", "report", campaign_id, "--output", str(report_file))[0] == 0
    rows = json.loads(report_file.read_text())["value"]
    assert {r["customerId"]: r["finalState"] for r in rows}[eligible] == "complete"
    code, out = cli(capsys, "campaign", "report", campaign_id)
    assert code == 0 and out.startswith("customerId,eligibility,")
    assert cli(capsys, "campaign", "show", str(uuid.uuid4()))[0] == exit_codes.REFUSED
    bad = tmp_path / "bad.csv"
    bad.write_text("customerId\nnot-a-guid\n")
    assert cli(capsys, "campaign", "create", "--name", "x", "--file", str(bad))[0] == exit_codes.USAGE


def test_eligibility_errors_are_retried_then_assessment_failed_with_the_error(api: Api, sandbox):
    flaky, refused = guids(2)
    sandbox.faults.add("eligibility", "status", count=3, status=500)  # a 5xx three times: one member
    campaign_id = new_campaign(api, [flaky])
    for _ in range(3):
        run_campaigns()
    member = members(api, campaign_id).json()["value"][0]
    assert member["state"] == "assessment-failed" and member["attempts"] == 3 and "500" in member["lastError"]
    sandbox.faults.add("eligibility", "status", count=1, status=404)  # a 4xx: failed at once
    second = new_campaign(api, [refused])
    run_campaigns()
    member = members(api, second).json()["value"][0]
    assert member["state"] == "assessment-failed" and member["attempts"] == 1
    assert show(api, second).json()["state"] == "ready"


def test_a_campaign_cancelled_while_discovering_stops_listing_and_ends(api: Api, sandbox):
    sandbox.seed_customers(700, random_seed=4)
    campaign_id = create(api, {"name": "all", "source": "partner-center", "perHour": FAST}).json()["campaignId"]
    run_campaigns(max_steps=1)
    assert act(api, campaign_id, "cancel").json()["state"] == "cancelled"
    run_campaigns()
    run_campaigns()
    body = show(api, campaign_id).json()
    assert body["counts"]["cancelled"] == 500 and body["discovery"]["done"] is True
    assert len(sandbox.calls("partner_center", "list_customers")) == 1
    assert campaign_store().active() == []


def test_pace_spacing_no_saved_up_burst_halving_and_linear_recovery():
    from datetime import UTC, datetime

    from shared.upgrade_requests.campaigns import pace
    from shared.upgrade_requests.campaigns.model import Campaign

    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    campaign = Campaign("c", "n", "Azure", "customers", 3600, "assessing", t0, t0)
    campaign = campaign.evolve(pace=pace.after_call(campaign, t0))
    assert pace.next_slot(campaign, t0) == t0 + timedelta(seconds=1)
    later = t0 + timedelta(hours=2)  # idle: the next call goes now, then the spacing again
    assert pace.next_slot(campaign, later) == later
    campaign = campaign.evolve(pace=pace.after_call(campaign, later))
    assert pace.next_slot(campaign, later) == later + timedelta(seconds=1)
    campaign = campaign.evolve(pace=pace.after_throttle(campaign, later, 30))
    assert pace.rate(campaign) == 1800 and pace.next_slot(campaign, later) == later + timedelta(seconds=30)
    at = later + timedelta(seconds=30)
    resumed = at
    for _ in range(300):  # calls without a 429: the rate climbs back linearly in time
        campaign = campaign.evolve(pace=pace.after_call(campaign, at))
        at = pace.next_slot(campaign, at)
    elapsed = (at - resumed).total_seconds()
    expected = 1800 + 1800 * elapsed / pace.RECOVERY_SECONDS
    assert 300 < elapsed < 600 and abs(pace.rate(campaign) - expected) < 0.02 * expected, (elapsed, pace.rate(campaign))
    assert pace.achieved_last_hour(campaign, at) == 302  # the 429 counts; the call two hours ago does not
    not_before = campaign.evolve(not_before=at + timedelta(days=1))
    assert pace.next_slot(not_before, at) == at + timedelta(days=1)


def test_a_campaign_of_the_largest_size_is_created_in_one_transaction(api: Api):
    started = time.monotonic()
    reply = create(api, {"name": "all of them", "customers": guids(50000)})
    assert reply.status == 202, reply.body[:300]
    assert reply.json()["members"] == 50000
    assert time.monotonic() - started < 30
    stored = campaign_store().get(reply.json()["campaignId"])
    assert stored is not None and stored.campaign.chunks == 50
