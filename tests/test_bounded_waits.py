"""Every wait is bounded by the deadline of the answer or run it serves (issue 18): one test per
kind of wait. Lock acquisitions (the signing-key set's, the Partner Center token chain's, the
app's clients being built), DNS (a callback host), key-set fetches (Entra's metadata and JWKS,
slow or trickling). The watchdog's own wait (a pooled connection) is in test_deadlines.py.

The dependencies are slowed at the network edge: the sandbox's `delay` and `trickle` faults, and
the operating system's resolver (`socket.getaddrinfo`) for DNS.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox import Sandbox
from shared.api import caller_auth, signing_keys
from shared.runtime import reset_runtime

from .conftest import Api, Reply
from .test_caller_auth import attacker_signed, claims_for
from .test_deadlines import StallingProxy, storage_proxy  # noqa: F401  (a fixture)
from .test_requests import make_due, record, run_timer

DEADLINE = 5
HANG = DEADLINE + 3.0
_busy_until = [0.0]


@pytest.fixture
def short_deadline(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("HTTP_DEADLINE_SECONDS", str(DEADLINE))
    reset_runtime()
    yield app_env
    # Let the sandbox's hung handlers finish (and be recorded) now, not during the next test.
    time.sleep(max(0.0, _busy_until[0] - time.monotonic()))


@pytest.fixture
def entra_callers(short_deadline, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in sandbox.caller_env().items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    caller_auth.reset_authenticators()
    yield
    caller_auth.reset_authenticators()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    offset = [0.0]
    real = signing_keys._monotonic
    monkeypatch.setattr(signing_keys, "_monotonic", lambda: real() + offset[0])
    return offset


def timed(call: Callable[[], Reply]) -> tuple[Reply, float]:
    started = time.monotonic()
    reply = call()
    return reply, time.monotonic() - started


def hold(seconds: float) -> None:
    _busy_until[0] = max(_busy_until[0], time.monotonic() + seconds)


def wait_until_taken(sandbox: Sandbox, timeout: float = 10.0) -> None:
    """Until the sandbox has taken every queued fault (at the call's arrival: a delayed call is
    recorded only when it is answered)."""
    ends = time.monotonic() + timeout
    while sandbox.faults.pending():
        assert time.monotonic() < ends, "the faulted call never arrived"
        time.sleep(0.01)


def eligibility_as(api: Api, token: str) -> Reply:
    return api.call(
        "check_product_upgrade_eligibility",
        "POST",
        "product-upgrades/eligibility",
        json_body={"customerId": str(uuid.uuid4()), "productFamily": "Azure"},
        headers={"Authorization": f"Bearer {token}"},
    )


# --- key-set fetches ---


@pytest.mark.parametrize(
    ("kind", "params"),
    [("delay", {"seconds": HANG}), ("trickle", {"seconds": 0.2})],
    ids=["slow-metadata", "trickling-metadata"],
)
def test_a_key_set_fetch_is_bounded_by_the_answers_deadline(
    api: Api, sandbox: Sandbox, entra_callers, clock, kind: str, params: dict[str, Any]
):
    """Cold keys and an Entra metadata endpoint that hangs, or sends a byte every 0.2 s (each read
    gets its byte in time: only a total deadline stops it): the answer still comes within
    HTTP_DEADLINE_SECONDS, a 503 that says to retry. The fetch itself is cut too (the watchdog),
    so once Entra is back and a minute has passed, the next caller is served."""
    sandbox.faults.add("entra.openid_configuration", kind, **params)
    hold(HANG)
    token = sandbox.caller_token()
    reply, elapsed = timed(lambda: eligibility_as(api, token))
    assert elapsed < DEADLINE, f"answered after {elapsed:.1f} s"
    assert reply.status == 503, reply.body
    assert int(reply.headers["retry-after"]) > 0
    assert reply.json()["type"].endswith(("signing-keys-unavailable", "deadline-exceeded"))
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    ends = time.monotonic() + signing_keys.REFRESH_SECONDS + DEADLINE
    while (reply := eligibility_as(api, token)).status != 200:
        assert time.monotonic() < ends, f"the cut fetch still holds the keys: {reply.status}"


# --- lock acquisitions: the key set's ---


def test_an_unknown_kid_refresh_never_makes_a_known_kid_wait(api: Api, sandbox: Sandbox, entra_callers, clock):
    """A made-up `kid` (no credentials needed) starts a refresh while Entra is slow; callers with a
    known `kid` are answered meanwhile without waiting, and a flood of made-up `kid`s costs Entra
    one refresh (single flight, then the minimum interval)."""
    valid = sandbox.caller_token()
    assert eligibility_as(api, valid).status == 200  # keys loaded
    metadata_reads = len(sandbox.calls("entra", "openid_configuration"))
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    sandbox.faults.add("entra.openid_configuration", "delay", seconds=HANG)
    hold(HANG)

    made_up: list[Reply] = []

    def attacker() -> None:
        made_up.append(eligibility_as(api, attacker_signed(claims_for(sandbox), kid=f"made-up-{uuid.uuid4().hex}")))

    threads = [threading.Thread(target=attacker) for _ in range(5)]
    threads[0].start()
    wait_until_taken(sandbox)  # the refresh is in flight, held by Entra
    for thread in threads[1:]:
        thread.start()
    reply, elapsed = timed(lambda: eligibility_as(api, valid))
    assert reply.status == 200, reply.body
    assert elapsed < 1.0, f"a known kid waited {elapsed:.1f} s behind an unknown kid's refresh"
    for thread in threads:
        thread.join(timeout=DEADLINE + 2)
    assert [r.status for r in made_up] and all(r.status in (401, 503) for r in made_up), [r.status for r in made_up]
    # One flight: the held read (recorded once Entra answers it) and no other.
    assert len(sandbox.wait_for_calls(metadata_reads + 1, "entra", "openid_configuration", timeout=HANG + 1)) == (
        metadata_reads + 1
    )


def test_cold_callers_arriving_together_share_one_key_set_read(api: Api, sandbox: Sandbox, entra_callers):
    """Single flight: callers that arrive while the first read of the keys is under way wait for
    that read (within their deadlines) and are served by it; Entra is asked once."""
    sandbox.faults.add("entra.openid_configuration", "delay", seconds=1.0)
    token = sandbox.caller_token()
    replies: list[Reply] = []
    threads = [threading.Thread(target=lambda: replies.append(eligibility_as(api, token))) for _ in range(4)]
    threads[0].start()
    wait_until_taken(sandbox)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE + 2)
    assert [reply.status for reply in replies] == [200] * 4
    assert len(sandbox.calls("entra", "jwks")) == 1  # (MSAL reads the metadata too, never the key set)


# --- lock acquisitions: the Partner Center token chain's ---


def test_an_inline_post_behind_a_slow_token_chain_answers_within_its_deadline(
    api: Api, sandbox: Sandbox, short_deadline, customer_id: str
):
    """A timer thread holds the token lock through a slow Entra grant; an inline POST arriving then
    waits for that lock no longer than its deadline allows, and answers as documented when
    Entra is slow: 202 + Retry-After with the request stored (pending: no create was sent)."""
    queued = api.upgrade(str(uuid.uuid4()), headers={"Prefer": "respond-async"}).json()["requestId"]
    make_due(queued)
    reset_runtime()  # a cold token chain: the timer must ask Entra
    sandbox.faults.add("entra.token", "delay", seconds=HANG)
    hold(HANG)
    timer = threading.Thread(target=run_timer)
    timer.start()
    try:
        wait_until_taken(sandbox)  # the timer is inside its grant, holding the token lock
        reply, elapsed = timed(lambda: api.upgrade(customer_id))
    finally:
        timer.join(timeout=60)
    assert elapsed < DEADLINE, f"answered after {elapsed:.1f} s"
    assert reply.status == 202, reply.body
    assert int(reply.headers["retry-after"]) > 0
    body = reply.json()
    assert body["status"] == "pending"
    assert record(body["requestId"]).state == "pending"
    assert sandbox.submissions(customer_id) == 0
    # Nothing is lost: with Entra answering again, the timer submits it.
    make_due(body["requestId"])
    run_timer()
    assert record(body["requestId"]).state == "submitted"
    assert sandbox.submissions(customer_id) == 1


# --- lock acquisitions: the app's clients, built once per instance ---


def test_a_request_waits_for_the_apps_clients_no_longer_than_its_deadline(
    api: Api,
    storage_proxy: StallingProxy,  # noqa: F811  (the fixture imported above)
    customer_id: str,
):
    """The timer builds the app's clients (creating the table) while storage hangs; an HTTP
    request arriving then waits for them no longer than its own deadline."""
    from shared import runtime
    from shared.deadlines import deadline

    storage_proxy.stalled.set()

    def build_as_the_timer_does() -> None:
        with deadline(60), contextlib.suppress(Exception):
            runtime.get_runtime()

    builder = threading.Thread(target=build_as_the_timer_does)
    builder.start()
    ends = time.monotonic() + 5
    while not runtime._lock.locked():  # observed, not changed: the builder is inside the table call
        assert time.monotonic() < ends, "the builder never started"
        time.sleep(0.01)
    try:
        reply, elapsed = timed(lambda: api.eligibility(customer_id))
    finally:
        storage_proxy.stalled.clear()
        builder.join(timeout=30)
    assert elapsed < DEADLINE, f"answered after {elapsed:.1f} s"
    assert reply.status == 503, reply.body
    assert reply.json()["type"].endswith("deadline-exceeded")


# --- DNS ---


def test_a_callback_hosts_dns_lookup_is_bounded_by_the_deadline(
    api: Api, short_deadline, customer_id: str, monkeypatch: pytest.MonkeyPatch
):
    """The resolver hangs for one callback host: registering that callback answers within the
    deadline (503, retry later: a slow resolver is not the caller's mistake) and stores nothing."""
    real = socket.getaddrinfo
    released = threading.Event()

    def slow_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.slow-dns.example":
            released.wait(3 * DEADLINE)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    try:
        reply, elapsed = timed(lambda: api.upgrade(customer_id, callback_url="https://hooks.slow-dns.example/done"))
    finally:
        released.set()
    assert elapsed < DEADLINE, f"answered after {elapsed:.1f} s"
    assert reply.status == 503, reply.body
    assert reply.json()["type"].endswith("deadline-exceeded")
    assert int(reply.headers["retry-after"]) > 0
