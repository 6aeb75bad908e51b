"""Fixtures: the project's HTTPS sandbox (Entra, managed identity, Key Vault, Partner Center) and
Azurite, both on loopback, and helpers that call the functions through the v2 programming model.

Production code is pointed at them only through settings/env vars, exactly as in Azure.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest

from sandbox import Sandbox
from sandbox.azurite import Azurite
from shared.runtime import reset_runtime

FUNCTION_BASE_URL = "https://upgrades.example.net/api/"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as running:
        yield running


@dataclass
class Exchange:
    """Every response the tests saw, scanned for secrets at teardown."""

    bodies: list[str] = field(default_factory=list)


@pytest.fixture
def exchange() -> Exchange:
    return Exchange()


@pytest.fixture
def app_env(sandbox: Sandbox, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Settings pointing the app at the sandbox and Azurite; a fresh table and runtime per test."""
    sandbox.reset_calls()
    sandbox.faults.clear()
    sandbox.customers.clear()
    sandbox.latency = 0.0
    sandbox.seed_partner_credentials()
    sandbox.reconsent()  # a fresh, valid refresh token in the vault: earlier tests may have revoked them
    # A developer's shell may hold an Application Insights connection string: tests stay offline.
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
    ):
        monkeypatch.delenv(name, raising=False)
    env = {
        **sandbox.env(),
        "AzureWebJobsStorage": azurite.connection_string,
        "UPGRADE_REQUESTS_TABLE": "t" + uuid.uuid4().hex[:20],
        "PARTNER_CENTER_TIMEOUT_SECONDS": "2",
        "PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS": "2",
        # Existing tests call the functions as the host would after checking a function key;
        # tests of Entra callers (test_caller_auth.py) switch to `entra` with `entra_env`.
        "CALLER_AUTH": "function-key",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    yield env
    reset_runtime()


@pytest.fixture(autouse=True)
def no_secrets_leak(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, exchange: Exchange
) -> Iterator[None]:
    """After every test: no secret, access token or refresh token in any log line or response.

    Libraries log at DEBUG here (the app quiets them to WARNING in production), so what they
    would say about tokens is scanned too."""
    caplog.set_level(logging.DEBUG)
    import shared.runtime

    quiet = shared.runtime.NOISY_LOGGERS
    shared.runtime.NOISY_LOGGERS = ()
    for name in quiet:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    shared.runtime.NOISY_LOGGERS = quiet
    if "sandbox" not in request.fixturenames:
        return
    sandbox: Sandbox = request.getfixturevalue("sandbox")
    secrets = {sandbox.app_secret, *sandbox.issued_refresh_tokens, *sandbox.issued_access_tokens}
    # Every phase: at teardown `caplog.records`/`caplog.text` hold only the teardown's own lines.
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    haystacks = [formatter.format(record) for record in records] + exchange.bodies
    leaks = [s for s in secrets if s and any(s in text for text in haystacks)]
    assert not leaks, f"{len(leaks)} secret value(s) appeared in logs or responses"


_index_lock = threading.Lock()


@functools.cache
def _indexed() -> dict[str, Any]:
    """Indexed with CALLER_AUTH=function-key, whatever the first test to get here set: the host
    auth level is fixed at import (tests of the other modes use `index_function_app`)."""
    import os

    previous = os.environ.get("CALLER_AUTH")
    os.environ["CALLER_AUTH"] = "function-key"
    try:
        import function_app
    finally:
        if previous is None:
            del os.environ["CALLER_AUTH"]
        else:
            os.environ["CALLER_AUTH"] = previous
    return {candidate.get_function_name(): candidate for candidate in function_app.app.get_functions()}


def index_function_app(caller_auth: str | None) -> dict[str, Any]:
    """A fresh copy of function_app.py indexed under this CALLER_AUTH (None: unset), as the host
    would index it in a worker with that setting; its functions by name."""
    import importlib.util
    import os
    from pathlib import Path

    previous = os.environ.pop("CALLER_AUTH", None)
    if caller_auth is not None:
        os.environ["CALLER_AUTH"] = caller_auth
    try:
        path = Path(__file__).resolve().parent.parent / "function_app.py"
        spec = importlib.util.spec_from_file_location(f"function_app_{uuid.uuid4().hex}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.environ.pop("CALLER_AUTH", None)
        if previous is not None:
            os.environ["CALLER_AUTH"] = previous
    return {candidate.get_function_name(): candidate for candidate in module.app.get_functions()}


def registered_functions() -> dict[str, Any]:
    """function_app.py's functions by name; `get_functions()` indexes once, as the host does
    (under a lock: tests call functions from several threads)."""
    with _index_lock:
        return _indexed()


def function(name: str) -> Any:
    """The user callable of a function registered in function_app.py (as the host would call it)."""
    return registered_functions()[name].get_user_function()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class Api:
    """Calls the HTTP functions with `func.HttpRequest`, records responses for the leak scan."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self.bearer: str | None = None  # sent as `Authorization: Bearer ...` unless a call sets its own

    def call(
        self,
        function_name: str,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        route_params: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if self.bearer and not any(name.lower() == "authorization" for name in all_headers):
            all_headers["Authorization"] = f"Bearer {self.bearer}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = func.HttpRequest(
            method=method,
            url=FUNCTION_BASE_URL + path,
            headers=all_headers,
            params=params or {},
            route_params=route_params or {},
            body=body or b"",
        )
        response: func.HttpResponse = function(function_name)(request)
        reply = Reply(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.get_body(),
        )
        if response.mimetype and "mimetype" not in reply.headers:
            reply.headers["content-type"] = response.mimetype
        self._exchange.bodies.append(reply.body.decode(errors="replace") + json.dumps(reply.headers))
        if reply.content_type.startswith("application/problem+json"):
            # RFC 9457 in every problem any test receives: `status` is the HTTP status number.
            problem = reply.json()
            assert problem.get("status") == reply.status, f"problem status {problem.get('status')!r} != {reply.status}"
        return reply

    def upgrade(
        self,
        customer_id: str,
        family: str = "Azure",
        headers: dict[str, str] | None = None,
        callback_url: str | None = None,
    ) -> Reply:
        body = {"customerId": customer_id, "productFamily": family}
        if callback_url is not None:
            body["callbackUrl"] = callback_url
        return self.call("submit_product_upgrade", "POST", "product-upgrades", json_body=body, headers=headers)

    def request_status(self, request_id: str) -> Reply:
        return self.call(
            "get_product_upgrade_request",
            "GET",
            f"product-upgrade-requests/{request_id}",
            route_params={"requestId": request_id},
        )

    def upgrade_status(self, upgrade_id: str, customer_id: str) -> Reply:
        return self.call(
            "get_product_upgrade_status",
            "GET",
            f"product-upgrades/{upgrade_id}",
            route_params={"upgradeId": upgrade_id},
            params={"customerId": customer_id},
        )

    def eligibility(self, customer_id: str, family: str = "Azure") -> Reply:
        return self.call(
            "check_product_upgrade_eligibility",
            "POST",
            "product-upgrades/eligibility",
            json_body={"customerId": customer_id, "productFamily": family},
        )


@pytest.fixture
def api(app_env: dict[str, str], exchange: Exchange) -> Api:
    return Api(exchange)


@pytest.fixture
def customer_id() -> str:
    return str(uuid.uuid4())


def new_secret() -> str:
    """A Standard Webhooks signing secret (`whsec_` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def inbound_secret(app_env, sandbox, monkeypatch) -> str:
    """Signed inbound webhooks required, with a fresh secret in the sandbox vault."""
    secret = new_secret()
    sandbox.set_secret("inbound-webhook-secret", secret)
    monkeypatch.setenv("INBOUND_SIGNATURES_REQUIRED", "true")
    reset_runtime()
    return secret


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """Figures a test recorded with `record_property("figures", text)` (the interleaving
    explorer's counts), printed at the end of the run: under xdist too, since properties travel
    with the reports, and without `-s`."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "figures"
    ]
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(str(line))


@pytest.fixture
def held(app_env: dict[str, str]) -> Iterator[Any]:
    """The runtime store's TableClient wrapped so a test can hold a named thread at a storage call
    (tests/table_holds.py); unwrapped afterwards."""
    from shared.runtime import get_runtime

    from .table_holds import HeldTable

    runtime_store = get_runtime().store
    table = HeldTable(runtime_store._table)
    runtime_store._table = table
    yield table
    runtime_store._table = table._table
