"""Issue 14, defect 1: once a create may have reached Partner Center, the request stays
`submitting` until resolved (eligibility first), is never failed by attempt count, and keeps the
customer's active lock. Each case is reproduced through the HTTP function and the timer, against
the sandbox and Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.runtime import get_runtime

from .conftest import Api
from .test_requests import make_due as time_passes
from .test_requests import record as stored
from .test_requests import run_timer

THROTTLED_BEYOND_BUDGET = {"status": 429, "retry_after": 60}  # not waited inline: comes straight back
QUEUE = {"Prefer": "respond-async"}


def lock_holder(record) -> str | None:
    lock = get_runtime().store.active(record.customer_id, record.product_family)
    return lock.request_id if lock else None


def assert_unresolved_and_locked(request_id: str) -> None:
    record = stored(request_id)
    assert record.state == "submitting", (record.state, record.last_error)
    assert lock_holder(record) == request_id


def resolves_eligibility_first(sandbox, request_id: str, customer_id: str) -> None:
    """The next worker asks eligibility before anything else, and finds the one upgrade."""
    sandbox.reset_calls()
    time_passes(request_id)
    run_timer()
    assert sandbox.calls("partner_center")[0].operation == "eligibility"
    record = stored(request_id)
    assert record.state in ("submitted", "complete"), (record.state, record.last_error)
    assert [record.upgrade_id] == sandbox.upgrade_ids(customer_id)
    assert sandbox.submissions(customer_id) == 1


@pytest.mark.parametrize("max_attempts", ["8", "1"])
def test_a_throttled_resend_after_a_lost_answer_stays_submitting(
    api: Api, sandbox, monkeypatch, customer_id, max_attempts
):
    """(a) The answer is lost, eligibility says no upgrade yet, the resend (same MS-RequestId) gets 429."""
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", max_attempts)
    sandbox.faults.add("create_upgrade", "land_late")  # reached Partner Center; takes effect later
    sandbox.faults.add("create_upgrade", "status", **THROTTLED_BEYOND_BUDGET)
    reply = api.upgrade(customer_id)
    assert reply.status == 202
    request_id = reply.json()["requestId"]
    creates = sandbox.calls("partner_center", "create_upgrade")
    assert len(creates) == 2 and creates[0].header("MS-RequestId") == creates[1].header("MS-RequestId")
    assert_unresolved_and_locked(request_id)

    sandbox.land_late()  # the first create took effect after all
    resolves_eligibility_first(sandbox, request_id, customer_id)


@pytest.mark.parametrize("max_attempts", ["8", "1"])
def test_a_on_the_timer_path_too(api: Api, sandbox, monkeypatch, customer_id, max_attempts):
    """The same sequence for a queued request the timer submits (claimed from `pending`)."""
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", max_attempts)
    request_id = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    sandbox.faults.add("create_upgrade", "land_late")
    sandbox.faults.add("create_upgrade", "status", **THROTTLED_BEYOND_BUDGET)
    run_timer()
    assert_unresolved_and_locked(request_id)
    sandbox.land_late()
    resolves_eligibility_first(sandbox, request_id, customer_id)


def test_an_unresolved_request_keeps_resolving_through_failed_eligibility(api: Api, sandbox, customer_id):
    """Eligibility failing or throttled while resolving never sends the request back to `pending`."""
    request_id = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    sandbox.faults.add("create_upgrade", "process_then_reset")  # created; the answer is lost
    sandbox.faults.add("eligibility", "status", status=500)  # the inline resolution fails ...
    run_timer()
    assert_unresolved_and_locked(request_id)
    sandbox.faults.add("eligibility", "status", **THROTTLED_BEYOND_BUDGET)  # ... and is throttled next time
    time_passes(request_id)
    run_timer()
    assert_unresolved_and_locked(request_id)
    resolves_eligibility_first(sandbox, request_id, customer_id)


@pytest.mark.parametrize("max_attempts", ["8", "1"])
def test_b_a_202_without_location_is_resolved_by_eligibility(api: Api, sandbox, monkeypatch, customer_id, max_attempts):
    """(b) Partner Center accepted the create (202) but sent no usable Location: the upgrade is
    found through eligibility (never `pending`, never a second create)."""
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", max_attempts)
    sandbox.faults.add("create_upgrade", "process_without_location")
    reply = api.upgrade(customer_id)
    assert reply.status == 202
    record = stored(reply.json()["requestId"])
    assert (record.state, record.outcome) == ("submitted", "resolved")
    assert [record.upgrade_id] == sandbox.upgrade_ids(customer_id)
    assert [call.operation for call in sandbox.calls("partner_center")] == ["create_upgrade", "eligibility"]


@pytest.mark.parametrize("max_attempts", ["8", "1"])
def test_b_a_202_without_location_stays_submitting_until_resolved(
    api: Api, sandbox, monkeypatch, customer_id, max_attempts
):
    """(b) ... and when that eligibility check fails, the request waits `submitting`, locked."""
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", max_attempts)
    sandbox.faults.add("create_upgrade", "process_without_location")
    sandbox.faults.add("eligibility", "status", status=500)
    reply = api.upgrade(customer_id)
    assert reply.status == 202
    request_id = reply.json()["requestId"]
    assert sandbox.submissions(customer_id) == 1
    assert_unresolved_and_locked(request_id)
    resolves_eligibility_first(sandbox, request_id, customer_id)


def test_a_second_request_for_the_customer_waits_for_the_unresolved_one(api: Api, sandbox, monkeypatch, customer_id):
    """The lock kept: a new POST for the customer answers with the unresolved request, sends nothing."""
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", "1")
    sandbox.faults.add("create_upgrade", "reset")  # maybe sent, maybe not: unknown
    sandbox.faults.add("create_upgrade", "status", **THROTTLED_BEYOND_BUDGET)
    first = api.upgrade(customer_id).json()["requestId"]
    sandbox.reset_calls()
    again = api.upgrade(customer_id)
    assert again.json()["requestId"] == first
    assert again.headers.get("idempotent-replayed") == "true"
    assert sandbox.calls("partner_center", "create_upgrade") == []


def test_no_token_while_resolving_waits_for_the_operator_still_submitting(api: Api, sandbox, customer_id):
    """Resolution stopped by credentials (an operator's problem): the request says so, and waits
    `submitting` with its lock, not `pending`."""
    assert api.eligibility(str(uuid.uuid4())).status == 200  # a warm instance: its token is cached
    sandbox.faults.add("create_upgrade", "land_late")
    sandbox.faults.add("eligibility", "status", status=401)  # Partner Center refuses the token ...
    sandbox.faults.add("entra.token", "reset", count=3)  # ... and no new one can be had
    request_id = api.upgrade(customer_id).json()["requestId"]
    record = stored(request_id)
    assert record.last_error_type == "credentials-unavailable", record.last_error
    assert_unresolved_and_locked(request_id)
    sandbox.land_late()
    resolves_eligibility_first(sandbox, request_id, customer_id)
