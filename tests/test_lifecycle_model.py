"""A model-based (stateful property) test of the request lifecycle, over the real code.

Hypothesis drives a `RuleBasedStateMachine` whose rules are what happens to a deployment: callers
POST (with and without `Idempotency-Key`, duplicates, queued with `Prefer: respond-async`) and
GET; the timer runs on two instances (two runtimes, two lease owners); Partner Center throttles,
fails, loses answers before or after the create took effect, lands a create late, or accepts
without a `Location`; time passes (backoffs end, leases expire); a worker crashes holding a claim
(before or after its create went out); access tokens expire; an operator re-consents. Storage is
Azurite, Partner Center / Entra / Key Vault are the sandbox; nothing inside the app is mocked.

After every step the invariants below are checked (they are also listed in docs/exactly-once.md);
at the end of each example the faults stop and the "drain" checks that every accepted request
reaches a final state. Time is moved by rewriting `next_attempt_at`/`lease_until` in the table
(what the clock passing would do), so the test never sleeps for a lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from localrun.timers import call_function
from sandbox import Sandbox
from sandbox.server import REFRESH_TOKEN_SECRET
from shared.runtime import Runtime, build_runtime, get_runtime, reset_runtime
from shared.settings import load_settings
from shared.upgrade_requests.processor import ProcessingPolicy, RequestProcessor
from shared.upgrade_requests.record import FAILED, PENDING, SUBMITTING, UpgradeRequestRecord, utc_now
from shared.upgrade_requests.store import WriteConflict
from shared.upgrade_requests.timer_run import process_pending

from .conftest import Api, Exchange, function

FAMILY = "Azure"
QUEUE = {"Prefer": "respond-async"}
DRAIN_ROUNDS = 12

# Faults the model may queue, per Partner Center operation. A 429/503 whose Retry-After is past
# the inline budget (PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS=2 in the tests) comes straight back.
MAX_QUEUED_FAULTS = 4  # queued Partner Center faults at most (each hits the next matching call)
CREATE_FAULTS: dict[str, dict[str, Any]] = {
    "429": {"kind": "status", "status": 429, "retry_after": 60},
    "503": {"kind": "status", "status": 503, "retry_after": 60},
    "500": {"kind": "status", "status": 500},  # ambiguous: the create may or may not have happened
    "lost-before": {"kind": "reset"},  # nothing happened, but the client cannot know
    "lost-after": {"kind": "process_then_reset"},  # the upgrade exists, the answer is lost
    "lands-late": {"kind": "land_late"},  # unanswered now; takes effect at `land_late`
    "no-location": {"kind": "process_without_location"},  # 202, but no upgrade id to read
}
QUERY_FAULTS: dict[str, dict[str, Any]] = {
    "429": {"kind": "status", "status": 429, "retry_after": 60},
    "500": {"kind": "status", "status": 500},
    "reset": {"kind": "reset"},
}
# A recorded create whose caller cannot know whether it took effect.
AMBIGUOUS_FAULTS = frozenset(
    {"reset", "process_then_reset", "process_then_hang", "land_late", "process_without_location"}
)


# --- the invariants, written once -------------------------------------------------------------


def create_is_ambiguous(status: int, fault: str | None) -> bool:
    """No answer, a 500/502/504, or a 202 without a usable Location: the upgrade may exist."""
    if fault == "process_without_location":  # only a 2xx loses something: a refusal is still a refusal
        return 200 <= status < 300
    return fault in AMBIGUOUS_FAULTS or status == 0 or status in (500, 502, 504)


def create_may_have_landed(status: int, fault: str | None) -> bool:
    """Anything but a definite refusal (429/503 and other 4xx say 'not done')."""
    return create_is_ambiguous(status, fault) or 200 <= status < 300


@dataclass
class Violations:
    found: list[str] = field(default_factory=list)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.found.append(message)


def check_invariants(world: World) -> list[str]:
    """Every invariant of the lifecycle, over the sandbox's ground truth and the table."""
    v = Violations()
    records = {record.request_id: record for record in world.store_records()}
    calls = world.partner_center_calls()
    for customer in world.customers:
        # I1: at most one upgrade per customer and product family at Partner Center
        # (campaigns included) (one that
        # Partner Center reports failed does not count: a new request may try again).
        states = world.sandbox.upgrade_states(customer)
        v.check(len([s for s in states if s != "failed"]) <= 1, f"I1: {customer} has upgrades {states}")
        # I2: after an ambiguous create, no create until an eligibility check has answered.
        must_check = False
        for call in calls.get(customer, []):
            if call.operation == "create_upgrade":
                v.check(not must_check, f"I2: create for {customer} after an ambiguous create, no eligibility between")
                if create_is_ambiguous(call.status, call.fault):
                    must_check = True
            elif call.operation == "eligibility" and call.status == 200:
                must_check = False
    landed = {
        (call.header("MS-RequestId") or "").lower()
        for customer_calls in calls.values()
        for call in customer_calls
        if call.operation == "create_upgrade" and create_may_have_landed(call.status, call.fault)
    }
    # I0: nothing accepted is lost: every request id a caller was given is stored.
    lost = sorted(set(world.accepted) - set(records))
    v.check(not lost, f"I0: accepted requests not stored: {lost}")
    for record in records.values():
        # I3: a request whose create may have landed is never `pending`, nor `failed` without an upgrade.
        if record.ms_request_id.lower() in landed:
            v.check(
                record.state != PENDING and not (record.state == FAILED and record.upgrade_id is None),
                f"I3: request {record.request_id} is {record.state} (upgrade {record.upgrade_id}) although its "
                f"create may have reached Partner Center (last error: {record.last_error_type})",
            )
        # I4: the customer's active lock is held by a request until it is final.
        if not record.is_final:
            lock = world.a.store.active(record.customer_id, record.product_family)
            v.check(
                lock is not None and lock.request_id == record.request_id,
                f"I4: request {record.request_id} is {record.state} but the active lock is "
                f"{lock.request_id if lock else 'gone'}",
            )
    # I6: no secret in any log line or response.
    secrets = {world.sandbox.app_secret, *world.sandbox.issued_refresh_tokens, *world.sandbox.issued_access_tokens}
    texts = world.new_texts()
    leaks = [s for s in secrets if s and any(s in text for text in texts)]
    v.check(not leaks, f"I6: {len(leaks)} secret value(s) in logs or responses")
    # I7: the vault's refresh token is one Entra still redeems (a re-consent is never overwritten
    # by an older chain that is then withdrawn).
    in_vault = world.sandbox.secrets.get(REFRESH_TOKEN_SECRET)
    v.check(world.sandbox.refresh_token_is_valid(in_vault), "I7: the refresh token in Key Vault is revoked")
    return v.found


# I5 (once faults stop, every accepted request reaches a final state) is `World.drain`.


# --- the world the rules act on ---------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


@dataclass
class World:
    sandbox: Sandbox
    api: Api
    exchange: Exchange
    a: Runtime
    b: Runtime
    customers: list[str]
    log: _Lines
    accepted: dict[str, str] = field(default_factory=dict)  # request id -> customer
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> request id
    campaigns_to_start: list[str] = field(default_factory=list)  # campaigns made without autoStart
    seen_lines: int = 0
    seen_bodies: int = 0
    failed: bool = False

    def store_records(self) -> list[UpgradeRequestRecord]:
        return list(self.a.store.all_records())

    def partner_center_calls(self) -> dict[str, list[Any]]:
        by_customer: dict[str, list[Any]] = {}
        wanted = {customer.lower() for customer in self.customers}
        for call in self.sandbox.calls("partner_center"):
            with contextlib.suppress(ValueError, AttributeError):
                customer = str(call.json().get("customerId", "")).lower()
                if customer in wanted:
                    by_customer.setdefault(customer, []).append(call)
        return by_customer

    def new_texts(self) -> list[str]:
        lines, bodies = self.log.lines[self.seen_lines :], self.exchange.bodies[self.seen_bodies :]
        self.seen_lines += len(lines)
        self.seen_bodies += len(bodies)
        return lines + bodies

    def time_passes(self) -> None:
        """Every backoff and every lease ends: what the clock passing would do."""
        past = utc_now() - timedelta(seconds=1)
        for record in self.store_records():
            if record.is_final:
                continue
            stored = self.a.store.get(record.request_id)
            if stored is None:
                continue
            with contextlib.suppress(WriteConflict):
                self.a.store.replace(replace(stored.record, next_attempt_at=past, lease_until=past), stored.etag)

    def timer(self, instance: str) -> None:
        if instance == "a":  # the timer function as the host calls it, on the HTTP instance
            call_function(
                function("process_pending_requests"), TimerRequest(past_due=False), "process_pending_requests"
            )
        else:
            process_pending(self.b.processor, owner="instance-b", concurrency=2, budget_seconds=30)

    def active(self) -> list[UpgradeRequestRecord]:
        return [record for record in self.store_records() if not record.is_final]

    def drain(self) -> list[str]:
        """I5: faults stop (late creates land), time passes, both timers run until all is final."""
        self.sandbox.faults.clear()
        self.sandbox.land_late()
        for round_ in range(DRAIN_ROUNDS):
            if not self.active():
                break
            self.time_passes()
            self.timer("a" if round_ % 2 == 0 else "b")
        return [
            f"I5: request {record.request_id} still {record.state} after the drain ({record.last_error_type}: "
            f"{record.last_error})"
            for record in self.active()
        ]


# --- the machine ------------------------------------------------------------------------------

CONTEXT: dict[str, Any] = {}  # the pytest fixtures, for the machine (hypothesis builds it itself)


class LifecycleModel(RuleBasedStateMachine):
    world: World

    @initialize(
        max_attempts=st.sampled_from([1, 3]),
        second_customer=st.sampled_from(["complete", "failed", "not-eligible"]),
    )
    def start(self, max_attempts: int, second_customer: str) -> None:
        sandbox: Sandbox = CONTEXT["sandbox"]
        sandbox.faults.clear()
        sandbox.forget_late()
        sandbox.reset_calls()
        sandbox.revoke_refresh_tokens()  # each example starts from one valid consent in the vault
        sandbox.reconsent()
        os.environ["UPGRADE_REQUESTS_TABLE"] = "m" + uuid.uuid4().hex[:20]
        os.environ["PENDING_MAX_ATTEMPTS"] = str(max_attempts)
        reset_runtime()
        customers = [str(uuid.uuid4()), str(uuid.uuid4())]
        sandbox.customers.set(customers[0], polls_until_final=1)
        scenario = {"complete": {}, "failed": {"outcome": "failed"}, "not-eligible": {"eligible": False}}
        sandbox.customers.set(customers[1], polls_until_final=1, **scenario[second_customer])
        handler = _Lines()
        logging.getLogger().addHandler(handler)
        self.world = World(
            sandbox=sandbox,
            api=CONTEXT["api"],
            exchange=CONTEXT["exchange"],
            a=get_runtime(),
            b=build_runtime(load_settings()),  # a second Functions instance: its own caches and owner
            customers=customers,
            log=handler,
        )
        CONTEXT.setdefault("stats", Stats()).examples += 1

    # callers

    # Hypothesis orders rules by argument count, then name, and favours the first ones: the rules
    # that matter most (post, timer, create faults) take one (tuple) argument, the rarer ones more.
    @rule(request=st.tuples(st.integers(0, 1), st.sampled_from([None, None, "k1", "k2"]), st.booleans()))
    def post(self, request: tuple[int, str | None, bool]) -> None:
        """customer index, Idempotency-Key (None: none), queued (`Prefer: respond-async`)."""
        customer, key, queued = request
        world = self.world
        headers = dict(QUEUE) if queued else {}
        if key:
            headers["Idempotency-Key"] = f"{key}-{customer}-{world.customers[0][:8]}"
        reply = world.api.upgrade(world.customers[customer], headers=headers)
        assert reply.status != 500, reply.body[:300]
        body = reply.json()
        if reply.status >= 400:
            assert reply.content_type.startswith("application/problem+json"), reply.body[:300]
        request_id = body.get("requestId")
        if request_id:  # stored (a refusal on the first submission is stored as `rejected`)
            world.accepted[request_id] = world.customers[customer]
        if key and request_id and reply.status < 400:
            first = world.keys.setdefault(headers["Idempotency-Key"], request_id)
            assert first == request_id, "a replayed Idempotency-Key answered another request"
        self.step("post")

    # No `@precondition` reads the world (what the app, the sandbox or the clock did): hypothesis
    # replays an example by its draws, and a precondition that came out otherwise on the replay
    # (a fault consumed a little later, a late create not yet waiting) made the long run fail with
    # FlakyStrategyDefinition. A rule with nothing to do in this world returns instead.

    @rule(pick=st.integers(0, 50), times=st.integers(1, 2))
    def get(self, pick: int, times: int) -> None:
        if not self.world.accepted:
            return
        ids = sorted(self.world.accepted)
        request_id = ids[pick % len(ids)]
        for _ in range(times - 1):
            self.world.api.request_status(request_id)
        reply = self.world.api.request_status(request_id)
        assert reply.status in (200, 202), reply.body[:300]
        self.step("get")

    @rule(both=st.booleans(), auto_start=st.booleans())
    def campaign(self, both: bool, auto_start: bool) -> None:
        """A transition campaign over one or both customers (issue 19), at the fastest pace: its
        requests go through the same intake, so I1 (one upgrade per customer) holds with it too."""
        world = self.world
        customers = world.customers if both else world.customers[:1]
        body = {"name": "model", "customers": customers, "perHour": 36000, "autoStart": auto_start}
        reply = world.api.call("create_campaign", "POST", "campaigns", json_body=body)
        assert reply.status == 202, reply.body[:300]
        if not auto_start:
            world.campaigns_to_start.append(reply.json()["campaignId"])
        self.step("campaign")

    @rule(pick=st.integers(0, 5))
    def start_campaign(self, pick: int) -> None:
        """An operator starts a campaign made without autoStart (409 while it is still assessing)."""
        if not self.world.campaigns_to_start:
            return
        campaign_id = self.world.campaigns_to_start[pick % len(self.world.campaigns_to_start)]
        reply = self.world.api.call(
            "start_campaign", "POST", f"campaigns/{campaign_id}/start", route_params={"campaignId": campaign_id}
        )
        assert reply.status in (200, 409), reply.body[:300]
        self.step("start campaign")

    # the timer, on two instances, and time passing

    @rule(run=st.tuples(st.sampled_from(["a", "b"]), st.booleans()))
    def timer(self, run: tuple[str, bool]) -> None:
        """The timer on instance a or b, after time passed (backoffs and leases ended) or not."""
        instance, time_passes = run
        if time_passes:
            self.world.time_passes()
        self.world.timer(instance)
        self.step("timer after time passed" if time_passes else "timer")

    # Partner Center faults (queued: each hits the next matching call), and late creates landing

    @rule(faults=st.tuples(st.sampled_from(sorted(CREATE_FAULTS)), st.sampled_from([None, *sorted(CREATE_FAULTS)])))
    def create_faults(self, faults: tuple[str, str | None]) -> None:
        """The next create fails, and maybe the one after it (e.g. the resend after a lost answer)."""
        if len(self.world.sandbox.faults.pending()) >= MAX_QUEUED_FAULTS:
            return
        first, then = faults
        for name in (first, then):
            if name is not None:
                spec = dict(CREATE_FAULTS[name])
                self.world.sandbox.faults.add("partner_center.create_upgrade", spec.pop("kind"), **spec)
        self.step("fault")

    @rule(operation=st.sampled_from(["eligibility", "upgrade_status"]), name=st.sampled_from(sorted(QUERY_FAULTS)))
    def query_fault(self, operation: str, name: str) -> None:
        if len(self.world.sandbox.faults.pending()) >= MAX_QUEUED_FAULTS:
            return
        spec = dict(QUERY_FAULTS[name])
        self.world.sandbox.faults.add(f"partner_center.{operation}", spec.pop("kind"), **spec)
        self.step("fault")

    @rule()
    def late_creates_land(self) -> None:
        if self.world.sandbox.late_waiting == 0:
            return
        self.world.sandbox.land_late()
        self.step("land")

    # crashes, tokens, operators

    @rule(after_create=st.booleans())
    def worker_crashes(self, after_create: bool) -> None:
        """A worker claims a due request and dies: before its create, or right after sending it."""
        world = self.world
        due = world.a.store.due(utc_now(), 50)
        if not due:
            return
        stored = due[0]
        crashed = RequestProcessor(world.a.store, world.a.upgrades, ProcessingPolicy(lease_seconds=300))
        claimed = crashed.claim(stored, "crashed-worker")
        if claimed is not None and after_create and claimed.record.state == SUBMITTING:
            # What `advance` sends before it stores anything; the process dies before the store.
            with contextlib.suppress(Exception):
                crashed._submit(claimed.record, resolve_first=stored.record.state == SUBMITTING)
        self.step("crash")

    @rule(tokens_expire=st.booleans(), reconsent=st.booleans(), withdraw_old=st.booleans())
    def credentials(self, tokens_expire: bool, reconsent: bool, withdraw_old: bool) -> None:
        """Access tokens expire (Partner Center answers 401: renewal, rotation, write-back), and/or
        an operator re-consents (a new refresh token in the vault), and/or the old consent is
        withdrawn (every refresh token not from the latest consent's chain revoked)."""
        sandbox = self.world.sandbox
        if tokens_expire:
            sandbox.expire_access_tokens(delegated_only=True)
        if reconsent:
            sandbox.reconsent()
        if withdraw_old:
            sandbox.revoke_refresh_tokens(keep_latest_consent=True)
        self.step("credentials")

    # checks

    def step(self, kind: str) -> None:
        stats: Stats = CONTEXT["stats"]
        stats.steps += 1
        stats.kinds[kind] = stats.kinds.get(kind, 0) + 1

    @invariant()
    def lifecycle_invariants(self) -> None:
        if not hasattr(self, "world"):
            return
        CONTEXT["stats"].checks += 1
        found = check_invariants(self.world)
        self.world.failed = bool(found)
        assert not found, "\n".join(found)

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        world = self.world
        try:
            if world.failed:  # already reported by the invariant
                return
            drained = world.drain()
            found = drained + check_invariants(world)
            assert not found, "\n".join(found)
        finally:
            logging.getLogger().removeHandler(world.log)
            world.sandbox.faults.clear()
            world.sandbox.forget_late()


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    checks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


def run_model(sandbox: Sandbox, api: Api, exchange: Exchange, monkeypatch: pytest.MonkeyPatch, **limits: Any) -> Stats:
    monkeypatch.setenv("UPGRADE_REQUESTS_TABLE", os.environ["UPGRADE_REQUESTS_TABLE"])  # restored afterwards
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", os.environ.get("PENDING_MAX_ATTEMPTS", "8"))
    function("submit_product_upgrade")  # index function_app once
    CONTEXT.clear()
    CONTEXT.update(sandbox=sandbox, api=api, exchange=exchange, stats=Stats())
    try:
        run_state_machine_as_test(
            LifecycleModel,
            settings=settings(
                deadline=None,
                database=None,
                print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                **limits,
            ),
        )
    finally:
        stats = CONTEXT["stats"]
        print(f"lifecycle model: {json.dumps(stats.__dict__)}")
        reset_runtime()
    return stats


def test_lifecycle_model_bounded(app_env, sandbox: Sandbox, api: Api, exchange: Exchange, monkeypatch) -> None:
    stats = run_model(sandbox, api, exchange, monkeypatch, max_examples=12, stateful_step_count=20)
    assert stats.examples >= 12 and stats.checks >= stats.steps


@pytest.mark.slow
def test_lifecycle_model_long(app_env, sandbox: Sandbox, api: Api, exchange: Exchange, monkeypatch) -> None:
    # About 12 min on a quiet machine (50 examples of 30 steps took 3 min under load).
    stats = run_model(sandbox, api, exchange, monkeypatch, max_examples=150, stateful_step_count=40)
    assert stats.examples >= 150
