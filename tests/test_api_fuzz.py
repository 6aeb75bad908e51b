"""API fuzzing with schemathesis: the connector's OpenAPI definition, against the local runner.

Schemathesis generates requests from `connector/apiDefinition.swagger.json` (valid and invalid)
and sends them over real HTTP to `localrun`'s host, which dispatches to the functions of
`function_app.py`. Every answer must be a documented status with the documented content type
and body schema, and never a server error. The long run (`-m slow`) tries many more cases.
"""

from __future__ import annotations

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
