"""Campaign operations (list, summary, cancel, retry) and the store they stand on: every query
names a bounded partition, the index never disagrees with the records after a crash between any
two writes, retention deletes only what it should, and a warm inline upgrade makes 2 round trips."""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from localrun.timers import call_function
from shared.errors import StorageUnavailable
from shared.identifiers import new_guid
from shared.runtime import get_runtime
from shared.upgrade_requests.record import (
    ACTIVE_STATES,
    ALL_STATES,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    PENDING,
    REJECTED,
    SUBMITTED,
    SUBMITTING,
    new_record,
    utc_now,
)
from shared.upgrade_requests.store import ListFilter, RequestStore, Stored, new_request_id

from .conftest import Api, function

QUEUE = {"Prefer": "respond-async"}
WRITES = ("create_entity", "update_entity", "upsert_entity", "delete_entity", "submit_transaction")


class Crash(Exception):
    """Injected: the process died here."""


class TableEdge:
    """Wraps the SDK's TableClient (the network edge): records every call and every query's
    filter, and can crash before the n-th write."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls: list[str] = []
        self.filters: list[tuple[str, dict[str, Any]]] = []
        self.returned = 0
        self.crash_before_write: int | None = None
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._table, name)
        if name not in (*WRITES, "get_entity", "query_entities"):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in WRITES:
                if self.crash_before_write is not None and self.writes >= self.crash_before_write:
                    raise Crash(name)
                self.writes += 1
            self.calls.append(name)
            if name == "query_entities":
                self.filters.append((args[0] if args else kwargs["query_filter"], dict(kwargs.get("parameters") or {})))
                return self._count(target(*args, **kwargs))
            return target(*args, **kwargs)

        return call

    def _count(self, entities: Any) -> Any:
        for entity in entities:
            self.returned += 1
            yield entity


def run_timer() -> None:
    call_function(function("process_pending_requests"), TimerRequest(past_due=False), "process_pending_requests")


def store() -> RequestStore:
    return get_runtime().store


def make(
    customer_id: str,
    state: str,
    *,
    created_at: datetime | None = None,
    target: RequestStore | None = None,
    **changes: Any,
) -> Stored:
    """A request stored as the app would have left it in `state` (through the store's own writes);
    with `created_at`, one that was made and last changed then."""
    target = target or store()
    record = new_record(new_request_id(customer_id), customer_id, "Azure", new_guid(), new_guid(), state=PENDING)
    if created_at is not None:
        record = replace(record, created_at=created_at)
    stored = target.create_with_lock(record)
    if state == PENDING and not changes:
        return stored
    when = created_at or utc_now()  # a request made long ago also finished then, unless `changes` say
    final = {"finished_at": when} if state in FINAL_STATES else {}
    record = replace(stored.record.evolve(state=state, **{**final, **changes}), updated_at=when)
    return target.replace(record, stored.etag)


def list_call(api: Api, **params: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return api.call("list_product_upgrade_requests", "GET", "product-upgrade-requests" + (f"?{query}" if query else ""))


def all_pages(api: Api, **params: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    reply = list_call(api, **params)
    for _ in range(100):
        assert reply.status == 200, reply.body
        body = reply.json()
        records.extend(body["value"])
        if "nextLink" not in body:
            return records
        token = re.search(r"continuationToken=([^&]+)", body["nextLink"]).group(1)
        reply = list_call(api, **params, continuationToken=token)
    raise AssertionError("never ended")


def action(api: Api, verb: str, request_id: str, body: Any = None) -> Any:
    name = "cancel_product_upgrade_request" if verb == "cancel" else "retry_product_upgrade_request"
    return api.call(
        name,
        "POST",
        f"product-upgrade-requests/{request_id}/{verb}",
        json_body=body,
        route_params={"requestId": request_id},
    )


# --- list -------------------------------------------------------------------------------------


def test_list_pages_through_equal_timestamps_without_loss_or_duplicates(api: Api):
    same = datetime(2026, 11, 2, 10, 0, 0, tzinfo=UTC)
    customers = [str(uuid.uuid4()) for _ in range(7)]
    failed = {make(c, FAILED, created_at=same).record.request_id for c in customers}
    make(str(uuid.uuid4()), "complete", created_at=same)
    pending = make(str(uuid.uuid4()), PENDING).record.request_id

    pages = all_pages(api, state="failed", top="2")
    assert [r["requestId"] for r in pages if r["requestId"] in failed] == [r["requestId"] for r in pages]
    assert sorted(r["requestId"] for r in pages) == sorted(failed)

    both = all_pages(api, state="failed,pending", top="3")
    assert sorted(r["requestId"] for r in both) == sorted([*failed, pending])
    assert {r["status"] for r in both} == {"failed", "pending"}


def test_list_filters_by_customer_and_creation_window(api: Api):
    customer = str(uuid.uuid4())
    old = make(customer, FAILED, created_at=datetime(2026, 1, 5, tzinfo=UTC)).record.request_id
    recent = make(customer, "complete", created_at=datetime(2026, 6, 5, tzinfo=UTC)).record.request_id
    active = make(customer, PENDING).record.request_id
    make(str(uuid.uuid4()), FAILED, created_at=datetime(2026, 1, 5, tzinfo=UTC))

    mine = all_pages(api, customerId=customer)
    assert sorted(r["requestId"] for r in mine) == sorted([old, recent, active])
    assert [r["requestId"] for r in all_pages(api, customerId=customer, state="failed")] == [old]
    window = all_pages(api, customerId=customer, createdFrom="2026-06-01T00:00:00Z", createdTo="2026-07-01T00:00:00Z")
    assert [r["requestId"] for r in window] == [recent]
    by_window = all_pages(api, state="failed", createdFrom="2026-01-05T00:00:00Z", createdTo="2026-01-06T00:00:00Z")
    assert old in {r["requestId"] for r in by_window}
    assert all(r["createdAt"].startswith("2026-01-05") for r in by_window)


def test_list_default_page_is_100_and_next_link_keeps_the_filters(api: Api):
    for _ in range(3):
        make(str(uuid.uuid4()), PENDING)
    reply = list_call(api, state="pending", top="2")
    body = reply.json()
    assert reply.status == 200 and len(body["value"]) == 2
    assert "state=pending" in body["nextLink"] and "top=2" in body["nextLink"]
    assert body["value"][0]["statusUrl"].endswith(body["value"][0]["requestId"])


@pytest.mark.parametrize(
    "params",
    [
        {"top": "0"},
        {"top": "501"},
        {"top": "ten"},
        {"state": "bogus"},
        {"customerId": "not-a-guid"},
        {"createdFrom": "yesterday"},
        {"createdFrom": "2026-02-01T00:00:00Z", "createdTo": "2026-01-01T00:00:00Z"},
        {"stat": "failed"},
        {"customerId": "x' or PartitionKey ne '"},
    ],
)
def test_bad_list_parameters_are_400(api: Api, params):
    reply = list_call(api, **params)
    assert reply.status == 400, reply.body
    assert reply.content_type == "application/problem+json"


def test_list_accepts_every_page_size_the_connector_documents(api: Api):
    """`top` from the connector's own minimum to its maximum (500) is a page, not a 400."""
    from .test_connector import SPEC

    top = next(p for p in SPEC["paths"]["/product-upgrade-requests"]["get"]["parameters"] if p["name"] == "top")
    customer = str(uuid.uuid4())
    make(customer, FAILED)
    mine = make(customer, PENDING).record.request_id
    for size in (top["minimum"], top["maximum"]):
        reply = list_call(api, customerId=customer, top=str(size))
        assert reply.status == 200, (size, reply.body)
        assert mine in {r["requestId"] for r in reply.json()["value"]}


def test_an_empty_creation_window_is_400_for_list_and_summary(api: Api):
    """createdTo is exclusive: a window that ends where it starts holds nothing, and is refused
    (as an inverted one is) instead of silently answering an empty page or zero counts."""
    same = "2026-01-01T00:00:00Z"
    listed = list_call(api, createdFrom=same, createdTo=same)
    summed = api.call(
        "get_product_upgrade_request_summary",
        "GET",
        f"product-upgrade-requests/summary?createdFrom={same}&createdTo={same}",
    )
    for reply in (listed, summed):
        assert reply.status == 400, reply.body
        assert reply.json()["parameter"] == "createdTo"


def test_a_function_key_in_the_query_is_not_a_filter(api: Api):
    """The host accepts the function key as `?code=`; list and summary must not refuse it as an
    unknown parameter (every caller keyed that way would get 400)."""
    customer = str(uuid.uuid4())
    mine = make(customer, PENDING).record.request_id
    code = {"code": "a-function-key"}
    listed = api.call(
        "list_product_upgrade_requests",
        "GET",
        f"product-upgrade-requests?customerId={customer}&code=a-function-key",
        params={"customerId": customer, **code},
    )
    assert listed.status == 200, listed.body
    assert [r["requestId"] for r in listed.json()["value"]] == [mine]
    summed = api.call(
        "get_product_upgrade_request_summary",
        "GET",
        "product-upgrade-requests/summary?code=a-function-key",
        params=code,
    )
    assert summed.status == 200, summed.body
    assert summed.json()["byState"][PENDING] >= 1


def _token_from(reply: Any) -> str:
    return re.search(r"continuationToken=([^&]+)", reply.json()["nextLink"]).group(1)


def test_forged_stale_or_foreign_continuation_tokens_are_400(api: Api, monkeypatch):
    for _ in range(3):
        make(str(uuid.uuid4()), FAILED)
    token = _token_from(list_call(api, state="failed", top="1"))
    encoded, check = token.split(".")
    raw = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    forged_body = base64.urlsafe_b64encode(json.dumps({**raw, "i": 0, "a": ["a-", ""]}).encode()).decode()
    forged = [
        "garbage",
        token[:-1] + ("0" if token[-1] != "0" else "1"),  # tampered checksum
        forged_body.rstrip("=") + "." + check,  # tampered body
    ]
    for bad in forged:
        assert list_call(api, state="failed", top="1", continuationToken=bad).status == 400
    # a token for other filters
    assert list_call(api, state="complete", top="1", continuationToken=token).status == 400
    # a stale token (a day old)
    import shared.upgrade_requests.store.listing as store_module

    real = store_module.time.time
    monkeypatch.setattr(store_module.time, "time", lambda: real() + 25 * 3600)
    reply = list_call(api, state="failed", top="1", continuationToken=token)
    assert reply.status == 400
    assert "continuationToken" in reply.json()["detail"]


# --- summary ----------------------------------------------------------------------------------


def test_summary_counts_by_state_and_error_and_the_oldest_pending_age(api: Api):
    old = utc_now() - timedelta(hours=2)
    make(str(uuid.uuid4()), PENDING, created_at=old)
    make(str(uuid.uuid4()), PENDING)
    make(str(uuid.uuid4()), FAILED, last_error_type="upgrade-failed", last_error="x")
    make(str(uuid.uuid4()), REJECTED, last_error_type="not-eligible", last_error="y", error_details={"code": "900108"})
    make(str(uuid.uuid4()), FAILED, created_at=utc_now() - timedelta(days=90))  # outside the default window
    reply = api.call("get_product_upgrade_request_summary", "GET", "product-upgrade-requests/summary")
    assert reply.status == 200
    body = reply.json()
    assert body["byState"] == {state: {"pending": 2, "failed": 1, "rejected": 1}.get(state, 0) for state in ALL_STATES}
    assert body["byLastErrorType"] == {"upgrade-failed": 1, "not-eligible": 1}
    assert body["byPartnerCenterErrorCode"] == {"900108": 1}
    assert 2 * 3600 - 60 <= body["oldestPendingAgeSeconds"] <= 2 * 3600 + 60


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_a_queued_request_releases_the_customer_and_is_final(api: Api, sandbox, customer_id):
    request_id = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]
    reply = action(api, "cancel", request_id)
    assert reply.status == 200 and reply.json()["status"] == CANCELLED
    assert store().active(customer_id, "Azure") is None
    assert action(api, "cancel", request_id).status == 200  # idempotent
    run_timer()
    assert sandbox.calls("partner_center") == []
    assert api.upgrade(customer_id, headers=QUEUE).json()["requestId"] != request_id


@pytest.mark.parametrize(
    ("state", "changes"),
    [
        (PENDING, {"create_may_have_been_sent": True, "attempts": 1}),  # a create was tried before
        (SUBMITTING, {"create_may_have_been_sent": True}),
        (SUBMITTED, {"create_may_have_been_sent": True, "upgrade_id": str(uuid.uuid4())}),
        ("complete", {}),
        (FAILED, {}),
        (REJECTED, {}),
    ],
)
def test_cancel_is_409_once_a_create_may_have_been_sent_or_when_final(api: Api, state, changes):
    stored = make(str(uuid.uuid4()), state, **changes)
    reply = action(api, "cancel", stored.record.request_id)
    assert reply.status == 409 and reply.content_type == "application/problem+json"
    problem = reply.json()
    assert problem["type"].endswith("cannot-cancel") and problem["requestStatus"] == state
    assert problem["status"] == 409  # RFC 9457: the HTTP status, never the request's state
    assert store().get(stored.record.request_id).record.state == state


def test_a_record_stored_before_the_flag_existed_counts_its_attempts_as_a_possible_create(
    api: Api, sandbox, customer_id
):
    """Records written before `createMayHaveBeenSent` existed lack it (False) but show their
    attempts: one that tried a create is not cancellable, and its retry resolves first."""
    tried = make(str(uuid.uuid4()), PENDING, attempts=2)
    assert tried.record.create_may_have_been_sent is False
    reply = action(api, "cancel", tried.record.request_id)
    assert reply.status == 409, reply.body
    assert store().get(tried.record.request_id).record.state == PENDING

    sandbox.customers.set(customer_id, existing_upgrade="in_progress")  # the earlier create did land
    failed = make(customer_id, FAILED, attempts=3)
    assert failed.record.create_may_have_been_sent is False
    reply = action(api, "retry", failed.record.request_id)
    assert reply.status == 202 and reply.json()["status"] == SUBMITTING, reply.body
    run_timer()
    after = store().get(failed.record.request_id).record
    assert after.state == SUBMITTED and after.upgrade_id
    assert sandbox.submissions(customer_id) == 0  # resolved through eligibility, never resent blind


def test_cancel_of_an_inline_request_is_409_and_says_what_to_do(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, outcome="in_progress")
    request_id = api.upgrade(customer_id).json()["requestId"]
    reply = action(api, "cancel", request_id)
    assert reply.status == 409
    assert "may already have reached Partner Center" in reply.json()["detail"]


def test_cancel_and_retry_of_an_unknown_request_are_404(api: Api):
    assert action(api, "cancel", str(uuid.uuid4())).status == 404
    assert action(api, "retry", str(uuid.uuid4())).status == 404
    assert action(api, "retry", "nope").status == 400


# --- retry ------------------------------------------------------------------------------------


def test_retry_of_a_failed_request_that_never_sent_a_create_submits_it_once(api: Api, sandbox, customer_id):
    stored = make(customer_id, FAILED, last_error="not attempted", last_error_type="configuration-error")
    reply = action(api, "retry", stored.record.request_id)
    assert reply.status == 202, reply.body
    assert reply.json()["status"] == PENDING and reply.json()["attempts"] == 0
    assert store().active(customer_id, "Azure").request_id == stored.record.request_id
    run_timer()
    assert sandbox.submissions(customer_id) == 1
    assert sandbox.calls("partner_center", "eligibility") == []  # nothing to resolve first
    assert [r["requestId"] for r in all_pages(api, state="failed", customerId=customer_id)] == []


def test_retry_after_a_possible_create_resolves_through_eligibility_first(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, existing_upgrade="in_progress")  # the earlier create did land
    stored = make(customer_id, FAILED, create_may_have_been_sent=True, attempts=3)
    reply = action(api, "retry", stored.record.request_id)
    assert reply.status == 202 and reply.json()["status"] == SUBMITTING
    run_timer()
    after = store().get(stored.record.request_id).record
    assert after.state == SUBMITTED and after.upgrade_id
    assert sandbox.calls("partner_center", "eligibility")
    assert sandbox.submissions(customer_id) == 0  # never resent blind


def test_retry_of_rejected_needs_force_and_others_are_409(api: Api, customer_id):
    rejected = make(customer_id, REJECTED, last_error_type="not-eligible")
    reply = action(api, "retry", rejected.record.request_id)
    assert reply.status == 409 and 'force": true' in reply.json()["detail"]
    assert reply.json()["status"] == 409 and reply.json()["requestStatus"] == REJECTED
    assert action(api, "retry", rejected.record.request_id, {"force": "yes"}).status == 400
    assert action(api, "retry", rejected.record.request_id, {"force": True}).status == 202
    for state in (PENDING, SUBMITTING, SUBMITTED, "complete", CANCELLED):
        other = make(str(uuid.uuid4()), state)
        assert action(api, "retry", other.record.request_id, {"force": True}).status == 409, state


def test_retry_is_409_while_the_customer_has_another_active_request(api: Api, customer_id):
    failed = make(customer_id, FAILED)
    make(customer_id, PENDING)
    reply = action(api, "retry", failed.record.request_id)
    assert reply.status == 409 and "another active request" in reply.json()["detail"]
    assert store().get(failed.record.request_id).record.state == FAILED


# --- the store: bounded queries, round trips, crashes, retention ------------------------------


def _bounded(query: str, parameters: dict[str, Any]) -> bool:
    if re.search(r"PartitionKey eq '[^']+'", query):
        return True
    low = re.search(r"PartitionKey ge (?:'([^']*)'|@(\w+))", query)
    high = re.search(r"PartitionKey l[te] (?:'([^']*)'|@(\w+))", query)
    if not (low and high):
        return False
    lo = low.group(1) if low.group(1) is not None else parameters[low.group(2)]
    hi = high.group(1) if high.group(1) is not None else parameters[high.group(2)]
    return len(lo) >= 2 and lo[:2] in ("a-", "f-", "l-") and hi.startswith(lo[0])  # one entity kind


def test_every_query_of_the_timer_list_and_summary_names_a_bounded_partition(api: Api, customer_id):
    make(str(uuid.uuid4()), FAILED)
    make(str(uuid.uuid4()), PENDING)
    edge = TableEdge(store()._table)
    store()._table = edge
    try:
        run_timer()
        timer_filters = list(edge.filters)
        all_pages(api, top="1")
        all_pages(api, customerId=customer_id)
        all_pages(api, state="failed,submitted", createdFrom="2026-01-01T00:00:00Z")
        api.call("get_product_upgrade_request_summary", "GET", "product-upgrade-requests/summary")
    finally:
        store()._table = edge._table
    assert len(timer_filters) >= 3  # repair, due, callbacks (and retention)
    assert edge.filters
    for query, parameters in edge.filters:
        assert _bounded(query, parameters), query
    due = [q for q, _ in timer_filters if "NextAttemptAt le" in q]
    assert due == [
        "PartitionKey ge 'a-' and PartitionKey lt 'a.' and (State eq 'pending' or "
        "State eq 'submitted' or State eq 'submitting') and NextAttemptAt le @now and LeaseUntil le @now"
    ]
    assert "PartitionKey eq 'cb' and NextAt le @now" in [q for q, _ in timer_filters]


def test_final_records_leave_the_due_range_at_once(customer_id, app_env):
    stored = make(customer_id, PENDING)
    assert [s.record.request_id for s in store().due(utc_now(), 10)] == [stored.record.request_id]
    store().replace(stored.record.evolve(state=FAILED, finished_at=utc_now()), stored.etag)
    assert list(store()._table.query_entities("PartitionKey ge 'a-' and PartitionKey lt 'a.'")) == []  # lock too
    assert store().due(utc_now(), 10) == []
    assert store().get(stored.record.request_id).record.state == FAILED


def test_a_warm_inline_upgrade_makes_two_storage_round_trips(api: Api, sandbox):
    sandbox.customers.set(first := str(uuid.uuid4()), outcome="in_progress")
    api.upgrade(first)  # warm: clients built, tokens cached
    customer = str(uuid.uuid4())
    sandbox.customers.set(customer, outcome="in_progress")
    edge = TableEdge(store()._table)
    store()._table = edge
    try:
        reply = api.upgrade(customer)
    finally:
        store()._table = edge._table
    assert reply.status == 202 and reply.json()["status"] == SUBMITTED
    assert edge.calls == ["submit_transaction", "update_entity"]


def _audit(target: RequestStore, now: datetime) -> dict[str, Any]:
    """What every index says, computed from the records (the truth) and from the index."""
    truth = list(target.all_records())
    ids = [r.request_id for r in truth]
    assert len(ids) == len(set(ids))
    listed = {
        state: sorted(r.request_id for r in _every_page(target, ListFilter(states=(state,)))) for state in ALL_STATES
    }
    expected = {state: sorted(r.request_id for r in truth if r.state == state) for state in ALL_STATES}
    due = sorted(s.record.request_id for s in target.due(now, 1000))
    expected_due = sorted(
        r.request_id for r in truth if r.state in ACTIVE_STATES and r.next_attempt_at <= now and r.lease_until <= now
    )
    summary = target.summary(now - timedelta(days=1))
    table = target._table
    locks = {
        e["RequestId"]
        for e in table.query_entities("PartitionKey ge 'a-' and PartitionKey lt 'a.' and RowKey ge 'lock|'")
    }
    active = {r.request_id for r in truth if r.state in ACTIVE_STATES}
    callbacks = {e["RowKey"] for e in table.query_entities("PartitionKey eq 'cb'")}
    final_pending = {r.request_id for r in truth if r.is_final and r.callback_state == "pending"}
    return {
        "listed": listed == expected or (listed, expected),
        "due": due == expected_due or (due, expected_due),
        "summary": summary.by_state == {s: len(v) for s, v in expected.items()} or (summary.by_state, expected),
        "locks": locks == active or (locks, active),
        "callbacks": (final_pending <= callbacks <= final_pending | active) or (callbacks, final_pending),
    }


def _every_page(target: RequestStore, selection: ListFilter) -> list[Any]:
    records, token = [], None
    while True:
        page = target.list_page(selection, 2, token)
        records.extend(page.records)
        if page.continuation_token is None:
            return records
        token = page.continuation_token


CONSISTENT = {"listed": True, "due": True, "summary": True, "locks": True, "callbacks": True}


def _finalise(target: RequestStore, stored: Stored) -> None:
    target.replace(stored.record.evolve(state=FAILED, finished_at=utc_now(), last_error="x"), stored.etag)


def _reopen(target: RequestStore, stored: Stored) -> None:
    now = utc_now()
    current = target.get(stored.record.request_id)
    target.reopen(
        current,
        current.record.evolve(
            state=PENDING, finished_at=None, next_attempt_at=now, lease_until=now, reopened_from=FAILED
        ),
    )


def _intake(target: RequestStore, stored: Stored) -> None:
    customer = str(uuid.uuid4())
    target.create_with_lock(new_record(new_request_id(customer), customer, "Azure", "c", "m", state=PENDING))


@pytest.mark.parametrize("operation", [_intake, _finalise, _reopen], ids=["intake", "finalise", "reopen"])
def test_a_crash_between_any_two_writes_leaves_no_index_disagreeing_after_repair(app_env, operation):
    base = store()
    for crash_at in range(8):
        customer = str(uuid.uuid4())
        stored = make(customer, PENDING, target=base, callback_url="https://example.test/cb", callback_state="pending")
        if operation is _reopen:
            _finalise(base, stored)
        edge = TableEdge(base._table)
        edge.crash_before_write = crash_at
        crashing = RequestStore(edge)
        crashed = ""
        try:
            operation(crashing, stored)
            finished = True
        except StorageUnavailable as error:  # the store reports what the edge raised
            finished = False
            crashed = str(error)
        assert finished or "Crash" in crashed
        base.repair()
        assert _audit(base, utc_now() + timedelta(seconds=1)) == CONSISTENT, f"crash before write {crash_at}"
        if finished:
            return
    raise AssertionError("the operation never finished within 8 writes")


def test_retention_deletes_only_old_final_records_and_their_index_entries(app_env):
    old = utc_now() - timedelta(days=401)
    expired = [
        make(str(uuid.uuid4()), state, created_at=old).record.request_id for state in (FAILED, "complete", CANCELLED)
    ]
    kept_recent = make(str(uuid.uuid4()), FAILED, created_at=utc_now() - timedelta(days=399)).record.request_id
    kept_active = make(str(uuid.uuid4()), PENDING, created_at=old).record.request_id
    deleted = store().purge_expired(utc_now() - timedelta(days=400), batch=2)
    assert deleted == 2  # bounded batch
    assert store().purge_expired(utc_now() - timedelta(days=400), batch=500) == 1
    assert store().purge_expired(utc_now() - timedelta(days=400), batch=500) == 0
    for request_id in expired:
        assert store().get(request_id) is None
    assert store().get(kept_recent) is not None and store().get(kept_active) is not None
    leftovers = list(store()._table.query_entities("PartitionKey ge 'l-' and PartitionKey lt 'l.'"))
    assert [e["RequestId"] for e in leftovers] == [kept_recent]


def test_the_timer_applies_request_retention_days(api: Api, monkeypatch):
    monkeypatch.setenv("REQUEST_RETENTION_DAYS", "30")
    old = make(str(uuid.uuid4()), "complete", created_at=utc_now() - timedelta(days=31)).record.request_id
    young = make(str(uuid.uuid4()), "complete", created_at=utc_now() - timedelta(days=29)).record.request_id
    run_timer()
    assert store().get(old) is None and store().get(young) is not None


# --- the CLI ----------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str]:
    from shared.cli.__main__ import main

    code = main(["--settings", "/nonexistent.json", *args])
    return code, capsys.readouterr().out


def test_cli_list_cancel_and_retry(app_env, capsys):
    pending = make(str(uuid.uuid4()), PENDING).record.request_id
    failed = make(str(uuid.uuid4()), FAILED).record.request_id
    code, out = cli(capsys, "--json", "list", "--state", "pending,failed", "--top", "1", "--all")
    assert code == 0
    assert sorted(r["requestId"] for r in json.loads(out)["value"]) == sorted([pending, failed])
    code, out = cli(capsys, "--json", "cancel", "--request-id", pending)
    assert code == 0 and json.loads(out)["status"] == CANCELLED
    code, out = cli(capsys, "--json", "retry", "--request-id", failed)
    assert code == 0 and json.loads(out)["status"] == PENDING
    code, _ = cli(capsys, "cancel", "--request-id", pending.replace(pending[-4:], "0000"))
    assert code != 0
    assert cli(capsys, "list", "--state", "bogus")[0] == 2


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_export_streams_every_record(app_env, capsys, tmp_path, fmt):
    ids = {make(str(uuid.uuid4()), state).record.request_id for state in (PENDING, FAILED, "complete", SUBMITTED)}
    output = tmp_path / f"export.{fmt}"
    code, _ = cli(capsys, "export", "--format", fmt, "--output", str(output))
    assert code == 0
    if fmt == "json":
        exported = json.loads(output.read_text())
    else:
        import csv

        exported = list(csv.DictReader(output.open()))
    assert {r["requestId"] for r in exported} == ids
    assert {r["status"] for r in exported} == {PENDING, FAILED, "complete", SUBMITTED}


def test_cli_watch_once_shows_counts_and_latest_failures(app_env, capsys):
    failed = make(str(uuid.uuid4()), FAILED, last_error_type="upgrade-failed", last_error="boom")
    make(str(uuid.uuid4()), PENDING)
    code, out = cli(capsys, "watch", "--once")
    assert code == 0
    assert "pending" in out and "failed" in out and "upgrade-failed" in out
    assert failed.record.request_id[:8] in out


@pytest.mark.parametrize("value", ["0", "3651", "forever", "-5"])
def test_request_retention_days_is_validated(value):
    from shared.errors import ConfigurationError
    from shared.settings import load_settings

    from .test_settings import MINIMAL

    with pytest.raises(ConfigurationError, match="REQUEST_RETENTION_DAYS"):
        load_settings({**MINIMAL, "REQUEST_RETENTION_DAYS": value})
    assert load_settings(MINIMAL).request_retention_days == 400
    assert load_settings({**MINIMAL, "REQUEST_RETENTION_DAYS": "30"}).request_retention_days == 30
