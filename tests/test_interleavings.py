"""The interleaving explorer (issue 18): two operations of the real code run at the same time,
each paused at every storage call and every Partner Center call (`tests/interleavings.py`), in
every order a schedule family gives, with and without a crash of the first one at each of its
pause points; after each schedule, the invariants, through public behaviour only.

Operations go through the function app's routes (POST, GET, list, cancel, retry, callback) and
the store's public methods (`repair`, `purge_expired`) and the timer's `process_pending`. Each
schedule starts from a fresh table and a fresh customer, in one of a few *worlds* (the state of
the customer's request before the operations start), built through the same public code.

`test_interleavings_bounded` runs a fixed sample (normal run, `make test`);
`test_interleavings_exhaustive` every ordered pair in every world it matters in, plus the
stale-actor triples (`slow`, `make chaos`). `FOUND_ON_THE_OLD_STORE` lists the schedules the
explorer found failing on the store before issue 18's fixes (defects 1, 2, 8 and its own finding
A): `test_schedule_found_on_the_old_store` runs each and requires every invariant to hold now.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from shared.runtime import get_runtime, reset_runtime
from shared.upgrade_requests.processor import RequestProcessor
from shared.upgrade_requests.record import ACTIVE_STATES, FINAL_STATES, utc_now
from shared.upgrade_requests.store import ListFilter
from shared.upgrade_requests.timer_run import process_pending

from .conftest import Api, new_secret
from .interleavings import (
    Schedule,
    Scheduler,
    Segment,
    all_interleavings,
    crash_once,
    preempt_once,
    preempt_pair,
    preempt_twice,
)
from .webhook_receiver import Receiver

QUEUE = {"Prefer": "respond-async"}
FAMILY = "Azure"
FULL_ENUMERATION_LIMIT = 20  # C(p+q, p) at most this: every interleaving (exhaustive mode only)


# --- worlds: the customer's request before the operations start -------------------------------


@dataclass
class World:
    name: str
    customer_id: str
    key: str
    request_id: str | None = None
    state: str | None = None


@dataclass
class Answer:
    """What one operation told its caller about a request (None: it was told nothing)."""

    request_id: str | None
    state: str | None
    status: int
    keyed: bool = False


@dataclass
class Ctx:
    api: Api
    sandbox: Any
    receiver: Receiver
    world: World
    answers: dict[str, list[Answer]] = field(default_factory=dict)


def later_processor() -> RequestProcessor:
    """This instance's processor as it will be once every lease and poll interval has passed."""
    runtime = get_runtime()
    seconds = runtime.processor.policy.lease_seconds + runtime.processor.policy.poll_interval_seconds + 1
    return RequestProcessor(
        runtime.store,
        runtime.upgrades,
        runtime.processor.policy,
        runtime.processor.callbacks,
        clock=lambda: utc_now() + timedelta(seconds=seconds),
    )


def timer_run(owner: str = "timer-later") -> None:
    process_pending(later_processor(), owner=owner, concurrency=1, budget_seconds=30)


def _post(ctx: Ctx, *, queue: bool, keyed: bool) -> Answer:
    headers = {**(QUEUE if queue else {}), **({"Idempotency-Key": ctx.world.key} if keyed else {})}
    reply = ctx.api.upgrade(ctx.world.customer_id, FAMILY, headers=headers)
    body = reply.json() if reply.body else {}
    state = body.get("status") if isinstance(body.get("status"), str) else None  # a problem's is its HTTP status
    return Answer(body.get("requestId"), state or _problem_state(body), reply.status, keyed)


def _problem_state(body: dict[str, Any]) -> str | None:
    """A rejection (422 not-eligible) still names the request it stored, as `rejected`."""
    return "rejected" if body.get("requestId") and "not-eligible" in str(body.get("type")) else None


def build_world(name: str, api: Api, sandbox: Any, scheduler: Scheduler) -> World:
    world = World(name, str(uuid.uuid4()), f"explorer-{uuid.uuid4().hex[:12]}")
    customer = world.customer_id
    ctx = Ctx(api, sandbox, None, world)  # type: ignore[arg-type]
    if name == "empty":
        return world
    if name == "pending":
        answer = _post(ctx, queue=True, keyed=True)
    elif name == "submitted":
        sandbox.customers.set(customer, polls_until_final=1)
        answer = _post(ctx, queue=False, keyed=True)
    elif name == "rejected":
        sandbox.customers.set(customer, eligible=False)
        answer = _post(ctx, queue=False, keyed=True)
        sandbox.customers.set(customer, eligible=True)  # the operator fixed the cause: a forced retry may go
    elif name in ("failed", "failed-in-a"):
        sandbox.customers.set(customer, polls_until_final=1, outcome="failed")
        answer = _post(ctx, queue=False, keyed=True)
        if name == "failed":
            timer_run()
        else:  # the finalising timer dies right after it stored the record final (step 1 of the move)
            crash = Segment("finaliser", until=10_000, crash=True)
            run = scheduler.run({"finaliser": timer_run}, Schedule((crash,)), crash_after="State=failed")
            assert run.crashed == {"finaliser"}, run.describe()
        sandbox.customers.set(customer, outcome="complete")  # a retry's new upgrade completes
    else:
        raise ValueError(name)
    assert answer.request_id, f"world {name}: {answer}"
    world.request_id = answer.request_id
    world.state = get_runtime().store.get(answer.request_id).record.state
    expected = {"pending": "pending", "submitted": "submitted", "rejected": "rejected"}.get(name, "failed")
    assert world.state == expected, f"world {name} is {world.state}"
    return world


WORLDS = ("empty", "pending", "submitted", "failed", "rejected", "failed-in-a")


# --- operations -----------------------------------------------------------------------------


def _on_request(ctx: Ctx, reply: Any) -> Answer:
    body = reply.json() if reply.body else {}
    rid = ctx.world.request_id
    if reply.status == 404:
        return Answer(rid, "404", 404)
    state = body.get("status") if reply.status in (200, 202) else None
    return Answer(rid if state else None, state, reply.status)


def _route(ctx: Ctx, name: str, method: str, suffix: str, body: Any = None) -> Any:
    rid = ctx.world.request_id
    return ctx.api.call(
        name, method, f"product-upgrade-requests/{rid}{suffix}", json_body=body, route_params={"requestId": rid}
    )


def op_list(ctx: Ctx) -> list[Answer]:
    """A list of the customer's requests, every page (GET product-upgrade-requests?customerId=)."""
    ids: list[str] = []
    states: dict[str, str] = {}
    params = {"customerId": ctx.world.customer_id, "top": "2"}
    token = None
    for _ in range(20):
        query = "&".join(f"{k}={v}" for k, v in {**params, **({"continuationToken": token} if token else {})}.items())
        reply = ctx.api.call("list_product_upgrade_requests", "GET", f"product-upgrade-requests?{query}")
        assert reply.status == 200, reply.body
        body = reply.json()
        for item in body["value"]:
            ids.append(item["requestId"])
            states[item["requestId"]] = item["status"]
        link = body.get("nextLink")
        if not link:
            break
        token = link.split("continuationToken=")[1].split("&")[0]
        from urllib.parse import unquote

        token = unquote(token)
    return [Answer(rid, states[rid], 200) for rid in ids] + [Answer(None, "list:" + json.dumps(ids), 200)]


OPERATIONS: dict[str, tuple[Callable[[Ctx], Any], tuple[str, ...]]] = {
    # name: (the operation, the worlds it does something in)
    "post-inline": (lambda ctx: [_post(ctx, queue=False, keyed=False)], WORLDS),
    "post-inline-key": (lambda ctx: [_post(ctx, queue=False, keyed=True)], WORLDS),
    "post-queued": (lambda ctx: [_post(ctx, queue=True, keyed=False)], WORLDS),
    "post-queued-key": (lambda ctx: [_post(ctx, queue=True, keyed=True)], WORLDS),
    "timer": (lambda ctx: timer_run(), ("pending", "submitted", "failed-in-a")),
    "repair": (lambda ctx: get_runtime().store.repair(), ("failed-in-a",)),
    "cancel": (
        lambda ctx: [_on_request(ctx, _route(ctx, "cancel_product_upgrade_request", "POST", "/cancel"))],
        ("pending",),
    ),
    "retry": (
        lambda ctx: [_on_request(ctx, _route(ctx, "retry_product_upgrade_request", "POST", "/retry"))],
        ("failed", "failed-in-a"),
    ),
    "retry-force": (
        lambda ctx: [_on_request(ctx, _route(ctx, "retry_product_upgrade_request", "POST", "/retry", {"force": True}))],
        ("rejected", "failed"),
    ),
    "set-callback": (
        lambda ctx: [
            _on_request(ctx, _route(ctx, "put_product_upgrade_callback", "PUT", "/callback", {"url": ctx.receiver.url}))
        ],
        ("pending", "submitted", "failed", "failed-in-a"),
    ),
    "delete-callback": (
        lambda ctx: [_on_request(ctx, _route(ctx, "delete_product_upgrade_callback", "DELETE", "/callback"))],
        ("pending", "submitted", "failed", "failed-in-a"),
    ),
    "retention": (
        lambda ctx: get_runtime().store.purge_expired(utc_now() + timedelta(days=2), 50),
        ("failed", "rejected", "failed-in-a"),
    ),
    "list": (op_list, ("pending", "submitted", "failed", "rejected", "failed-in-a")),
    "get": (
        lambda ctx: [_on_request(ctx, ctx.api.request_status(ctx.world.request_id or ""))],
        ("pending", "submitted", "failed", "rejected", "failed-in-a"),
    ),
}

# Stale-actor triples: A reads, B changes what A read, C acts in A's gap, A goes on.
TRIPLES: tuple[tuple[str, str, str, str], ...] = (
    ("failed-in-a", "repair", "repair", "retry"),
    ("failed-in-a", "repair", "delete-callback", "retry"),
    ("failed-in-a", "delete-callback", "repair", "retry"),
    ("failed-in-a", "timer", "repair", "retry"),
    ("failed-in-a", "repair", "repair", "post-queued"),
)


def pairs() -> Iterator[tuple[str, str, str]]:
    """(world, A, B): every ordered pair of operations in every world both do something in."""
    for a, (_, worlds_a) in OPERATIONS.items():
        for b, (_, worlds_b) in OPERATIONS.items():
            for world in WORLDS:
                if world in worlds_a and world in worlds_b:
                    yield world, a, b


# Schedules the explorer found failing on the store before issue 18's fixes, with what broke then;
# each is a regression test now (test_schedule_found_on_the_old_store), and no finding is excused.
DEFECT_1 = "issue 18 defect 1: repair() racing a replace of a final record still in a- loses the request"
DEFECT_2 = "issue 18 defect 2: a stale repair releases the lock of a request reopened in its gap"
DEFECT_8 = "issue 18 defect 8: a list by customer holds one id twice (its a- and f- copies) during or after a move"
FINDING_A = (
    "explorer finding A (new): RequestStore.get reads a- then f-, so a read racing a reopen (retry) "
    "sees neither copy: 404 for a request that exists"
)
FOUND_ON_THE_OLD_STORE: dict[str, str] = {
    "failed-in-a: repair@2 delete-callback@4 repair* delete-callback*": DEFECT_1,
    "failed-in-a: repair@2 delete-callback@5 repair* delete-callback*": DEFECT_1,
    "failed-in-a: repair@2 delete-callback@6 repair* delete-callback*": DEFECT_1,
    "failed-in-a: repair@2 repair'* repair@8 retry* repair*": DEFECT_2,
    "failed-in-a: repair@3 repair'* repair@8 retry* repair*": DEFECT_2,
    "failed-in-a: repair@4 repair'* repair@8 retry* repair*": DEFECT_2,
    "failed-in-a: repair@5 repair'* repair@8 retry* repair*": DEFECT_2,
    "failed-in-a: delete-callback@3 delete-callback'@5 delete-callback* delete-callback'*": DEFECT_1,
    "failed-in-a: delete-callback@4 repair* delete-callback@9 retry* delete-callback*": DEFECT_2,
    "pending: cancel@6 list* cancel*": DEFECT_8,
    "rejected: retry-force!6 list*": DEFECT_8,
    "failed: get@2 retry* get*": FINDING_A,
    "rejected: get@2 retry-force* get*": FINDING_A,
    "failed: retry@2 retry'@2 retry* retry'*": FINDING_A,
}


# --- the invariants -------------------------------------------------------------------------


@dataclass
class Figures:
    schedules: int = 0
    checks: int = 0
    crashes: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


def check_invariants(ctx: Ctx, run: Any, creates_before: int, upgrades_before: int, figures: Figures) -> list[str]:
    """The invariants of docs/exactly-once.md that the explorer checks, through public behaviour."""
    world, api, sandbox = ctx.world, ctx.api, ctx.sandbox
    broken: list[str] = []

    def check(ok: bool, text: str) -> None:
        figures.checks += 1
        if not ok:
            broken.append(text)

    ordered = [(op, answer) for op in run.finished_order for answer in ctx.answers.get(op, [])]
    given: dict[str, str | None] = {}
    if world.request_id:
        given[world.request_id] = world.state
    for _, answer in ordered:
        if answer.request_id and answer.state != "404":
            given[answer.request_id] = answer.state
    retention_ran = "retention" in run.finished_order or "retention" in run.crashed

    def excused(request_id: str) -> bool:  # retention may delete a request last answered final
        return retention_ran and (given.get(request_id) or "") in FINAL_STATES | {"cancelled"}

    # During the schedule: no given request answered 404; no list held one id twice.
    for op, answer in ordered:
        if answer.state == "404" and answer.request_id and not excused(answer.request_id):
            check(False, f"{op} answered 404 for the given request {answer.request_id}")
        if answer.state and answer.state.startswith("list:"):
            listed = json.loads(answer.state[5:])
            check(len(listed) == len(set(listed)), f"{op}: a list held one id twice: {listed}")
    # Afterwards: every given request is found by GET and by the customer's list.
    store = get_runtime().store
    listed: list[str] = []
    active_ids: set[str] = set()
    token = None
    for _ in range(20):
        page = store.list_page(ListFilter(customer_id=world.customer_id), 2, token)
        listed += [record.request_id for record in page.records]
        # (a list may hold an id twice, active and final: defect 8; any active copy counts)
        active_ids |= {record.request_id for record in page.records if record.state in ACTIVE_STATES}
        token = page.continuation_token
        if token is None:
            break
    check(len(listed) == len(set(listed)), f"list of the customer holds one id twice: {listed}")
    # One active request per customer and family, and a new POST replays it (the lock names it).
    # (Before any GET: a GET of a submitted request polls it, and may finalise it.)
    active = sorted(active_ids)
    check(len(active) <= 1, f"two active requests for one customer: {active}")
    probe = api.upgrade(world.customer_id, FAMILY, headers=QUEUE)
    body = probe.json() if probe.body else {}
    if len(active) == 1:
        check(
            body.get("requestId") == active[0],
            f"a new POST for the customer with active request {active[0]} answered {probe.status} "
            f"{body.get('requestId')} ({body.get('status')}): the lock does not name the active request",
        )
    else:
        check(
            probe.status == 202 and body.get("requestId") not in given,
            f"a new POST for a customer with no active request answered {probe.status} {body}",
        )
    # Every given request is found by GET and by the customer's list.
    for request_id in given:
        if excused(request_id):
            continue
        check(request_id in listed, f"the customer's list lacks {request_id} (a caller was given it): {listed}")
        reply = api.request_status(request_id)
        check(reply.status in (200, 202), f"GET {request_id} (a caller was given it) answered {reply.status}")
    # An idempotency key answers its own request and no other.
    # (After retention deleted the key's request, a replay is a new request: docs/campaigns.md.)
    keyed = {answer.request_id for _, answer in ordered if answer.keyed and answer.request_id}
    if world.request_id:
        keyed.add(world.request_id)
    living = {request_id for request_id in keyed if not (excused(request_id) and store.get(request_id) is None)}
    check(len(living) <= 1, f"the Idempotency-Key answered several requests: {sorted(keyed)}")
    own = next(iter(keyed)) if len(keyed) == 1 else None
    if own is not None and not excused(own):  # a key lives as long as its request (issue 18, 3)
        replay = _post(ctx, queue=True, keyed=True)
        check(
            replay.request_id == own,
            f"the Idempotency-Key of {own} now answers {replay.status} {replay.request_id} ({replay.state})",
        )
    # At most one create per request: one MS-RequestId per customer in this schedule, one upgrade.
    creates = [
        call
        for call in sandbox.calls("partner_center", "create_upgrade")[creates_before:]
        if world.customer_id in call.body.decode(errors="replace")
    ]
    request_ids = {call.headers.get("MS-RequestId") for call in creates}
    check(len(request_ids) <= 1, f"creates with {len(request_ids)} MS-RequestIds for one customer: {request_ids}")
    made = sandbox.submissions(world.customer_id) - upgrades_before
    check(made <= 1, f"{made} upgrades created at Partner Center for one customer in one schedule")
    # Operations fail only as their callers would see it (a problem answer), never with an escape.
    for op, error in run.errors.items():
        check(False, f"{op} raised {type(error).__name__}: {error}")
    return broken


# --- running ----------------------------------------------------------------------------------


class Explorer:
    def __init__(self, api: Api, sandbox: Any, receiver: Receiver, scheduler: Scheduler) -> None:
        self.api, self.sandbox, self.receiver, self.scheduler = api, sandbox, receiver, scheduler
        self.figures = Figures()

    def clean_table(self) -> None:
        from azure.data.tables import TableClient

        with TableClient.from_connection_string(
            os.environ["AzureWebJobsStorage"],  # noqa: SIM112 - the host's own spelling
            table_name=os.environ["UPGRADE_REQUESTS_TABLE"],
        ) as table:
            for entity in list(table.list_entities(select=["PartitionKey", "RowKey"])):
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])

    def one(self, world_name: str, names: tuple[str, ...], schedule: Schedule) -> tuple[Any, list[str]]:
        """Run one schedule of these operations from a fresh world; (the run, broken invariants)."""
        self.clean_table()
        world = build_world(world_name, self.api, self.sandbox, self.scheduler)
        ctx = Ctx(self.api, self.sandbox, self.receiver, world)
        creates_before = len(self.sandbox.calls("partner_center", "create_upgrade"))
        upgrades_before = self.sandbox.submissions(world.customer_id)

        def bound(name: str) -> Callable[[], Any]:
            operation = OPERATIONS[name.rstrip("'")][0]

            def call() -> Any:
                result = operation(ctx)
                if isinstance(result, list):
                    ctx.answers[name] = result
                return result

            return call

        run = self.scheduler.run({name: bound(name) for name in names}, schedule)
        broken = check_invariants(ctx, run, creates_before, upgrades_before, self.figures)
        self.figures.schedules += 1
        self.figures.crashes += int(schedule.crashes)
        return run, broken

    def record(self, ident: str, run: Any, broken: list[str]) -> None:
        if os.environ.get("EXPLORER_VERBOSE"):
            print(f"{ident}: {len(broken)} broken\n{run.describe()}")
        if not broken:
            return
        text = f"{ident}\n  broken: " + "\n  broken: ".join(broken) + "\n" + run.describe()
        self.figures.violations.append(text)  # every finding fails the run: none is excused
        log = os.environ.get("EXPLORER_LOG")  # a long run's findings, as they come
        if log:
            with open(log, "a") as out:
                out.write(text + "\n\n")

    def pair(
        self, world: str, a: str, b: str, *, exhaustive: bool, sample: random.Random | None = None, sample_size: int = 2
    ) -> None:
        """Every schedule of the families for (A, B) in this world (a sample of them with `sample`)."""
        names = (a, b) if a != b else (a, b + "'")
        first = Schedule((Segment(names[0]), Segment(names[1])))
        run, broken = self.one(world, names, first)
        self.record(f"{world}: {first}", run, broken)
        calls_a = run.calls[names[0]]
        schedules = [s for s in preempt_once(names[0], names[1], calls_a) if s != first]
        schedules += crash_once(names[0], names[1], calls_a)
        b_first = Schedule((Segment(names[0], 1), Segment(names[1]), Segment(names[0])))
        run_b, broken_b = self.one(world, names, b_first)
        self.record(f"{world}: {b_first}", run_b, broken_b)
        schedules.remove(b_first)
        calls_b = run_b.calls[names[1]]
        schedules += preempt_pair(names[0], names[1], calls_a, calls_b)
        if exhaustive:
            every = all_interleavings(names[0], names[1], calls_a, calls_b, FULL_ENUMERATION_LIMIT)
            schedules += [s for s in every or [] if s not in schedules]
        if sample is not None:
            schedules = sample.sample(schedules, min(len(schedules), sample_size))
        for schedule in schedules:
            run, broken = self.one(world, names, schedule)
            self.record(f"{world}: {schedule}", run, broken)

    def triple(self, world: str, a: str, b: str, c: str) -> None:
        names = (a, b if b != a else b + "'", c)
        probe = Schedule((Segment(names[0]), Segment(names[1]), Segment(names[2])))
        run, broken = self.one(world, names, probe)
        self.record(f"{world}: {probe}", run, broken)
        for i in range(2, run.calls[names[0]] + 1):
            gap = Schedule((Segment(names[0], i), Segment(names[1]), Segment(names[0]), Segment(names[2])))
            run_i, broken = self.one(world, names, gap)
            self.record(f"{world}: {gap}", run_i, broken)
            for schedule in preempt_twice(names[0], names[1], names[2], i, run_i.calls[names[0]]):
                run, broken = self.one(world, names, schedule)
                self.record(f"{world}: {schedule}", run, broken)

    def report(self, mode: str) -> str:
        f = self.figures
        return (
            f"interleavings ({mode}): {f.schedules} schedules ({f.crashes} with a crash), {f.checks} invariant "
            f"checks, {len(f.violations)} violations, {f.seconds:.1f} s"
        )


@pytest.fixture
def explorer(api: Api, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Explorer]:
    sandbox.set_secret("webhook-signing-secret", new_secret())
    monkeypatch.setenv("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")  # the receiver is on loopback
    reset_runtime()
    runtime = get_runtime()
    runtime.tokens.access_token()  # warm: a token fetch is not a pause point
    with Receiver() as receiver, Scheduler(runtime.settings.partner_center_endpoint).installed() as scheduler:
        yield Explorer(api, sandbox, receiver, scheduler)


def _finish(explorer: Explorer, mode: str, started: float, record_property: Callable[[str, object], None]) -> None:
    explorer.figures.seconds = time.monotonic() - started
    print("\n" + explorer.report(mode))
    record_property("figures", explorer.report(mode))  # printed at the end of the run (conftest.py)
    assert not explorer.figures.violations, (
        f"{len(explorer.figures.violations)} schedule(s) broke an invariant:\n\n"
        + "\n\n".join(explorer.figures.violations[:5])
    )


@pytest.mark.parametrize("ident", list(FOUND_ON_THE_OLD_STORE))
def test_schedule_found_on_the_old_store(explorer: Explorer, ident: str):
    """Each schedule the explorer found failing on the old store (its defect in the dict) holds now."""
    world, text = ident.split(": ", 1)
    schedule = Schedule.parse(text)
    names = tuple(dict.fromkeys(segment.actor for segment in schedule.segments))
    run, broken = explorer.one(world, names, schedule)
    assert not broken, f"{ident}\n  broken: " + "\n  broken: ".join(broken) + "\n" + run.describe()


BOUNDED_PAIRS = 14  # pairs sampled (seeded) for the normal run, 2-3 schedules each


def test_interleavings_bounded(explorer: Explorer, record_property: Callable[[str, object], None]):
    """A fixed, seeded sample of (world, A, B) with two schedules each."""
    started = time.monotonic()
    rng = random.Random(18)
    catalogue = list(pairs())
    for world, a, b in rng.sample(catalogue, BOUNDED_PAIRS):
        explorer.pair(world, a, b, exhaustive=False, sample=rng)
    _finish(explorer, "bounded", started, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("part", [*WORLDS, "triples"])
def test_interleavings_exhaustive(explorer: Explorer, record_property: Callable[[str, object], None], part: str):
    """Every ordered pair in this world (both operations doing something in it), each with every
    schedule of its families (and every interleaving when there are at most
    FULL_ENUMERATION_LIMIT); or the stale-actor triples. One part per world, so that a part can
    be run alone (`-k "exhaustive and failed-in-a"`) and each prints its own figures."""
    started = time.monotonic()
    only = os.environ.get("EXPLORER_ONLY")  # an operation: only the pairs it is in
    sample_size = int(os.environ.get("EXPLORER_SAMPLE", "0"))  # a quick survey: this many schedules per pair
    rng = random.Random(18)
    # (the pairs without an intake first: a long run that is stopped early has searched those)
    catalogue = [pair for pair in pairs() if pair[0] == part and (not only or only in pair)]
    for world, a, b in sorted(catalogue, key=lambda pair: sum(op.startswith("post") for op in pair[1:])):
        if sample_size:
            explorer.pair(world, a, b, exhaustive=False, sample=rng, sample_size=sample_size)
        else:
            explorer.pair(world, a, b, exhaustive=True)
        if os.environ.get("EXPLORER_LOG"):
            with open(os.environ["EXPLORER_LOG"], "a") as out:
                out.write(f"# done {world} {a} {b}: {explorer.report('exhaustive')}\n")
    for world, a, b, c in TRIPLES if part == "triples" else ():
        if not only or only in (world, a, b, c):
            explorer.triple(world, a, b, c)
    _finish(explorer, f"exhaustive, {part}", started, record_property)
