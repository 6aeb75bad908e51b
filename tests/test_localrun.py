"""The local runner over real HTTP: routes from function_app.py, keys, 404s, timers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import azure.functions as func
import pytest
import requests

from localrun.http_host import FunctionHost
from localrun.routes import compile_template
from localrun.timers import TimerScheduler, next_fire
from sandbox.azurite import free_port

from .conftest import registered_functions

ROOT = Path(__file__).resolve().parent.parent
KEY, MASTER = "function-key-for-tests", "master-key-for-tests"


@pytest.fixture
def runner(app_env):
    host = FunctionHost(list(registered_functions().values()), function_key=KEY, master_key=MASTER)
    port = host.serve("127.0.0.1", 0)
    session = requests.Session()
    session.trust_env = False  # plain http on loopback: no proxies, no CA bundle involved
    yield f"http://127.0.0.1:{port}", session
    host.shutdown()


def test_serves_the_real_routes_with_the_function_key(runner, sandbox):
    base, http = runner
    customer = str(uuid.uuid4())
    reply = http.post(
        f"{base}/api/product-upgrades", json={"customerId": customer}, headers={"x-functions-key": KEY}, timeout=30
    )
    assert reply.status_code == 202
    body = reply.json()
    assert body["upgradeId"] == sandbox.upgrade_ids(customer)[0]
    assert reply.headers["Location"] == f"{base}/api/product-upgrade-requests/{body['requestId']}"
    status = http.get(reply.headers["Location"], params={"code": KEY}, timeout=30)
    assert status.status_code in (200, 202)
    assert status.json()["requestId"] == body["requestId"]


def test_route_parameters_and_query_reach_the_function(runner, sandbox):
    base, http = runner
    customer = str(uuid.uuid4())
    upgrade_id = http.post(
        f"{base}/api/product-upgrades", json={"customerId": customer}, headers={"x-functions-key": KEY}, timeout=30
    ).json()["upgradeId"]
    reply = http.get(
        f"{base}/api/product-upgrades/{upgrade_id}", params={"customerId": customer, "code": KEY}, timeout=30
    )
    assert reply.status_code == 200
    assert reply.json()["upgradeId"] == upgrade_id


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_is_401_and_nothing_runs(runner, sandbox, key):
    base, http = runner
    headers = {"x-functions-key": key} if key else {}
    reply = http.post(
        f"{base}/api/product-upgrades", json={"customerId": str(uuid.uuid4())}, headers=headers, timeout=30
    )
    assert reply.status_code == 401
    assert sandbox.calls("partner_center") == []


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/nothing"), ("DELETE", "/api/product-upgrades"), ("GET", "/"), ("GET", "/api")]
)
def test_unknown_routes_and_methods_are_404(runner, method, path):
    base, http = runner
    assert http.request(method, base + path, headers={"x-functions-key": KEY}, timeout=30).status_code == 404


def test_problem_json_passes_through(runner):
    base, http = runner
    reply = http.post(
        f"{base}/api/product-upgrades", data=b"{", headers={"x-functions-key": KEY, "Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.headers["Content-Type"].startswith("application/problem+json")


def test_admin_endpoint_fires_the_timer_with_the_master_key_only(runner, sandbox):
    base, http = runner
    customer = str(uuid.uuid4())
    http.post(
        f"{base}/api/product-upgrades",
        json={"customerId": customer},
        headers={"x-functions-key": KEY, "Prefer": "respond-async"},
        timeout=30,
    )
    assert sandbox.submissions(customer) == 0
    url = f"{base}/admin/functions/process_pending_requests"
    assert http.post(url, headers={"x-functions-key": KEY}, timeout=30).status_code == 401
    assert http.post(url, headers={"x-functions-key": MASTER}, timeout=30).status_code == 202
    assert sandbox.submissions(customer) == 1


def test_scheduler_fires_a_timer_on_its_schedule():
    app = func.FunctionApp()
    fired = threading.Event()

    @app.timer_trigger(schedule="* * * * * *", arg_name="timer")
    def every_second(timer: func.TimerRequest) -> None:
        fired.set()

    scheduler = TimerScheduler({f.get_function_name(): f for f in app.get_functions()})
    scheduler.start()
    try:
        assert fired.wait(3)
    finally:
        scheduler.stop()


def test_ncrontab_seconds_come_first():
    from datetime import UTC, datetime

    start = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert next_fire("0 */5 * * * *", start) == datetime(2026, 1, 1, 0, 5, 0, tzinfo=UTC)
    assert next_fire("30 * * * * *", start) == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def test_templates_match_like_the_host():
    pattern, literals = compile_template("product-upgrades/{upgradeId}")
    assert literals == 1
    assert pattern.match("/product-upgrades/abc").groupdict() == {"upgradeId": "abc"}
    assert pattern.match("/product-upgrades/abc/def") is None
    optional, _ = compile_template("items/{id?}")
    assert optional.match("/items") and optional.match("/items/1")


def test_one_command_run_on_embedded_defaults():
    """`python -m localrun` with no settings: starts Azurite + sandbox, prints a working curl line."""
    env = {k: v for k, v in os.environ.items() if k not in ("KEY_VAULT_URL", "PARTNER_TENANT_ID", "CALLER_AUTH")}
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localrun",
            "--port",
            str(port),
            "--settings",
            "/nonexistent/local.settings.json",
            "--env-file",
            str(ROOT / ".localrun" / f"env-{port}"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops." in line or not line:
                break
        output = "".join(lines)
        assert "embedded defaults" in output
        # Embedded defaults sign callers in with the sandbox's Entra: a bearer token, no function key.
        curl = re.search(r"curl -s -X POST '([^']+)' -H 'Authorization: Bearer ([^']+)' .* -d '([^']+)'", output)
        assert curl, output
        assert "x-functions-key" not in curl.group(0)
        http = requests.Session()
        http.trust_env = False
        url, token, body = curl.groups()
        json_header = {"Content-Type": "application/json"}
        assert http.post(url, data=body, timeout=30, headers=json_header).status_code == 401
        reply = http.post(url, data=body, timeout=30, headers={"Authorization": f"Bearer {token}", **json_header})
        assert reply.status_code == 202
        assert re.fullmatch(r"[0-9a-f-]{36}", reply.json()["upgradeId"])
        assert reply.json()["requestedBy"]["authMethod"] == "entra"
        # The printed command gets a token with only ProductUpgrades.Read: it reads but cannot submit.
        command = next(line.strip() for line in lines if "/_sandbox/caller-tokens" in line)
        read_token = subprocess.run(
            [shutil.which("sh") or "/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        read_only = {"Authorization": f"Bearer {read_token}"}
        assert http.get(reply.headers["Location"], headers=read_only, timeout=30).status_code in (200, 202)
        refused = http.post(url, data=body, timeout=30, headers={**read_only, **json_header})
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        (ROOT / ".localrun" / f"env-{port}").unlink(missing_ok=True)
