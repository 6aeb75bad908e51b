"""A model-based (stateful property) test of the request lifecycle, over the real code.

Hypothesis drives a `RuleBasedStateMachine` whose rules are what happens to a deployment: callers
POST (with and without `Idempotency-Key`, duplicates, queued with `Prefer: respond-async`), GET,
list (by customer and by state, a page at a time, following continuation tokens), subscribe and
unsubscribe a completion callback; operators cancel and retry (forced or not; over HTTP or with
the CLI); the timer runs on two instances (two runtimes, two lease owners); `repair()` runs;
retention runs after time moved past its window (the timer, or `purge_expired`); Partner Center
throttles, fails, loses answers before or after the create took effect, lands a create late, or
accepts without a `Location`; time passes (backoffs end, leases expire); a worker crashes holding
a claim (before or after its create went out); storage goes away partway through an operation
(the long run: `tests/storage_outage.py`); access tokens expire; an operator re-consents.
Storage is Azurite, Partner Center / Entra / Key Vault are the sandbox, callbacks go to a
loopback receiver; nothing inside the app is mocked.

The model drives the store only through its public behaviour (routes, the timer, the CLI, and
the store's get/replace/repair/purge_expired/list_page/all_records): it never names an entity or
a partition, so it holds for any layout that keeps the promises.

After every step the invariants below are checked (they are also listed in docs/exactly-once.md,
"The invariants"); at the end of each example the faults stop and the "drain" checks that every
accepted request reaches a final state. Time is moved by rewriting `next_attempt_at`/`lease_until`
(and a pending callback's `callback_next_at`) through `store.replace` (what the clock passing would
do), and retention is given a clock past its window, so the test never sleeps.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from sandbox.azurite import Azurite
from sandbox.server import REFRESH_TOKEN_SECRET
from shared.cli.__main__ import main as cli_main
from shared.runtime import Runtime, build_runtime, get_runtime, reset_runtime
from shared.settings import load_settings
from shared.upgrade_requests.processor import ProcessingPolicy, RequestProcessor
from shared.upgrade_requests.record import (
    ALL_STATES,
    CALLBACK_PENDING,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    PENDING,
    REJECTED,
    SUBMITTING,
    UpgradeRequestRecord,
    utc_now,
)
from shared.upgrade_requests.store import ListFilter, Stored, WriteConflict
from shared.upgrade_requests.timer_run import RETENTION_BATCH, process_pending

from .conftest import Api, Exchange, function, new_secret
from .storage_outage import StorageOutage
from .webhook_receiver import Receiver

FAMILY = "Azure"
QUEUE = {"Prefer": "respond-async"}
DRAIN_ROUNDS = 12
INVARIANT_PAGE = 2  # the invariants' list walks use small pages, so continuation tokens are followed
MAX_PAGES = 200  # a list walk that has not ended after this many pages is reported (a token loop)
CLI_SETTINGS = "/nonexistent/lifecycle-model/local.settings.json"  # the CLI reads the environment only

# Invariant checks that today's code is known to fail, each someone's to fix: a failure of one of
# these is counted and printed at the end of the run (with its first message) instead of failing
# it (with True: only in an example where a storage outage cut an operation short; elsewhere it
# still fails the run). Delete the entry once the fix is in: from then on the model holds the code to it.
KNOWN_DEFECTS: dict[str, tuple[str, bool]] = {}  # defects 3 and 8 of issue 18 were here until fixed

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
MAX_QUEUED_RECEIVER_FAULTS = 2  # the callback receiver's next answers (500), at most
# Operations a storage outage may cut short, after 0-12 of their storage requests went through.
OUTAGE_OPERATIONS = (
    "post",
    "post queued with a key",
    "timer",
    "retry",
    "cancel",
    "callback set",
    "callback delete",
    "repair",
    "retention",
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
    """The checks of one evaluation: how many of each invariant ran, and those that failed."""

    found: list[tuple[str, str]] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)

    def check(self, name: str, condition: bool, message: str) -> None:
        self.checked[name] += 1
        if not condition:
            self.found.append((name, f"{name}: {message}"))


def check_invariants(world: World) -> Violations:
    """Every invariant of the lifecycle that holds between steps, over the sandbox's ground truth
    and what the app answers (the store's public reads, the routes)."""
    v = Violations()
    records = {record.request_id: record for record in world.store_records()}
    calls = world.partner_center_calls()
    for customer in world.customers:
        # I1: at most one upgrade per customer and product family at Partner Center
        # (campaigns included) (one that
        # Partner Center reports failed does not count: a new request may try again).
        states = world.sandbox.upgrade_states(customer)
        v.check("I1", len([s for s in states if s != "failed"]) <= 1, f"{customer} has upgrades {states}")
        # I2: after an ambiguous create, no create until an eligibility check has answered.
        must_check = False
        for call in calls.get(customer, []):
            if call.operation == "create_upgrade":
                v.check(
                    "I2", not must_check, f"create for {customer} after an ambiguous create, no eligibility between"
                )
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
    live = world.live()
    # I0: nothing accepted is lost: every request id a caller was given is stored (until retention).
    lost = sorted(set(live) - set(records))
    v.check("I0", not lost, f"accepted requests not stored: {lost}")
    for record in records.values():
        # I3: a request whose create may have landed is never `pending` or `cancelled`, nor
        # `failed` without an upgrade.
        if record.ms_request_id.lower() in landed:
            v.check(
                "I3",
                record.state not in (PENDING, CANCELLED) and not (record.state == FAILED and record.upgrade_id is None),
                f"request {record.request_id} is {record.state} (upgrade {record.upgrade_id}) although its "
                f"create may have reached Partner Center (last error: {record.last_error_type})",
            )
    # I4: the lock names an active request or nothing: at most one active request per customer
    # and product family, and a new POST for the customer replays the active one (a queued POST
    # without a key: if the lock holds, it writes nothing and sends nothing). That a POST with no
    # active request is a new request is checked by the `post` rule.
    for customer in world.customers:
        active = [r for r in records.values() if not r.is_final and r.customer_id.lower() == customer.lower()]
        v.check(
            "I4", len(active) <= 1, f"{customer} has {len(active)} active requests: {[r.request_id for r in active]}"
        )
        if len(active) == 1:
            answer = world.probe(customer)
            v.check(
                "I4",
                answer == active[0].request_id,
                f"a new POST for {customer} answered {answer}, not its active request {active[0].request_id} "
                f"({active[0].state})",
            )
    # I8: a request a caller was given is found by GET and by a list of its customer until
    # retention deleted it. I9: a list holds each request it selects once, as GET shows it.
    shown = {request_id: world.a.store.get(request_id) for request_id in live}
    for request_id, stored in shown.items():
        v.check("I8", stored is not None, f"GET {request_id} finds nothing (retention did not delete it)")
    for customer in world.customers:
        rows, problem = world.walk(ListFilter(customer_id=customer), INVARIANT_PAGE, "store")
        v.check("I12", problem is None, f"a list of {customer}: {problem}")
        check_list(v, world, rows, shown, lambda rid, c=customer: live[rid] == c, f"a list of {customer}")
    # I6: no secret in any log line or response.
    secrets = {world.sandbox.app_secret, *world.sandbox.issued_refresh_tokens, *world.sandbox.issued_access_tokens}
    texts = world.new_texts()
    leaks = [s for s in secrets if s and any(s in text for text in texts)]
    v.check("I6", not leaks, f"{len(leaks)} secret value(s) in logs or responses")
    # I7: the vault's refresh token is one Entra still redeems (a re-consent is never overwritten
    # by an older chain that is then withdrawn).
    in_vault = world.sandbox.secrets.get(REFRESH_TOKEN_SECRET)
    v.check("I7", world.sandbox.refresh_token_is_valid(in_vault), "the refresh token in Key Vault is revoked")
    # I11: a completion callback is only ever sent for a request a caller was given, once it is final.
    for delivery in world.new_deliveries():
        data = json.loads(delivery.body).get("data", {})
        v.check(
            "I11",
            data.get("requestId") in world.accepted and data.get("status") in FINAL_STATES,
            f"a callback for {data.get('requestId')} in state {data.get('status')}",
        )
    return v


def check_list(
    v: Violations,
    world: World,
    rows: list[tuple[str, str]],
    shown: dict[str, Stored | None],
    selected: Callable[[str], bool],
    what: str,
) -> None:
    """I8/I9 over one list walk's (request id, state) rows: no id twice, each row as GET shows it,
    and every live request the list selects is in it."""
    ids = [request_id for request_id, _ in rows]
    twice = sorted({request_id for request_id in ids if ids.count(request_id) > 1})
    v.check("I9", not twice, f"{what} holds {twice} more than once: {rows}")
    for request_id, state in rows:
        stored = shown[request_id] if request_id in shown else world.a.store.get(request_id)
        as_get = stored.record.state if stored is not None else None
        v.check("I9", as_get == state, f"{what} shows {request_id} as {state}; GET shows {as_get}")
    missing = sorted(request_id for request_id in shown if selected(request_id) and request_id not in ids)
    v.check("I8", not missing, f"{what} lacks {missing}")


def check_post_answer(world: World, customer_id: str, key: str | None, active_before: str | None, answer: str) -> None:
    """I4 and I10 for one POST's answer (the request id it names), given what the model knew before it."""
    known = world.keys.get(key) if key else None
    if known is not None and known not in world.retired:
        # I10: an idempotency key answers its own request and no other.
        world.expect("I10", answer == known, f"key {key} answered {answer}, but it names {known}")
        return
    if known is not None:
        # I10b: retention deleted the key's request, and the key went with it: a replay is a new
        # POST (the two checks below), never the deleted id resumed.
        world.expect(
            "I10b",
            answer != known,
            f"key {key}: retention deleted its request {known}, yet a replay resumed that id "
            "(the key outlived its request)",
        )
    if active_before is not None:
        # I4: the customer has an active request: a new POST (no key, or a key never used) replays it.
        world.expect(
            "I4",
            answer == active_before,
            f"a new POST for {customer_id} answered {answer}, not its active request {active_before}",
        )
    elif answer != known or "I10b" not in KNOWN_DEFECTS:
        # I4: no active request: the lock names nothing (or only a stale one), so this is a new request.
        world.expect(
            "I4",
            answer not in world.accepted,
            f"a POST for {customer_id} with no active request answered the earlier request {answer}",
        )
    if key:
        world.keys[key] = answer


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
    receiver: Receiver
    a: Runtime
    b: Runtime
    customers: list[str]
    log: _Lines
    stats: Stats
    accepted: dict[str, str] = field(default_factory=dict)  # request id -> customer
    retired: set[str] = field(default_factory=set)  # accepted requests retention deleted
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> request id
    campaigns_to_start: list[str] = field(default_factory=list)  # campaigns made without autoStart
    seen_lines: int = 0
    seen_bodies: int = 0
    seen_deliveries: int = 0
    failed: bool = False
    outage: StorageOutage | None = None  # storage goes through it when the run models outages
    cut_short: int = 0  # operations a storage outage cut short in this example

    def live(self) -> dict[str, str]:
        """Accepted requests retention has not deleted: request id -> customer."""
        return {rid: customer for rid, customer in self.accepted.items() if rid not in self.retired}

    def expect(self, name: str, condition: bool, message: str) -> None:
        """One invariant check made by a rule; a known defect's failure is counted, not raised."""
        self.stats.invariants[name] += 1
        if condition:
            return
        if self.known(name, f"{name}: {message}"):
            return
        self.failed = True
        raise AssertionError(f"{name}: {message}")

    def known(self, name: str, message: str) -> bool:
        """A failure of a known defect's check (see KNOWN_DEFECTS): counted, not raised."""
        reason = KNOWN_DEFECTS.get(name)
        if reason is None or (reason[1] and not self.cut_short):
            return False
        self.stats.known[name] += 1
        self.stats.known_first.setdefault(name, message)
        return True

    def settle(self, v: Violations, extra: list[str] | None = None) -> None:
        """Count an evaluation's checks; raise with every failure that is not a known defect's."""
        self.stats.invariants.update(v.checked)
        found = (extra or []) + [message for name, message in v.found if not self.known(name, message)]
        self.failed = bool(found)
        assert not found, "\n".join(found)

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

    def new_deliveries(self) -> list[Any]:
        deliveries = self.receiver.deliveries[self.seen_deliveries :]
        self.seen_deliveries += len(deliveries)
        return deliveries

    def pick(self, index: int, states: tuple[str, ...] = ()) -> str | None:
        """One of the requests a caller was given (retention may have deleted it since): one now
        in `states` if there is any (what an operator would act on), else any."""
        ids = sorted(self.accepted)
        if states:
            found = {rid: self.a.store.get(rid) for rid in ids if rid not in self.retired}
            wanted = [rid for rid, stored in found.items() if stored is not None and stored.record.state in states]
            ids = wanted or ids
        return ids[index % len(ids)] if ids else None

    def active_request(self, customer_id: str) -> str | None:
        active = [r for r in self.store_records() if not r.is_final and r.customer_id.lower() == customer_id.lower()]
        return active[0].request_id if len(active) == 1 else None

    def probe(self, customer_id: str) -> str | None:
        """A queued POST without a key: what a new caller would be answered now."""
        reply = self.api.upgrade(customer_id, headers=dict(QUEUE))
        answer = reply.json().get("requestId")
        if answer and answer not in self.accepted:
            self.accepted[answer] = customer_id  # a caller was given it: from now on it is tracked
        return answer

    def walk(self, selection: ListFilter, top: int, via: str) -> tuple[list[tuple[str, str]], str | None]:
        """Every page of a list (`store.list_page`, or the route following `nextLink`): its
        (request id, state) rows in order, and what went wrong with the paging (None: nothing)."""
        rows: list[tuple[str, str]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            if via == "store":
                page = self.a.store.list_page(selection, top, token)
                rows += [(record.request_id, record.state) for record in page.records]
                if selection.customer_id is not None:
                    others = [r.request_id for r in page.records if r.customer_id.lower() != selection.customer_id]
                    if others:
                        return rows, f"rows of other customers: {others}"
                token = page.continuation_token
            else:
                params = {"top": str(top)}
                if selection.customer_id is not None:
                    params["customerId"] = selection.customer_id
                if selection.states:
                    params["state"] = ",".join(selection.states)
                if token is not None:
                    params["continuationToken"] = token
                reply = self.api.call("list_product_upgrade_requests", "GET", "product-upgrade-requests", params=params)
                if reply.status != 200:
                    return rows, f"answered {reply.status}: {reply.body[:300]!r}"
                body = reply.json()
                rows += [(item["requestId"], item["status"]) for item in body["value"]]
                next_link = body.get("nextLink")
                token = parse_qs(urlsplit(next_link).query)["continuationToken"][0] if next_link else None
            if selection.states:
                outside = [(rid, state) for rid, state in rows if state not in selection.states]
                if outside:
                    return rows, f"rows outside {selection.states}: {outside}"
            if token is None:
                return rows, None
        return rows, f"still a continuation token after {MAX_PAGES} pages"

    def operator(self, action: str, request_id: str, via: str, force: bool = False) -> tuple[int, dict[str, Any]]:
        """Cancel or retry a request as an operator: over HTTP, or with the CLI (`python -m
        shared.cli cancel|retry --request-id ...`, in-process). The answer as (HTTP status, body);
        the CLI's errors are mapped back to the status the route answers."""
        if via == "http":
            body = {"force": True} if force else None
            reply = self.api.call(
                f"{action}_product_upgrade_request",
                "POST",
                f"product-upgrade-requests/{request_id}/{action}",
                json_body=body,
                route_params={"requestId": request_id},
            )
            return reply.status, reply.json()
        argv = ["--json", "--settings", CLI_SETTINGS, action, "--request-id", request_id] + (
            ["--force"] if force else []
        )
        out, err = io.StringIO(), io.StringIO()
        levels = {name: logging.getLogger(name).level for name in ("azure", "msal", "urllib3")}
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(argv)
        finally:  # the CLI quiets these loggers; the leak scan (I6) reads them at DEBUG
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        self.exchange.bodies += [out.getvalue(), err.getvalue()]
        if code == 0:
            return 200, json.loads(out.getvalue())
        problem = json.loads(err.getvalue().strip().splitlines()[-1])
        status = {"not-found": 404, "cannot-cancel": 409, "cannot-retry": 409, "conflict": 409}.get(
            problem["error"], 500
        )
        return status, problem

    def time_passes(self) -> None:
        """Every backoff, lease and callback wait ends: what the clock passing would do."""
        past = utc_now() - timedelta(seconds=1)
        for record in self.store_records():
            if record.is_final and record.callback_state != CALLBACK_PENDING:
                continue
            stored = self.a.store.get(record.request_id)
            if stored is None:
                continue
            if stored.record.is_final:
                moved = replace(stored.record, callback_next_at=past)
            else:
                moved = replace(stored.record, next_attempt_at=past, lease_until=past)
            with contextlib.suppress(WriteConflict):
                self.a.store.replace(moved, stored.etag)

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
        self.receiver.statuses.clear()
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
        receiver: Receiver = CONTEXT["receiver"]
        receiver.statuses.clear()
        stats: Stats = CONTEXT["stats"]
        self.world = World(
            sandbox=sandbox,
            api=CONTEXT["api"],
            exchange=CONTEXT["exchange"],
            receiver=receiver,
            a=get_runtime(),
            b=build_runtime(load_settings()),  # a second Functions instance: its own caches and owner
            customers=customers,
            log=handler,
            stats=stats,
            seen_deliveries=len(receiver.deliveries),
            outage=CONTEXT.get("outage"),
        )
        stats.examples += 1

    # callers

    # Hypothesis orders rules by argument count, then name, and favours the first ones: the rules
    # that matter most (post, timer, create faults) take one (tuple) argument, the rarer ones more.
    @rule(request=st.tuples(st.integers(0, 1), st.sampled_from([None, None, "k1", "k2"]), st.booleans()))
    def post(self, request: tuple[int, str | None, bool]) -> None:
        """customer index, Idempotency-Key (None: none), queued (`Prefer: respond-async`)."""
        customer, key, queued = request
        world = self.world
        customer_id = world.customers[customer]
        headers = dict(QUEUE) if queued else {}
        key_value = f"{key}-{customer}-{world.customers[0][:8]}" if key else None
        if key_value:
            headers["Idempotency-Key"] = key_value
        active_before = world.active_request(customer_id)
        reply = world.api.upgrade(customer_id, headers=headers)
        assert reply.status != 500, reply.body[:300]
        body = reply.json()
        if reply.status >= 400:
            assert reply.content_type.startswith("application/problem+json"), reply.body[:300]
        request_id = body.get("requestId")
        # Stored (a refusal on the first submission is stored as `rejected`, its id in the problem),
        # unless the key was refused (used for another body): then the id is the key's request.
        reused = str(body.get("type", "")).endswith("/idempotency-key-reused")
        if request_id and not reused:
            check_post_answer(world, customer_id, key_value, active_before, request_id)
            world.accepted[request_id] = customer_id
            world.retired.discard(request_id)  # (a key that outlived retention resumed it: known defect)
        self.step("post")

    # No `@precondition` reads the world (what the app, the sandbox or the clock did): hypothesis
    # replays an example by its draws, and a precondition that came out otherwise on the replay
    # (a fault consumed a little later, a late create not yet waiting) made the long run fail with
    # FlakyStrategyDefinition. A rule with nothing to do in this world returns instead.

    @rule(pick=st.integers(0, 50), times=st.integers(1, 2))
    def get(self, pick: int, times: int) -> None:
        """GET a request (a submitted one is polled); one retention deleted answers 404."""
        world = self.world
        request_id = world.pick(pick)
        if request_id is None:
            return
        for _ in range(times - 1):
            world.api.request_status(request_id)
        reply = world.api.request_status(request_id)
        if request_id in world.retired:
            world.expect("I8", reply.status == 404, f"GET {request_id} after retention answered {reply.status}")
        else:
            world.expect(
                "I8", reply.status in (200, 202), f"GET {request_id} answered {reply.status}: {reply.body[:300]!r}"
            )
            world.expect(
                "I8", reply.json().get("requestId") == request_id, f"GET {request_id} answered another request"
            )
        self.step("get")

    @rule(
        selection=st.one_of(
            st.tuples(st.just("customer"), st.integers(0, 1)),
            st.tuples(st.just("states"), st.frozensets(st.sampled_from(ALL_STATES), max_size=3)),
        ),
        top=st.integers(1, 4),
        via=st.sampled_from(["store", "http"]),
    )
    def list_pages(self, selection: tuple[str, Any], top: int, via: str) -> None:
        """A list by customer or by states (none: all), `top` at a time, every page followed."""
        world = self.world
        kind, value = selection
        live = world.live()
        if kind == "customer":
            customer = world.customers[value]
            chosen = ListFilter(customer_id=customer)

            def selected(request_id: str) -> bool:
                return live[request_id] == customer
        else:
            states = tuple(state for state in ALL_STATES if state in value)
            chosen = ListFilter(states=states)

            def selected(request_id: str) -> bool:
                stored = shown[request_id]
                return stored is not None and (not states or stored.record.state in states)

        shown = {request_id: world.a.store.get(request_id) for request_id in live}
        rows, problem = world.walk(chosen, top, via)
        v = Violations()
        v.check("I12", problem is None, f"list {chosen} ({via}): {problem}")
        check_list(v, world, rows, shown, selected, f"list {chosen} ({via}, top {top})")
        world.settle(v)
        self.step("list")

    @rule(pick=st.integers(0, 50), subscribe=st.booleans(), receiver_fails=st.booleans())
    def callback(self, pick: int, subscribe: bool, receiver_fails: bool) -> None:
        """PUT (subscribe; the receiver may answer 500 next) or DELETE a request's callback."""
        world = self.world
        request_id = world.pick(pick)
        if request_id is None:
            return
        path = f"product-upgrade-requests/{request_id}/callback"
        route = {"requestId": request_id}
        if subscribe:
            if receiver_fails and len(world.receiver.statuses) < MAX_QUEUED_RECEIVER_FAULTS:
                world.receiver.statuses.append(500)
            reply = world.api.call(
                "put_product_upgrade_callback", "PUT", path, json_body={"url": world.receiver.url}, route_params=route
            )
            ok = (200, 202)
        else:
            reply = world.api.call("delete_product_upgrade_callback", "DELETE", path, route_params=route)
            ok = (204,)
        expected = (404,) if request_id in world.retired else ok
        world.expect(
            "I8",
            reply.status in expected,
            f"callback {'PUT' if subscribe else 'DELETE'} {request_id} "
            f"answered {reply.status} (expected {expected}): {reply.body[:300]!r}",
        )
        self.step("callback set" if subscribe else "callback delete")

    # operators

    @rule(pick=st.integers(0, 50), via=st.sampled_from(["http", "cli"]))
    def cancel(self, pick: int, via: str) -> None:
        world = self.world
        request_id = world.pick(pick, (PENDING,))
        if request_id is None:
            return
        status, body = world.operator("cancel", request_id, via)
        expected = (404,) if request_id in world.retired else (200, 409)
        world.expect("I8", status in expected, f"cancel {request_id} ({via}) answered {status}: {body}")
        if status == 200:
            assert body["status"] == CANCELLED, body
        self.step(f"cancel{' (refused)' if status != 200 else ''}")

    @rule(pick=st.integers(0, 50), force=st.booleans(), via=st.sampled_from(["http", "cli"]))
    def retry(self, pick: int, force: bool, via: str) -> None:
        world = self.world
        request_id = world.pick(pick, (FAILED, REJECTED) if force else (FAILED,))
        if request_id is None:
            return
        status, body = world.operator("retry", request_id, via, force=force)
        expected = (404,) if request_id in world.retired else (200, 202, 409)
        world.expect("I8", status in expected, f"retry {request_id} ({via}) answered {status}: {body}")
        if status in (200, 202):
            assert body["status"] in (PENDING, SUBMITTING), body
        kind = "forced retry" if force else "retry"
        self.step(f"{kind}{' (refused)' if status not in (200, 202) else ''}")

    # (Two arguments each, so that hypothesis, which favours rules with fewer, does not run these
    # more often than the callers' POSTs.)
    @rule(instance=st.sampled_from(["a", "b"]), limit=st.sampled_from([1, 200]))
    def repair(self, instance: str, limit: int) -> None:
        """`store.repair()` on its own (each timer run also starts with it), 1 or 200 at a time."""
        runtime = self.world.a if instance == "a" else self.world.b
        repaired = runtime.store.repair(limit)
        assert repaired >= 0
        self.world.stats.repaired += repaired
        self.step("repair")

    @rule(via=st.sampled_from(["timer", "purge"]), batch=st.sampled_from([1, RETENTION_BATCH]))
    def retention(self, via: str, batch: int) -> None:
        """Time moves past the retention window of everything stored so far; then the timer runs
        with that clock (its retention is at most hourly by wall clock, so a run after another
        in the same hour deletes nothing), or `store.purge_expired` with that cutoff runs (in
        batches of 1, or the timer's batch)."""
        world = self.world
        before = {request_id: world.a.store.get(request_id) for request_id in world.live()}
        days = world.a.settings.request_retention_days
        later = utc_now() + timedelta(days=days + 1)
        seen_lines = len(world.log.lines)
        if via == "timer":
            processor = world.a.processor
            clock = processor.clock
            started = utc_now()
            processor.clock = lambda: later + (utc_now() - started)
            try:
                world.timer("a")
            finally:
                processor.clock = clock
        else:
            world.a.store.purge_expired(later - timedelta(days=days), batch)
        finished_now = "\n".join(world.log.lines[seen_lines:])
        deleted = 0
        for request_id, stored in before.items():
            if stored is None or world.a.store.get(request_id) is not None:
                continue
            deleted += 1
            world.retired.add(request_id)
            # Retention deletes final requests only (the timer's run may have finished one first).
            final = stored.record.is_final or f"request.final request_id={request_id} " in finished_now
            world.expect("I8", final, f"retention ({via}) deleted {request_id}, which was {stored.record.state}")
        world.stats.retired += deleted
        self.step(f"retention by {via}{'' if deleted else ' (nothing deleted)'}")

    @rule(operation=st.sampled_from(OUTAGE_OPERATIONS), after=st.integers(0, 15))
    def storage_fails(self, operation: str, after: int) -> None:
        """Storage stops answering after `after` requests of an operation (as if its process
        crashed there: nothing it writes after that point lands), and is back for the next step.
        (A timer run or retention makes many requests; the others 0-7 or so.)"""
        world = self.world
        if world.outage is None:  # (this run does not model storage outages)
            return
        customer_id = world.customers[after % 2]
        wanted = {"retry": (FAILED, REJECTED), "cancel": (PENDING,)}.get(operation, ())
        target = world.pick(after, wanted)
        if operation == "timer":
            world.time_passes()
        active_before = world.active_request(customer_id)
        before = {rid: world.a.store.get(rid) for rid in world.live()} if operation == "retention" else {}
        key = f"k3-{after % 2}-{world.customers[0][:8]}"
        world.outage.after(after if operation in ("timer", "retention") else after % 8)
        try:
            if operation.startswith("post"):
                headers = {**QUEUE, "Idempotency-Key": key} if "key" in operation else {}
                reply = world.api.upgrade(customer_id, headers=headers)
            elif operation == "timer":
                with contextlib.suppress(Exception):  # the host records a failed run; the next one goes on
                    world.timer("a")
                reply = None
            elif operation == "repair":
                with contextlib.suppress(Exception):
                    world.a.store.repair()
                reply = None
            elif operation == "retention":
                later = utc_now() + timedelta(days=1)
                with contextlib.suppress(Exception):
                    world.a.store.purge_expired(later, RETENTION_BATCH)
                reply = None
            elif target is None:
                reply = None
            elif operation in ("retry", "cancel"):
                reply = world.api.call(
                    f"{operation}_product_upgrade_request",
                    "POST",
                    f"product-upgrade-requests/{target}/{operation}",
                    json_body={"force": True} if operation == "retry" else None,
                    route_params={"requestId": target},
                )
            else:
                path, route = f"product-upgrade-requests/{target}/callback", {"requestId": target}
                if operation == "callback set":
                    body = {"url": world.receiver.url}
                    reply = world.api.call(
                        "put_product_upgrade_callback", "PUT", path, json_body=body, route_params=route
                    )
                else:
                    reply = world.api.call("delete_product_upgrade_callback", "DELETE", path, route_params=route)
        finally:
            refused = world.outage.refused
            world.outage.restore()
            world.cut_short += bool(refused)
        if reply is not None:
            world.expect(
                "E", reply.status != 500, f"{operation} during a storage outage answered 500: {reply.body[:300]!r}"
            )
        if operation.startswith("post") and reply is not None:
            body = reply.json()
            request_id = body.get("requestId")
            if request_id and not str(body.get("type", "")).endswith("/idempotency-key-reused"):
                check_post_answer(world, customer_id, key if "key" in operation else None, active_before, request_id)
                world.accepted[request_id] = customer_id
                world.retired.discard(request_id)
        for request_id, stored in before.items():  # what retention deleted is retired (I8: only final ones)
            if stored is not None and world.a.store.get(request_id) is None:
                world.retired.add(request_id)
                world.expect("I8", stored.record.is_final, f"retention deleted {request_id}, {stored.record.state}")
        self.step(f"storage fails in {operation}" if refused else f"{operation} (storage outage armed, not reached)")

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
        stats = self.world.stats
        stats.steps += 1
        stats.kinds[kind] += 1

    @invariant()
    def lifecycle_invariants(self) -> None:
        if not hasattr(self, "world"):
            return
        self.evaluate()

    def evaluate(self, extra: list[str] | None = None) -> None:
        self.world.stats.checks += 1
        self.world.settle(check_invariants(self.world), extra)

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        world = self.world
        try:
            if world.failed:  # already reported by the invariant
                return
            self.evaluate(world.drain())
        finally:
            logging.getLogger().removeHandler(world.log)
            world.sandbox.faults.clear()
            world.sandbox.forget_late()
            world.receiver.statuses.clear()


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    checks: int = 0  # evaluations of every invariant (after each step, and after each drain)
    invariants: Counter[str] = field(default_factory=Counter)  # single checks, by invariant
    kinds: Counter[str] = field(default_factory=Counter)  # steps, by rule (and outcome)
    repaired: int = 0  # what `repair()` rules found to finish
    retired: int = 0  # requests retention deleted
    known: Counter[str] = field(default_factory=Counter)  # failures of known defects' checks
    known_first: dict[str, str] = field(default_factory=dict)

    def report(self) -> str:
        figures = {
            "examples": self.examples,
            "steps": self.steps,
            "checks": self.checks,
            "invariantChecks": sum(self.invariants.values()),
            "byInvariant": dict(sorted(self.invariants.items())),
            "kinds": dict(self.kinds.most_common()),
            "repaired": self.repaired,
            "retentionDeleted": self.retired,
            "knownDefects": {
                name: {"failures": count, "reason": KNOWN_DEFECTS[name][0], "first": self.known_first[name]}
                for name, count in self.known.items()
            },
        }
        return f"lifecycle model: {json.dumps(figures)}"


def run_model(
    sandbox: Sandbox,
    api: Api,
    exchange: Exchange,
    monkeypatch: pytest.MonkeyPatch,
    azurite: Azurite | None = None,
    **limits: Any,
) -> Stats:
    """Run the machine; with `azurite`, storage goes through a `StorageOutage` proxy and the
    `storage_fails` rule cuts operations short (otherwise that rule does nothing)."""
    monkeypatch.setenv("UPGRADE_REQUESTS_TABLE", os.environ["UPGRADE_REQUESTS_TABLE"])  # restored afterwards
    monkeypatch.setenv("PENDING_MAX_ATTEMPTS", os.environ.get("PENDING_MAX_ATTEMPTS", "8"))
    monkeypatch.setenv("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")  # the receiver is on loopback
    sandbox.set_secret("webhook-signing-secret", new_secret())
    outage = StorageOutage(azurite.port) if azurite is not None else None
    if outage is not None and azurite is not None:
        monkeypatch.setenv("AzureWebJobsStorage", outage.connection_string(azurite.connection_string))
    reset_runtime()
    function("submit_product_upgrade")  # index function_app once
    CONTEXT.clear()
    stats = Stats()
    with Receiver() as receiver, contextlib.closing(outage) if outage else contextlib.nullcontext():
        CONTEXT.update(sandbox=sandbox, api=api, exchange=exchange, receiver=receiver, stats=stats, outage=outage)
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
            print(stats.report())
            reset_runtime()
    return stats


def test_lifecycle_model_bounded(app_env, sandbox: Sandbox, api: Api, exchange: Exchange, monkeypatch) -> None:
    # About 20-40 s here (2 shared cores): a smoke test; the long run below is the search.
    stats = run_model(sandbox, api, exchange, monkeypatch, max_examples=20, stateful_step_count=25)
    assert stats.examples >= 20 and stats.checks >= stats.steps


@pytest.mark.slow
def test_lifecycle_model_long(
    app_env, sandbox: Sandbox, azurite: Azurite, api: Api, exchange: Exchange, monkeypatch
) -> None:
    # LIFECYCLE_MODEL_EXAMPLES / LIFECYCLE_MODEL_STEPS change the size of this run (a search of your own).
    examples = int(os.environ.get("LIFECYCLE_MODEL_EXAMPLES", "150"))
    steps = int(os.environ.get("LIFECYCLE_MODEL_STEPS", "40"))
    stats = run_model(sandbox, api, exchange, monkeypatch, azurite, max_examples=examples, stateful_step_count=steps)
    assert stats.examples >= examples


def test_a_key_replayed_after_retention_is_a_new_request(app_env, api: Api, sandbox: Sandbox, customer_id: str) -> None:
    """I10b, pinned: retention deleted a request, so its key went with it; a replay of the key is
    a new request (a new id), never the deleted id resumed. Today the key outlives its request and
    the replay resumes the deleted id (the model counts this as the known defect I10b)."""
    sandbox.customers.set(customer_id, eligible=False)  # refused at once: final on the first POST
    key = {"Idempotency-Key": f"batch-row-{customer_id}"}
    first = api.upgrade(customer_id, headers=key).json()["requestId"]
    store = get_runtime().store
    assert store.get(first) is not None and store.get(first).record.is_final
    store.purge_expired(utc_now() + timedelta(days=1), RETENTION_BATCH)  # time moved past the window
    assert store.get(first) is None
    again = api.upgrade(customer_id, headers=key).json()["requestId"]
    assert again != first, f"the replayed key resumed the deleted request {first}"


def test_a_list_by_customer_holds_a_request_once_after_an_interrupted_finalisation(
    app_env, api: Api, sandbox: Sandbox, azurite: Azurite, monkeypatch, customer_id: str
) -> None:
    """I9, pinned as the long model run found it (shrunk: `storage_fails(operation='post',
    after=3)` for a customer that is not eligible): storage goes away after the third storage
    request of an inline POST that Partner Center refuses, i.e. while the `rejected` record is
    being finalised. Until a timer's `repair()` runs, a list of the customer holds the request
    twice."""
    with contextlib.closing(StorageOutage(azurite.port)) as outage:
        monkeypatch.setenv("AzureWebJobsStorage", outage.connection_string(azurite.connection_string))
        reset_runtime()
        api.upgrade(str(uuid.uuid4()), headers=dict(QUEUE))  # the table exists, the clients are warm
        sandbox.customers.set(customer_id, eligible=False)
        outage.after(3)
        try:
            reply = api.upgrade(customer_id)
        finally:
            outage.restore()
        assert outage.refused, "the outage never happened: the POST made fewer storage requests"
        request_id = reply.json()["requestId"]
        page = get_runtime().store.list_page(ListFilter(customer_id=customer_id), 10, None)
        assert [record.request_id for record in page.records] == [request_id]
