"""Where campaign steering meets the timer, a repair and the deadline: four defects an adversarial
review found in the merged campaign code (each failed before its fix): a retry of an upgrade that
failed at Partner Center sent no create; a stale retry undid a cancel; a stale repair released the
lock of a reopened request; a list page escaped the answer's deadline in its point reads."""

from __future__ import annotations

import threading

from shared.runtime import get_runtime
from shared.upgrade_requests import campaign
from shared.upgrade_requests.record import CANCELLED, FAILED, PENDING, utc_now

from .conftest import Api
from .test_campaign import action, list_call, make, run_timer
from .test_deadlines import DEADLINE, short_deadline, storage_proxy, timed  # noqa: F401 (fixtures)
from .test_requests import make_due


def test_retry_of_an_upgrade_that_failed_at_partner_center_sends_a_new_create(api: Api, sandbox, customer_id):
    """retry() gives a request whose upgrade FAILED at Partner Center a new MS-RequestId ("a new
    create needs a new MS-RequestId") but reopens it `submitting` (resolve first): eligibility still
    names the old, failed upgrade, so `_resolved` adopts it and the retry never sends a create; it
    just re-polls the dead upgrade and ends `failed` again (campaign.retry + processor._resolved)."""
    sandbox.customers.set(customer_id, polls_until_final=1, outcome="failed")
    request_id = api.upgrade(customer_id).json()["requestId"]
    make_due(request_id)
    run_timer()
    failed = get_runtime().store.get(request_id).record
    assert failed.state == FAILED and failed.upgrade_id
    sandbox.customers.set(customer_id, outcome="complete")  # the operator fixed the cause

    reply = action(api, "retry", request_id)
    assert reply.status == 202, reply.body
    for _ in range(3):
        make_due(request_id)
        run_timer()
    after = get_runtime().store.get(request_id).record
    assert sandbox.submissions(customer_id) == 2, "the retry never sent a create"
    assert after.upgrade_id != failed.upgrade_id, f"retry re-adopted the failed upgrade {failed.upgrade_id}"


def test_a_stale_retry_cannot_undo_a_cancel(api: Api, sandbox, customer_id):
    """retry() decides on the final copy it read, then `store.reopen` inserts lock + active record
    WITHOUT checking that final copy's ETag (only the later cleanup delete is ETag-guarded, and it
    ignores a mismatch). Two operators retry the same failed request; the first retry is cancelled
    (or finishes) meanwhile; the second, stale retry then resurrects it: the cancel is undone and
    the request id has both an active record and a different final one."""
    failed = make(customer_id, FAILED, last_error_type="configuration-error")
    request_id = failed.record.request_id
    runtime = get_runtime()
    store = runtime.store

    # Operator B reads the failed request, then is slow (a GC pause, a slow storage call) ...
    real_get, paused, resume = store.get, threading.Event(), threading.Event()

    def slow_get(rid: str):
        found = real_get(rid)
        if threading.current_thread().name == "operator-b":
            paused.set()
            resume.wait(10)
        return found

    store.get = slow_get  # type: ignore[method-assign]
    outcome: dict[str, object] = {}

    def operator_b() -> None:
        try:
            outcome["b"] = campaign.retry(runtime, request_id)
        except Exception as error:
            outcome["b"] = error

    thread = threading.Thread(target=operator_b, name="operator-b")
    thread.start()
    assert paused.wait(10)
    # ... meanwhile operator A retries it, and then cancels it (it is pending again).
    assert action(api, "retry", request_id).status == 202
    assert action(api, "cancel", request_id).status == 200
    assert store.get(request_id).record.state == CANCELLED
    resume.set()
    thread.join(20)
    store.get = real_get  # type: ignore[method-assign]

    final_state = store.get(request_id).record.state
    run_timer()  # the resurrected request is due now
    sent = sandbox.submissions(customer_id)
    assert (final_state, sent) == (CANCELLED, 0), (
        f"a stale retry reopened a request cancelled after it was read: it was {final_state}, and the "
        f"timer then sent {sent} create(s) for the cancelled request (B got {type(outcome['b']).__name__})"
    )


def test_a_stale_repair_never_releases_the_lock_of_a_reopened_request(api: Api, customer_id):
    """repair() (every timer run, on every instance) moves final records it found in `a-`. If the
    finalising worker completes that move first and an operator then retries the request, the
    stale repair's `_finish_move` fails its ETag-guarded transaction and falls back to
    `release_active(customer, family, request_id)`, which deletes the lock because it names the
    same request id: the reopened, active request is left WITHOUT its lock, so a second POST for
    the customer is accepted (two active requests, two creates). It also resurrects the stale
    `f-` copy and `l-` entry next to the active record (store._finish_move fallback)."""
    from shared.upgrade_requests import store as store_module

    store = get_runtime().store
    pending = make(customer_id, PENDING)
    request_id = pending.record.request_id

    real_finish = store_module.RequestStore._finish_move
    repair_has_read, go = threading.Event(), threading.Event()

    def finish_move(self, record, revision, active_etag):
        if threading.current_thread().name == "repair-on-instance-b":
            repair_has_read.set()  # it read the final record from `a-` (etag = after step 1)
            go.wait(10)
        elif not repair_has_read.is_set():
            # the finalising worker is between step 1 and step 2: instance B's timer runs repair()
            threading.Thread(target=store.repair, name="repair-on-instance-b", daemon=True).start()
            assert repair_has_read.wait(10)
        return real_finish(self, record, revision, active_etag)

    store_module.RequestStore._finish_move = finish_move  # type: ignore[method-assign]
    try:
        store.replace(pending.record.evolve(state=FAILED, finished_at=utc_now()), pending.etag)  # worker A
        assert store.get(request_id).record.state == FAILED and store.active(customer_id, "Azure") is None
        reply = action(api, "retry", request_id)  # the operator retries it: active again, lock held
        assert reply.status == 202 and reply.json()["status"] == PENDING, reply.body
        assert store.active(customer_id, "Azure").request_id == request_id
        go.set()  # instance B's repair() goes on with what it read
        for thread in threading.enumerate():
            if thread.name == "repair-on-instance-b":
                thread.join(20)
    finally:
        store_module.RequestStore._finish_move = real_finish  # type: ignore[method-assign]

    assert store.get(request_id).record.state == PENDING  # the reopened request is active ...
    lock = store.active(customer_id, "Azure")
    second = api.upgrade(customer_id, headers={"Prefer": "respond-async"}).json()
    assert lock is not None and lock.request_id == request_id, (
        f"the reopened active request {request_id} lost its lock; a second POST was accepted as "
        f"{second.get('requestId')} ({second.get('status')})"
    )


def test_a_list_page_answers_within_the_deadline_when_point_reads_hang(api: Api, storage_proxy, customer_id):  # noqa: F811
    """GET product-upgrade-requests resolves `l-` index entries with point reads in a
    ThreadPoolExecutor (`RequestStore._get_many`); pool threads do not run in a copy of the
    request's context, so the answer's deadline (a ContextVar, shared/deadlines.py) does not reach
    them: each read gets its full STORAGE_SECONDS x 2 attempts, and the executor waits for all of
    them. When storage hangs after the index query, the answer comes far past HTTP_DEADLINE_SECONDS."""
    from shared.upgrade_requests import store as store_module

    for _ in range(16):
        make(customer_id, FAILED, last_error_type="configuration-error")
    real_get_many = store_module.RequestStore._get_many

    def get_many(self, ids):  # the index query was answered: storage hangs from now on
        storage_proxy.stalled.set()
        return real_get_many(self, ids)

    store_module.RequestStore._get_many = get_many  # type: ignore[method-assign]
    try:
        reply, elapsed = timed(lambda: list_call(api, state="failed", top="50"))
    finally:
        store_module.RequestStore._get_many = real_get_many  # type: ignore[method-assign]
        storage_proxy.stalled.clear()
    assert elapsed < DEADLINE, f"answered {reply.status} after {elapsed:.1f} s (deadline {DEADLINE} s)"
