"""What every scenario shares.

- `app_environment()`: a fresh Sandbox + Azurite and the settings tests/conftest.py's `app_env`
  sets (sandbox env, `AzureWebJobsStorage`, a fresh `UPGRADE_REQUESTS_TABLE`, the same timeouts,
  `reset_runtime()`), torn down (and the process environment restored) on the way out.
- `call_function()`: the user callable registered in function_app.py, called with a
  `func.HttpRequest`, as the host (and the tests) do.
- `Meter` / `TimedProxy`: wall time and count of every storage (Azure Tables) and Partner
  Center HTTP call, attached to the runtime's objects from the outside (shared/ is not edited).
- `ConnectionCounter`: new TCP/TLS connections opened by urllib3 per host, and "pool is full"
  discards, for both the storage SDK and the Partner Center session.
- statistics and peak RSS helpers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

FUNCTION_BASE_URL = "https://upgrades.example.net/api/"
CREDENTIAL_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE")
QUEUE = {"Prefer": "respond-async"}


def log_progress(message: str) -> None:
    """Progress goes to stderr so a long run shows it is alive; results go to stdout/JSON."""
    print(f"    . {message}", file=sys.stderr, flush=True)


# --- environment ---------------------------------------------------------------------------


@dataclass
class Env:
    sandbox: Any  # sandbox.Sandbox
    azurite: Any  # sandbox.azurite.Azurite
    settings: dict[str, str]


_RUNNING_SANDBOXES: list[Any] = []


def stop_running_sandboxes() -> None:
    """For a SIGTERM handler: stop the sandbox now, so queued Partner Center calls fail at once
    instead of each waiting out the latency, and the run unwinds quickly."""
    for sandbox in list(_RUNNING_SANDBOXES):
        sandbox.latency = 0.0
        sandbox.stop()


@contextlib.contextmanager
def app_environment() -> Iterator[Env]:
    """Sandbox + Azurite + settings exactly as tests/conftest.py's app_env, cleaned up after."""
    from sandbox import Sandbox
    from sandbox.azurite import Azurite
    from shared.runtime import reset_runtime

    saved = dict(os.environ)
    with Sandbox() as sandbox, Azurite() as azurite:
        _RUNNING_SANDBOXES.append(sandbox)
        try:
            sandbox.reset_calls()
            sandbox.faults.clear()
            sandbox.customers.clear()
            sandbox.latency = 0.0
            sandbox.seed_partner_credentials()
            sandbox.reconsent()
            for name in CREDENTIAL_ENV:
                os.environ.pop(name, None)
            settings = {
                **sandbox.env(),
                "AzureWebJobsStorage": azurite.connection_string,
                "UPGRADE_REQUESTS_TABLE": "t" + uuid.uuid4().hex[:20],
                "PARTNER_CENTER_TIMEOUT_SECONDS": "2",
                "PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS": "2",
                # As tests/conftest.py: the functions are called as the host would after checking a
                # function key (CALLER_AUTH unset would fail closed: every route a 500).
                "CALLER_AUTH": "function-key",
            }
            os.environ.update(settings)
            reset_runtime()
            yield Env(sandbox, azurite, settings)
        finally:
            _RUNNING_SANDBOXES.remove(sandbox)
            sandbox.latency = 0.0
            reset_runtime()
            os.environ.clear()
            os.environ.update(saved)


# --- calling the functions -----------------------------------------------------------------


_INDEX_LOCK = threading.Lock()


@functools.cache
def _index() -> dict[str, Callable[..., Any]]:
    import function_app

    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


def registered_functions() -> dict[str, Callable[..., Any]]:
    """function_app.py's user callables by function name, indexed once (as the host does; the
    indexing is not thread-safe, hence the lock)."""
    with _INDEX_LOCK:
        return _index()


def call_function(
    name: str, method: str, path: str, *, json_body: Any = None, headers: dict[str, str] | None = None
) -> Any:
    import azure.functions as func

    all_headers = dict(headers or {})
    body = b""
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = func.HttpRequest(
        method=method, url=FUNCTION_BASE_URL + path, headers=all_headers, params={}, route_params={}, body=body
    )
    return registered_functions()[name](request)


def upgrade(customer_id: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST /api/product-upgrades through the registered function: (status, JSON body)."""
    response = call_function(
        "submit_product_upgrade",
        "POST",
        "product-upgrades",
        json_body={"customerId": customer_id, "productFamily": "Azure"},
        headers=headers,
    )
    return response.status_code, json.loads(response.get_body())


def new_customer() -> str:
    return str(uuid.uuid4())


def new_request_record(customer_id: str, state: str) -> Any:
    """A fresh request record for an Azure upgrade of `customer_id` in `state`, built by the store's
    own constructors (its id carries the customer's bucket), for scenarios that write records
    directly."""
    from shared.identifiers import new_guid
    from shared.upgrade_requests.record import new_record
    from shared.upgrade_requests.store import new_request_id

    return new_record(new_request_id(customer_id), customer_id, "Azure", new_guid(), new_guid(), state=state)


# --- the bare Partner Center call (baselines) ----------------------------------------------


def partner_center_token(sandbox: Any) -> str:
    """An App+User token by MSAL's refresh-token grant, as the Partner Center samples get one."""
    import msal

    from shared.settings import PARTNER_CENTER_SCOPE

    app = msal.ConfidentialClientApplication(
        sandbox.app_id,
        client_credential=sandbox.app_secret,
        authority=sandbox.authority,
        instance_discovery=False,
    )
    result = app.acquire_token_by_refresh_token(sandbox.refresh_token, scopes=[str(PARTNER_CENTER_SCOPE.default)])
    if "access_token" not in result:
        raise RuntimeError(f"the sandbox issued no token: {result.get('error')}")
    return str(result["access_token"])


def create_headers(token: str) -> dict[str, str]:
    """The headers our client sends on a create (shared/partner_center/client.py `_send`)."""
    from shared.partner_center.client import APPLICATION_NAME

    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "Content-Type": "application/json",
        "MS-Contract-Version": "v1",
        "MS-CorrelationId": str(uuid.uuid4()),
        "MS-RequestId": str(uuid.uuid4()),
        "MS-PartnerCenter-Application": APPLICATION_NAME,
        "X-Locale": "en-US",
    }


def bare_create(http: Any, endpoint: str, token: str, customer_id: str) -> None:
    """One create call, nothing else: `http` is a `requests.Session` or the `requests` module."""
    from shared.partner_center.client import CONNECT_TIMEOUT_SECONDS, CREATE_PATH

    response = http.post(
        endpoint + CREATE_PATH,
        data=json.dumps({"customerId": customer_id, "productFamily": "Azure"}),
        headers=create_headers(token),
        timeout=(CONNECT_TIMEOUT_SECONDS, 15),
    )
    if response.status_code != 202 or not response.headers.get("Location"):
        raise RuntimeError(f"bare create answered {response.status_code}")


# --- instrumentation -----------------------------------------------------------------------


class Meter:
    """Thread-safe: per (kind, operation) every call's wall time and the calling thread's CPU
    time. For a storage call, wall minus CPU is (mostly) the wait on Azurite; CPU is the SDK."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.durations: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)

    def add(self, kind: str, operation: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        with self._lock:
            self.durations[(kind, operation)].append((seconds, cpu_seconds))

    def snapshot(self) -> dict[tuple[str, str], tuple[int, float, float]]:
        with self._lock:
            return {
                key: (len(values), sum(v[0] for v in values), sum(v[1] for v in values))
                for key, values in self.durations.items()
            }

    def reset(self) -> None:
        with self._lock:
            self.durations.clear()

    @staticmethod
    def delta(
        before: dict[tuple[str, str], tuple[int, float, float]], after: dict[tuple[str, str], tuple[int, float, float]]
    ) -> dict[tuple[str, str], tuple[int, float, float]]:
        out = {}
        for key, (count, seconds, cpu) in after.items():
            old_count, old_seconds, old_cpu = before.get(key, (0, 0.0, 0.0))
            if count != old_count:
                out[key] = (count - old_count, seconds - old_seconds, cpu - old_cpu)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            items = sorted(self.durations.items())
        out = {}
        for (kind, operation), values in items:
            if not values:
                continue
            walls = [v[0] for v in values]
            cpus = [v[1] for v in values]
            out[f"{kind}.{operation}"] = {
                "calls": len(values),
                "totalSeconds": round(sum(walls), 4),
                "medianMs": ms(statistics.median(walls)),
                "p99Ms": ms(percentile(walls, 99)),
                "cpuMedianMs": ms(statistics.median(cpus)),
            }
        return out


class TimedProxy:
    """Wraps an object; calls to `methods` are timed into the meter (iterators: every step)."""

    def __init__(self, target: Any, meter: Meter, kind: str, methods: frozenset[str]) -> None:
        self._target = target
        self._meter = meter
        self._kind = kind
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name not in self._methods or not callable(attribute):
            return attribute
        meter, kind = self._meter, self._kind

        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                result = attribute(*args, **kwargs)
            finally:
                meter.add(kind, name, time.perf_counter() - started, time.thread_time() - cpu)
            if name.startswith("query") or name.startswith("list"):
                return _timed_iteration(result, meter, kind, name + ".page")
            return result

        return timed


def _timed_iteration(iterable: Any, meter: Meter, kind: str, operation: str) -> Iterator[Any]:
    iterator = iter(iterable)
    while True:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            item = next(iterator)
        except StopIteration:
            meter.add(kind, operation, time.perf_counter() - started, time.thread_time() - cpu)
            return
        meter.add(kind, operation, time.perf_counter() - started, time.thread_time() - cpu)
        yield item


STORAGE_METHODS = frozenset({"create_entity", "update_entity", "upsert_entity", "get_entity", "delete_entity"})
STORAGE_METHODS |= frozenset({"query_entities", "list_entities", "submit_transaction"})


def instrument_runtime(runtime: Any, meter: Meter) -> None:
    """Time every storage call (the store's TableClient) and Partner Center HTTP call (its session)."""
    store = runtime.store
    if not isinstance(store._table, TimedProxy):
        store._table = TimedProxy(store._table, meter, "storage", STORAGE_METHODS)
    client = runtime.partner_center
    if not isinstance(client._session, TimedProxy):
        client._session = TimedProxy(client._session, meter, "partner_center", frozenset({"post"}))


class ConnectionCounter:
    """New urllib3 connections per host:port, and connections dropped because the pool was full.

    Wraps urllib3's `_new_conn` (every new TCP, or TCP+TLS, connection) and `_put_conn` (a
    connection handed back to a pool that is already full is closed and discarded) for the
    duration of a `with` block. Both the storage SDK (azure-core) and the Partner Center session
    use urllib3 underneath."""

    def __init__(self) -> None:
        self.new_connections: dict[str, int] = defaultdict(int)
        self.discarded: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> ConnectionCounter:
        from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

        counter = self

        def wrap_new(original: Callable[..., Any]) -> Callable[..., Any]:
            def _new_conn(pool: Any, *args: Any, **kwargs: Any) -> Any:
                with counter._lock:
                    counter.new_connections[f"{pool.host}:{pool.port}"] += 1
                return original(pool, *args, **kwargs)

            return _new_conn

        def wrap_put(original: Callable[..., Any]) -> Callable[..., Any]:
            def _put_conn(pool: Any, conn: Any) -> Any:
                if pool.pool is not None and pool.pool.full():
                    with counter._lock:
                        counter.discarded[f"{pool.host}:{pool.port}"] += 1
                return original(pool, conn)

            return _put_conn

        for cls, name, wrapper in (
            (HTTPConnectionPool, "_new_conn", wrap_new),
            (HTTPSConnectionPool, "_new_conn", wrap_new),
            (HTTPConnectionPool, "_put_conn", wrap_put),
        ):
            original = cls.__dict__[name]
            self._saved.append((cls, name, original))
            setattr(cls, name, wrapper(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved.clear()

    def as_dict(self, names: dict[str, str]) -> dict[str, Any]:
        """Counts keyed by a readable name ({"127.0.0.1:port": "azurite"})."""

        def named(counts: dict[str, int]) -> dict[str, int]:
            return {names.get(key, key): count for key, count in sorted(counts.items())}

        return {"newConnections": named(self.new_connections), "poolFullDiscards": named(self.discarded)}


# --- statistics ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc), 0.0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS in MiB: of this process's own address space (VmHWM; see bench/peak_rss.py for why
    not ru_maxrss), or ru_maxrss of its waited-for children (an upper bound: it includes this
    process's RSS when each was started)."""
    if who == resource.RUSAGE_SELF and os.path.exists("/proc/self/status"):
        from .peak_rss import own_peak_rss_mib

        return own_peak_rss_mib()
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)
