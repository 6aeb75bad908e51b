"""Durable requests: stored first, idempotent, queued, processed by the timer exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest
from azure.functions.timer import TimerRequest

from localrun.timers import call_function
from shared.runtime import get_runtime
from shared.upgrade_requests.processor import ProcessingPolicy, RequestProcessor
from shared.upgrade_requests.record import utc_now
from shared.upgrade_requests.timer_run import process_pending

from .conftest import Api, function

QUEUE = {"Prefer": "respond-async"}
LEASE = 60  # a crashed worker's lease in the tests below; time "passes" through the processor's clock


def run_timer() -> None:
    call_function(function("process_pending_requests"), TimerRequest(past_due=False), "process_pending_requests")


def make_due(request_id: str) -> None:
    """Move a request's next attempt (and any lease) into the past, as time passing would."""
    store = get_runtime().store
    stored = store.get(request_id)
    past = utc_now() - timedelta(seconds=1)
    store.replace(replace(stored.record, next_attempt_at=past, lease_until=past), stored.etag)


def record(request_id: str):
    return get_runtime().store.get(request_id).record


def test_request_is_stored_before_partner_center_is_called(api: Api, sandbox, customer_id):
    sandbox.latency = 1.0
    seen_during_call = {}

    def watch():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not seen_during_call:
            if sandbox.calls("partner_center", "create_upgrade") or sandbox.submissions(customer_id):
                break
            for stored in get_runtime().store.all_records():
                if stored.customer_id == customer_id:
                    seen_during_call["state"] = stored.state
                    seen_during_call["creates_answered"] = len(sandbox.calls("partner_center", "create_upgrade"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    get_runtime()  # build the runtime before racing the watcher against the call
    watcher.start()
    reply = api.upgrade(customer_id)
    watcher.join()
    assert reply.status == 202
    assert seen_during_call == {"state": "submitting", "creates_answered": 0}


def test_bad_input_is_never_recorded(api: Api, sandbox):
    api.call("submit_product_upgrade", "POST", "product-upgrades", json_body={"customerId": "nope"})
    api.call(
        "submit_product_upgrade", "POST", "product-upgrades", body=b"{", headers={"Content-Type": "application/json"}
    )
    assert list(get_runtime().store.all_records()) == []
    assert sandbox.calls("partner_center") == []


def test_idempotency_key_replay_returns_the_same_request(api: Api, sandbox, customer_id):
    key = {"Idempotency-Key": "flow-run-42"}
    first = api.upgrade(customer_id, headers=key)
    second = api.upgrade(customer_id, headers=key)
    assert first.json()["requestId"] == second.json()["requestId"]
    assert second.headers["idempotent-replayed"] == "true"
    assert sandbox.submissions(customer_id) == 1
    assert len(sandbox.calls("partner_center", "create_upgrade")) == 1


def test_idempotency_key_with_another_body_is_422(api: Api, sandbox, customer_id):
    key = {"Idempotency-Key": "flow-run-43"}
    api.upgrade(customer_id, headers=key)
    other = api.upgrade(str(uuid.uuid4()), headers=key)
    assert other.status == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    assert len(sandbox.calls("partner_center", "create_upgrade")) == 1


def test_bad_idempotency_key_is_400(api: Api, sandbox, customer_id):
    reply = api.upgrade(customer_id, headers={"Idempotency-Key": "x" * 300})
    assert reply.status == 400
    assert sandbox.calls("partner_center") == []


def test_same_customer_while_active_returns_the_active_request(api: Api, sandbox, customer_id):
    first = api.upgrade(customer_id).json()
    second = api.upgrade(customer_id)
    assert second.json()["requestId"] == first["requestId"]
    assert second.headers["idempotent-replayed"] == "true"
    assert sandbox.submissions(customer_id) == 1


@pytest.mark.parametrize("headers", [{"Idempotency-Key": "concurrent-key"}, {}], ids=["with-key", "without-key"])
def test_concurrent_replays_submit_once(api: Api, sandbox, customer_id, headers):
    get_runtime()
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: api.upgrade(customer_id, headers=headers), range(8)))
    assert {reply.status for reply in replies} <= {200, 202}
    assert len({reply.json()["requestId"] for reply in replies}) == 1
    assert sandbox.submissions(customer_id) == 1
    assert len(sandbox.calls("partner_center", "create_upgrade")) == 1


def test_queue_for_later_then_timer_submits(api: Api, sandbox, customer_id):
    reply = api.upgrade(customer_id, headers=QUEUE)
    assert reply.status == 202
    body = reply.json()
    assert body["status"] == "pending" and body["queued"] is True
    assert sandbox.calls("partner_center") == []

    run_timer()
    after = record(body["requestId"])
    assert after.state == "submitted"
    assert after.upgrade_id == sandbox.upgrade_ids(customer_id)[0]
    assert sandbox.submissions(customer_id) == 1


def test_throttled_request_is_submitted_by_a_later_timer_run(api: Api, sandbox, customer_id):
    sandbox.faults.add("create_upgrade", "status", status=429, retry_after=45)
    request_id = api.upgrade(customer_id).json()["requestId"]
    run_timer()  # not due yet: Partner Center asked for 45 s
    assert record(request_id).state == "pending"
    assert sandbox.submissions(customer_id) == 0

    make_due(request_id)
    run_timer()
    after = record(request_id)
    assert after.state == "submitted"
    assert after.attempts == 2
    creates = sandbox.calls("partner_center", "create_upgrade")
    assert len({call.headers["MS-RequestId"] for call in creates}) == 1  # the stored MS-RequestId
    assert sandbox.submissions(customer_id) == 1


def test_two_timers_over_200_pending_submit_each_exactly_once(api: Api, sandbox, monkeypatch):
    monkeypatch.setenv("PENDING_CONCURRENCY", "8")
    customers = [str(uuid.uuid4()) for _ in range(200)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: api.upgrade(c, headers=QUEUE), customers))
    runtime = get_runtime()
    # Two independent workers (as two instances would be), started together.
    workers = [RequestProcessor(runtime.store, runtime.upgrades, runtime.processor.policy) for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(index: int):
        barrier.wait()
        return process_pending(workers[index], owner=f"worker-{index}", concurrency=8, budget_seconds=120)

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(run, range(2)))

    assert all(sandbox.submissions(c) == 1 for c in customers)
    assert len(sandbox.calls("partner_center", "create_upgrade")) == 200
    assert sum(r.outcomes["submitted"] for r in reports) == 200
    assert sum(r.lost_claims for r in reports) == sum(r.due for r in reports) - 200
    assert {r.state for r in runtime.store.all_records()} == {"submitted"}


def after_the_lease(seconds: int = LEASE + 1) -> RequestProcessor:
    """This instance's processor as it will be `seconds` from now: a timer run once a lease has run out."""
    runtime = get_runtime()
    return RequestProcessor(
        runtime.store, runtime.upgrades, runtime.processor.policy, clock=lambda: utc_now() + timedelta(seconds=seconds)
    )


def run_timer_later(seconds: int = LEASE + 1) -> None:
    process_pending(after_the_lease(seconds), owner="timer-later", concurrency=2, budget_seconds=30)


def test_crash_after_submission_is_recovered_without_double_submit(api: Api, sandbox, customer_id):
    runtime = get_runtime()
    request_id = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    crashing = RequestProcessor(runtime.store, runtime.upgrades, ProcessingPolicy(lease_seconds=LEASE))
    claimed = crashing.claim(runtime.store.get(request_id), "worker-that-crashes")
    assert claimed is not None and claimed.record.state == "submitting"
    # The worker sent the create, then died before writing the result.
    from shared.correlation import CallContext
    from shared.validation import UpgradeTarget

    runtime.upgrades.submit(
        UpgradeTarget(customer_id, "Azure"), CallContext(claimed.record.correlation_id, claimed.record.ms_request_id)
    )
    run_timer()
    run_timer_later(LEASE - 5)
    assert record(request_id).state == "submitting"  # lease not expired yet: nobody touches it
    assert len(sandbox.calls("partner_center")) == 1

    run_timer_later()
    after = record(request_id)
    assert after.state == "submitted"
    assert after.outcome == "resolved"
    assert after.upgrade_id == sandbox.upgrade_ids(customer_id)[0]
    assert sandbox.submissions(customer_id) == 1


def test_crash_before_submission_resends_with_stored_request_id(api: Api, sandbox, customer_id):
    runtime = get_runtime()
    request_id = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    crashing = RequestProcessor(runtime.store, runtime.upgrades, ProcessingPolicy(lease_seconds=LEASE))
    crashing.claim(runtime.store.get(request_id), "worker-that-crashes")
    run_timer()
    assert sandbox.calls("partner_center") == []  # leased: nobody touches it yet
    run_timer_later()
    after = record(request_id)
    assert after.state == "submitted"
    (create,) = sandbox.calls("partner_center", "create_upgrade")
    assert create.headers["MS-RequestId"] == after.ms_request_id
    assert sandbox.submissions(customer_id) == 1


def test_status_polling_to_complete(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=2)
    request_id = api.upgrade(customer_id).json()["requestId"]
    make_due(request_id)
    run_timer()
    assert record(request_id).state == "submitted"
    make_due(request_id)
    run_timer()
    final = record(request_id)
    assert final.state == "complete"
    assert final.line_items and final.finished_at is not None
    reply = api.request_status(request_id)
    assert reply.status == 200
    assert reply.json()["status"] == "complete"
    # The customer's lock is released: a new request is accepted (and answered from Partner Center).
    assert api.upgrade(customer_id).json()["requestId"] != request_id


def test_status_polling_to_failed(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=1, outcome="failed")
    request_id = api.upgrade(customer_id).json()["requestId"]
    make_due(request_id)
    run_timer()
    final = record(request_id)
    assert final.state == "failed"
    assert final.last_error
    assert final.error_details


def test_throttled_status_poll_waits_for_partner_centers_retry_after(api: Api, sandbox, customer_id):
    request_id = api.upgrade(customer_id).json()["requestId"]
    sandbox.faults.add("upgrade_status", "status", status=429, retry_after=3000)
    make_due(request_id)
    before = utc_now()
    run_timer()
    after = record(request_id)
    assert (after.state, after.last_error_type) == ("submitted", "upstream-throttled")
    assert after.next_attempt_at >= before + timedelta(seconds=3000)  # not the 120 s poll interval


def test_lock_left_by_a_final_request_does_not_block_a_new_one(api: Api, sandbox, customer_id):
    """A final request whose lock release never happened (a crash in between) is not the answer to
    a new request for the customer: the stale lock is removed and a new request accepted."""
    first = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    store = get_runtime().store
    stored = store.get(first)
    store.replace(replace(stored.record, state="rejected", finished_at=utc_now()), stored.etag)
    assert store.active(customer_id, "Azure") is None  # the move to final released it ...
    store.create_active(customer_id, "Azure", first)  # ... so leave the lock a crash would have left
    assert store.active(customer_id, "Azure").request_id == first
    second = api.upgrade(customer_id, headers=QUEUE)
    assert second.status == 202
    assert second.json()["requestId"] != first
    assert store.active(customer_id, "Azure").request_id == second.json()["requestId"]


def test_get_request_refreshes_a_submitted_upgrade(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=1)
    request_id = api.upgrade(customer_id).json()["requestId"]
    reply = api.request_status(request_id)
    assert reply.status == 200
    assert reply.json()["status"] == "complete"


def test_pending_request_status_is_202_with_retry_after(api: Api, customer_id):
    request_id = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    reply = api.request_status(request_id)
    assert reply.status == 202
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.headers["location"].endswith(request_id)


def test_unknown_request_is_404(api: Api):
    reply = api.request_status(str(uuid.uuid4()))
    assert reply.status == 404
    assert reply.json()["type"].endswith("not-found")


def test_attempts_exhausted_fail_with_reason(api: Api, sandbox, monkeypatch, customer_id):
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", "2")
    sandbox.faults.add("create_upgrade", "status", count=10, status=503, retry_after=60)
    request_id = api.upgrade(customer_id).json()["requestId"]
    assert record(request_id).state == "pending"
    make_due(request_id)
    run_timer()
    final = record(request_id)
    assert final.state == "failed"
    assert final.attempts == 2
    assert "Gave up after 2 attempts" in final.last_error
    assert sandbox.submissions(customer_id) == 0
    # Final: the customer's lock is released.
    assert get_runtime().store.active(customer_id, "Azure") is None


def test_timer_stops_claiming_after_its_budget(api: Api, sandbox):
    customers = [str(uuid.uuid4()) for _ in range(6)]
    for customer in customers:
        api.upgrade(customer, headers=QUEUE)
    sandbox.latency = 0.4
    runtime = get_runtime()
    report = process_pending(runtime.processor, owner="short-run", concurrency=1, budget_seconds=1.0)
    assert report.due == 6
    assert 1 <= sum(report.outcomes.values()) < 6
    assert "error" not in report.outcomes  # running out of time is not an error
    assert report.not_started + report.interrupted == 6 - sum(report.outcomes.values())
    # Untouched, for the next run (a claim the run's deadline cut short keeps its lease, or is
    # pending again with its attempt counted: it is not among these).
    untouched = [r for r in runtime.store.all_records() if r.state == "pending" and r.attempts == 0]
    assert len(untouched) == report.not_started


def test_timer_worker_threads_carry_the_invocation_id(api: Api, monkeypatch):
    """The worker only forwards log lines whose thread knows the invocation: every pool thread
    that processes a request must have been given it."""
    from shared.api import timer_trigger as timer_api

    monkeypatch.setenv("PENDING_CONCURRENCY", "3")
    for _ in range(6):
        api.upgrade(str(uuid.uuid4()), headers=QUEUE)
    bound: dict[str, str] = {}

    class Storage:
        def __setattr__(self, name: str, value: str) -> None:
            bound[threading.current_thread().name] = value

    class Context:
        invocation_id = "c7b9e0f2-5d1a-4e3b-9c8d-7a6b5c4d3e2f"
        thread_local_storage = Storage()

    report = timer_api.process_pending(None, Context())
    assert report.outcomes["submitted"] == 6
    assert bound
    assert set(bound.values()) == {Context.invocation_id}
    assert all(name.startswith("pending") for name in bound)
