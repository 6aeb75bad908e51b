"""How long anything may take: the answer's deadline, and each outbound call's share of it.

Every HTTP function answers within `HTTP_DEADLINE_SECONDS`, and a timer run stops within
`PENDING_RUN_SECONDS`, whatever Key Vault, Entra, managed identity, Table Storage, Partner Center
or a callback receiver do (hang, trickle a byte at a time, reset). The handler opens a
`deadline(seconds)`; every outbound HTTP client in the app is a `DeadlineSession`, which gives each
call `min(its cap below, the time left)` as connect and read timeouts AND a watchdog that shuts the
connection when that time is up (a per-read timeout alone lets a trickle go on for ever). No call
runs on a library default timeout.

| call (client)                                   | cap per attempt               | attempts            |
|-------------------------------------------------|-------------------------------|---------------------|
| Key Vault get/set secret (`SecretClient`)       | `KEY_VAULT_SECONDS` = 5 s     | 2 (`retry_total=1`) |
| managed identity token (`DefaultAzureCredential`)| `IDENTITY_SECONDS` = 5 s     | 2 (`retry_total=1`) |
| Entra token grant (MSAL)                        | `ENTRA_SECONDS` = 10 s        | 1                   |
| Table Storage operation (`TableClient`)         | `STORAGE_SECONDS` = 5 s       | 2 (`retry_total=1`) |
| Partner Center call (`PartnerCenterClient`)     | 3.05 s + `PARTNER_CENTER_TIMEOUT_SECONDS` | 3 (*)   |
| callback delivery, whole (connect, TLS, send, answer) | `CALLBACK_SECONDS` = 10 s | 1 per run (retried by the timer) |
| Entra signing keys, each of 2 reads (caller sign-in) | `SIGNING_KEYS_SECONDS` = 5 s | 1 a minute at most |
| DNS lookup of a callback host (`getaddrinfo` below) | `DNS_SECONDS` = 5 s            | 1                   |

(*) 429/503 retried with Retry-After <= `PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS` and <= half the
time left; one more connect attempt. The whole call, retries included, is held to
`PartnerCenterClient.worst_case_seconds` and the deadline.

Every call except a Table Storage write leaves a *reserve* (`RESERVE_SECONDS`, at most 30 % of
the deadline) untouched, and every call leaves `ANSWER_MARGIN_SECONDS` (at most 10 %) to build and
send the answer, so that when the other services hang there is still time to store the
request's durable state and answer with it (`202` + `Retry-After`, state `pending` or
`submitting`). A call with too little time left is not started: `DeadlineExceeded` (503 +
Retry-After; the stored request is unaffected).

Waits are bounded the same way, not only calls: a wait for a lock another thread holds across a
call (`held`), for another thread's fetch, or for a name lookup (`getaddrinfo`) lasts at most
`wait_seconds()`, then `DeadlineExceeded` (docs/deadlines.md, "Every wait is bounded").

The longest chain of calls one claim may make (`claim_chain_seconds`) is what a lease must
outlast, so `REQUEST_LEASE_SECONDS` is checked against it at startup (`shared.settings`).
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import DeadlineExceeded

if TYPE_CHECKING:
    import requests
    from urllib3.util.retry import Retry

CONNECT_SECONDS = 3.05
KEY_VAULT_SECONDS = 5.0
IDENTITY_SECONDS = 5.0
ENTRA_SECONDS = 10.0
STORAGE_SECONDS = 5.0
CALLBACK_SECONDS = 10.0
SIGNING_KEYS_SECONDS = 5.0  # each of the two reads of Entra's signing keys (metadata, key set)
DNS_SECONDS = 5.0  # one name lookup (a callback host)
AZURE_RETRY_TOTAL = 1  # azure-core's default is 3 retries of up to 300 s each
RESERVE_SECONDS = 10.0  # kept back for the final durable writes of an answer
RESERVE_SHARE = 0.3
ANSWER_MARGIN_SECONDS = 1.0  # kept back from every call, final writes too: to build the answer
ANSWER_MARGIN_SHARE = 0.1
MIN_CALL_SECONDS = 0.2  # less than this left: do not start the call
DEADLINE_RETRY_AFTER_SECONDS = 30
LEASE_MARGIN_SECONDS = 10  # a claim's own deadline ends this long before its lease
# A pooled connection idle longer than this is not reused: servers close idle keep-alive
# connections (Azurite after 5 s, Azure front ends after minutes), and a request sent just as
# the server closes is reset after it was sent, which azure-core does not resend for a
# POST/PATCH/MERGE (a write then fails as "storage unavailable", 503). A new connection costs one
# handshake; it is made only after a pause, never inside a burst of calls.
IDLE_REUSE_SECONDS = 3.0

# Partner Center's own numbers live in `shared.partner_center.client`; repeated here only as the
# inputs of the lease arithmetic below (a test keeps them equal).
PARTNER_CENTER_ATTEMPTS = 3
PARTNER_CENTER_CONNECT_ATTEMPTS = 1


@dataclass(frozen=True)
class _Budget:
    ends_at: float
    reserve: float  # kept back from every call but the final writes
    margin: float  # kept back from every call: the time to build and send the answer


_current: ContextVar[_Budget | None] = ContextVar("deadline", default=None)


@contextmanager
def deadline(seconds: float, *, reserve_share: float = RESERVE_SHARE) -> Iterator[None]:
    """Everything called inside (on this thread, or on threads run in a copy of this context)
    finishes within `seconds`; nested deadlines only ever shorten it. `reserve_share`: the part
    (at most `RESERVE_SECONDS`) kept for final writes."""
    own = _Budget(
        time.monotonic() + seconds,
        min(RESERVE_SECONDS, reserve_share * seconds),
        min(ANSWER_MARGIN_SECONDS, ANSWER_MARGIN_SHARE * seconds),
    )
    outer = _current.get()
    # Whichever ends first holds, with its own reserve and margin.
    token = _current.set(outer if outer is not None and outer.ends_at <= own.ends_at else own)
    try:
        yield
    finally:
        _current.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline; None outside any deadline."""
    budget = _current.get()
    return None if budget is None else budget.ends_at - time.monotonic()


def call_seconds(cap: float, *, final_write: bool = False) -> float:
    """How long the next call may take: its cap, cut to the time left (minus the reserve unless it
    is one of the answer's final writes); `DeadlineExceeded` if that is too little to start."""
    budget = _current.get()
    if budget is None:
        return cap
    left = _usable(budget, final_write)
    if left < MIN_CALL_SECONDS:
        raise DeadlineExceeded(
            "No time was left within the answer's deadline for this step", retry_after=DEADLINE_RETRY_AFTER_SECONDS
        )
    return min(cap, left)


def expired(*, final_write: bool = False) -> bool:
    """True when `call_seconds` would refuse a call now (a failure then is the deadline's doing)."""
    budget = _current.get()
    if budget is None:
        return False
    return _usable(budget, final_write) < MIN_CALL_SECONDS


def wait_seconds(*, final_write: bool = False) -> float | None:
    """How long a wait (for a lock, for another thread's fetch) may last now: the time left less
    what every call keeps back; 0 when nothing is left; None outside any deadline."""
    budget = _current.get()
    if budget is None:
        return None
    return max(0.0, _usable(budget, final_write))


@contextmanager
def held(lock: threading.Lock, what: str) -> Iterator[None]:
    """Hold `lock`, waiting for it no longer than the deadline allows (`wait_seconds`): a lock
    held by a slow call of another thread must not keep this answer past its deadline. Not free
    in time: `DeadlineExceeded`, as for a call that could not be started."""
    left = wait_seconds()
    if not lock.acquire(timeout=-1 if left is None else left):
        raise DeadlineExceeded(
            f"No time was left within the answer's deadline to wait for {what}",
            retry_after=DEADLINE_RETRY_AFTER_SECONDS,
        )
    try:
        yield
    finally:
        lock.release()


_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns")


def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
    """`socket.getaddrinfo`, waited for no longer than `DNS_SECONDS` and the deadline allow.

    The C resolver has no timeout of its own that we control (resolv.conf's: 5 s per attempt and
    server, so 30 s and more), and cannot be interrupted, so the lookup runs on a small pool
    and this waits for its answer only as long as allowed; a lookup left behind ends on its own.
    Out of time: `DeadlineExceeded` when the deadline is what ran out, else `socket.gaierror`
    `EAI_AGAIN` (a resolver that did not answer in time, like one that said "try again")."""
    left = wait_seconds()
    seconds = DNS_SECONDS if left is None else min(DNS_SECONDS, left)
    lookup = _resolver.submit(socket.getaddrinfo, host, port, **kwargs)
    try:
        return list(lookup.result(timeout=seconds))
    except FutureTimeout:
        if expired():
            raise DeadlineExceeded(
                "No time was left within the answer's deadline to resolve a host name",
                retry_after=DEADLINE_RETRY_AFTER_SECONDS,
            ) from None
        raise socket.gaierror(socket.EAI_AGAIN, "the resolver did not answer in time") from None


def _usable(budget: _Budget, final_write: bool) -> float:
    kept = budget.margin if final_write else max(budget.reserve, budget.margin)
    return budget.ends_at - time.monotonic() - kept


def claim_chain_seconds(partner_center_read_seconds: float, max_retry_after_seconds: float) -> float:
    """The longest chain of calls one claim needs: an App+User token (three Key Vault reads, the
    managed identity token, the Entra grant, the refresh token written back), the resolve-first
    eligibility and the create (each one Partner Center call with every inline retry spent), the
    result's three writes and one callback. A claim never runs past `lease - LEASE_MARGIN_SECONDS`
    (the timer gives each claim that deadline, and an HTTP answer is held to `HTTP_DEADLINE_SECONDS`),
    so the startup check `REQUEST_LEASE_SECONDS >= max(this, HTTP_DEADLINE_SECONDS) + margin` says
    that such a chain fits in a lease, and no lease expires while its holder is inside a call."""
    partner_center_call = (
        PARTNER_CENTER_ATTEMPTS * (CONNECT_SECONDS + partner_center_read_seconds)
        + PARTNER_CENTER_CONNECT_ATTEMPTS * CONNECT_SECONDS
        + (PARTNER_CENTER_ATTEMPTS - 1) * max_retry_after_seconds
    )
    token = 4 * KEY_VAULT_SECONDS + IDENTITY_SECONDS + ENTRA_SECONDS
    writes = 3 * STORAGE_SECONDS
    return token + 2 * partner_center_call + writes + CALLBACK_SECONDS


# --- the watchdog: a connection still busy when its time is up is shut down ---


class _Watch:
    """The connections one call (one `bounded` block) is using; shut when its time is up.

    A connection leaves the watch when it goes back to its pool (`release`) or when the call
    ends (`finish`): from then on another call may be using it, and shutting it would cut that
    call by a deadline that is not its own. The lock makes `fire` and `release` exclusive, so a
    connection is never shut after its release returned."""

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.fired = False
        self.done = False  # the call finished: nothing to fire
        self._lock = threading.Lock()

    def add(self, connection: Any) -> None:
        with self._lock:
            if connection not in self.connections:
                self.connections.append(connection)
            connection._deadline_watch = self
            fired = self.fired
        if fired:  # a retry after the time was up: do not even start it
            raise TimeoutError("the call's deadline has passed")

    def release(self, connection: Any) -> None:
        with self._lock:
            if connection in self.connections:
                self.connections.remove(connection)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self.connections.clear()

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            for connection in self.connections:
                _shut(connection)  # under the lock: never after a concurrent release


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for the whole process, firing watches at their times (a heap), instead
    of a timer thread per call."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Watch]] = []
        self._counter = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, watch: _Watch, seconds: float) -> None:
        entry = (time.monotonic() + seconds, next(self._counter), watch)
        with self._wakeup:
            heapq.heappush(self._due, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
                self._thread.start()
            elif self._due[0] is entry:
                # Wake the thread only when this watch is now the earliest: otherwise it already
                # sleeps until an earlier one and looks again then (waking it for every call cost
                # a thread switch per storage or HTTP call).
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while self._due and (self._due[0][2].done or self._due[0][0] <= time.monotonic()):
                    _, _, watch = heapq.heappop(self._due)
                    if not watch.done:
                        threading.Thread(target=watch.fire, daemon=True).start()  # never blocks the heap
                wait = self._due[0][0] - time.monotonic() if self._due else None
                self._wakeup.wait(wait)


_watchdog = _Watchdog()
_watching = threading.local()


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Shut every connection this thread opens or uses inside, once `seconds` have passed: a
    total deadline, not a per-read one. Nested calls keep the outer (earlier) watchdog."""
    if getattr(_watching, "watch", None) is not None:
        yield
        return
    watch = _Watch()
    _watching.watch = watch
    _watchdog.arm(watch, seconds)
    try:
        yield
    finally:
        watch.finish()
        _watching.watch = None


def _watch_connection(connection: Any) -> None:
    watch = getattr(_watching, "watch", None)
    if watch is not None:
        watch.add(connection)


def _release_connection(connection: Any) -> None:
    """The connection goes back to its pool: the watch of the call that used it lets it go."""
    watch = getattr(connection, "_deadline_watch", None)
    if watch is not None:
        connection._deadline_watch = None
        watch.release(connection)


def _capped(timeout: Any, seconds: float) -> tuple[float, float]:
    """(connect, read) timeouts no longer than `seconds`, from whatever form the caller passed."""
    if isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect, read = CONNECT_SECONDS, timeout
    return (min(connect or CONNECT_SECONDS, seconds), min(read or seconds, seconds))


def deadline_session(
    cap: float, *, final_write: bool = False, retry: Retry | int = 0, pool_maxsize: int = 32, **pool_kwargs: Any
) -> requests.Session:
    """A `requests.Session` whose every call is held to `call_seconds(cap)`: timeouts and watchdog.
    `pool_kwargs` go to urllib3's pools (e.g. `server_hostname` for a pinned address)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class WatchedHTTPConnection(HTTPConnection):
        """Registers itself with the watchdog before connecting and before each request; placed
        before `HTTPSConnection` in the MRO, it watches TLS connections the same way."""

        def connect(self) -> None:
            _watch_connection(self)
            super().connect()

        def request(self, *args: Any, **kwargs: Any) -> None:
            _watch_connection(self)
            super().request(*args, **kwargs)

    class WatchedHTTPSConnection(WatchedHTTPConnection, HTTPSConnection):
        pass

    class ReleasingPool(HTTPConnectionPool):
        """A connection going back to the pool leaves the watch of the call that used it, and is
        never handed out again once idle past `IDLE_REUSE_SECONDS` (see there): it is closed and
        the request connects anew."""

        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            idle_since = getattr(conn, "idle_since", None)
            if idle_since is not None and time.monotonic() - idle_since > IDLE_REUSE_SECONDS:
                conn.close()
            return conn

        def _put_conn(self, conn: Any) -> None:
            if conn is not None:
                _release_connection(conn)
                conn.idle_since = time.monotonic()
            super()._put_conn(conn)

    class WatchedHTTPPool(ReleasingPool):
        ConnectionCls = WatchedHTTPConnection

    class WatchedHTTPSPool(ReleasingPool, HTTPSConnectionPool):
        ConnectionCls = WatchedHTTPSConnection

    class DeadlineAdapter(HTTPAdapter):
        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kwargs: Any) -> None:
            super().init_poolmanager(connections, maxsize, block, **{**kwargs, **pool_kwargs})
            self.poolmanager.pool_classes_by_scheme = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}

    class DeadlineSession(requests.Session):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            seconds = call_seconds(cap, final_write=final_write)
            kwargs["timeout"] = _capped(kwargs.get("timeout"), seconds)
            with bounded(seconds):
                return super().send(request, **kwargs)

    session = DeadlineSession()
    adapter = DeadlineAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def read_environment_once(session: requests.Session, url: str) -> None:
    """Read the environment's proxy and CA settings for `url`'s host now, with requests' own
    rules (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), and stop
    reading them on every call (`trust_env=False`).

    For a session that talks to one host (Table Storage, Key Vault, Partner Center). Why: with
    `trust_env` requests re-reads and re-parses every proxy variable on every call: 0.6 ms of CPU
    per storage call with 46 variables, 1.4 ms with 196, a Function app's usual count (bench,
    scenario 2). The host restarts the worker when app settings change, so this is read at
    start-up and that is enough. `.netrc` is no longer consulted (no Azure endpoint uses it)."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = dict(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False


def azure_transport(
    cap: float, *, final_write: bool = False, pool_maxsize: int = 32, endpoint: str | None = None
) -> Any:
    """An azure-core transport over a `deadline_session` (Key Vault, Table Storage, identity).

    With `endpoint` (a client that only talks to that host), the environment is read once for it
    (`read_transport_environment_once`); a storage client whose endpoint is known only after it
    is built calls that itself."""
    from azure.core.pipeline.transport import RequestsTransport

    session = deadline_session(cap, final_write=final_write, pool_maxsize=pool_maxsize)
    transport = RequestsTransport(session=session, session_owner=True)
    if endpoint is not None:
        read_transport_environment_once(transport, endpoint)
    return transport


def read_transport_environment_once(transport: Any, url: str) -> None:
    """`read_environment_once` for an azure-core `RequestsTransport`, which passes its own
    `connection_verify` (default True: certifi) on every call: it gets the CA bundle too."""
    read_environment_once(transport.session, url)
    transport.connection_config.verify = transport.session.verify


def azure_client_options(cap: float) -> dict[str, Any]:
    """Explicit timeouts and retries for an azure-core client (its defaults: 300 s read, 3 retries)."""
    return {
        "connection_timeout": min(CONNECT_SECONDS, cap),
        "read_timeout": cap,
        "retry_total": AZURE_RETRY_TOTAL,
        "retry_backoff_factor": 0.2,
        "retry_backoff_max": 1,
    }
