"""API fuzzing with schemathesis: the connector's OpenAPI definition, against the local runner.

Schemathesis generates requests from `connector/apiDefinition.swagger.json` (valid and invalid)
and sends them over real HTTP to `localrun`'s host, which dispatches to the functions of
`function_app.py`. Every answer must be a documented status with the documented content type
and body schema, and never a server error. The long run (`-m slow`) tries many more cases.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from localrun.http_host import FunctionHost
from shared.validation import MAX_BODY_BYTES

from .conftest import registered_functions

SPEC = Path(__file__).resolve().parent.parent / "connector" / "apiDefinition.swagger.json"
KEY = "schemathesis-function-key"
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)

schema = schemathesis.openapi.from_path(str(SPEC))


@pytest.fixture
def runner_url(app_env, sandbox):
    host = FunctionHost(list(registered_functions().values()), function_key=KEY, master_key=KEY + "-master")
    port = host.serve("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}/api"
    host.shutdown()


def _exercise(case, runner_url: str) -> None:
    case.headers = {**(case.headers or {}), "x-functions-key": KEY}
    case.call_and_validate(base_url=runner_url, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_connector_operations_never_fail_the_contract(case, runner_url):
    _exercise(case, runner_url)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_connector_operations_never_fail_the_contract_long(case, runner_url):
    _exercise(case, runner_url)


def _body_operations() -> list[tuple[str, str, dict]]:
    spec = schema.raw_schema
    return [
        (method, path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and any(p.get("in") == "body" for p in operation.get("parameters", []))
    ]


@pytest.mark.parametrize(
    ("method", "path", "operation"), _body_operations(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_body_refusal_is_a_declared_status(method, path, operation, runner_url):
    """Every route that reads a JSON body refuses an oversize one (413) and a non-JSON one (415)
    before anything else; the connector must declare both, or a flow sees an undocumented status
    (schemathesis found 413 from cancel once, when it happened to generate a large body)."""
    import uuid

    import requests

    url = runner_url + re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
    http = requests.Session()
    http.trust_env = False
    from shared.api.campaigns import create_body_limit

    limit = create_body_limit(50_000) if path == "/campaigns" else MAX_BODY_BYTES  # (its setting's default)
    oversize = json.dumps({"padding": "x" * (limit + 1)})
    cases = {
        413: (oversize, "application/json"),
        415: ('{"customerId": "x"}', "text/plain"),
    }
    for expected, (body, content_type) in cases.items():
        reply = http.request(
            method.upper(),
            url,
            data=body.encode(),
            headers={"x-functions-key": KEY, "Content-Type": content_type},
            timeout=30,
        )
        assert reply.status_code == expected, (expected, reply.text[:300])
        assert str(expected) in operation["responses"], f"{method.upper()} {path} answers {expected} undeclared"


def _all_operations() -> list[tuple[str, str, dict]]:
    return [
        (method, path, operation)
        for path, operations in schema.raw_schema["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


@pytest.mark.parametrize(
    ("method", "path", "operation"), _all_operations(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_storage_outage_is_a_declared_status(method, path, operation, runner_url, app_env, monkeypatch):
    """Storage that does not answer (down, or stalled past its deadline on a loaded machine) makes
    a route answer 503 + Retry-After; every operation that touches storage must declare it."""
    import uuid

    import requests

    from sandbox.azurite import free_port
    from shared.runtime import reset_runtime

    connection = app_env["AzureWebJobsStorage"]
    monkeypatch.setenv("AzureWebJobsStorage", re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{free_port()}", connection))
    reset_runtime()
    customer = str(uuid.uuid4())
    url = runner_url + re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
    body = {"customerId": customer} if path.startswith("/product-upgrades") else {}
    if path.endswith("/callback"):
        body = {"url": "https://callbacks.example.net/done"}
    http = requests.Session()
    http.trust_env = False
    reply = http.request(
        method.upper(),
        url,
        json=body if method in ("post", "put") else None,
        params={"customerId": customer} if path == "/product-upgrades/{upgradeId}" else None,
        headers={"x-functions-key": KEY},
        timeout=60,
    )
    assert str(reply.status_code) in operation["responses"], (reply.status_code, reply.text[:300])
    assert reply.status_code < 500 or reply.status_code == 502 or reply.headers.get("Retry-After"), reply.text[:300]
