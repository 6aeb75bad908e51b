"""The local runner's first hour (issue 11): it refuses bad settings at start-up with the whole
list, a port in use is one line, a second instance never clobbers the first one's state, Azurite
dies with the runner however it ends, and keys never reach the access log."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from localrun.http_host import FunctionHost
from localrun.preflight import startup_problems
from sandbox.azurite import free_port
from shared.local_settings import RUNNER_ENV_NAMES

from .conftest import registered_functions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "local.settings.example.json"
REAL = ("KEY_VAULT_URL", "PARTNER_TENANT_ID", "AzureWebJobsStorage", "PORT", "LOCALRUN_PORT")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in REAL and not k.startswith("AzureWebJobsStorage")}
    return {**env, **extra}


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "localrun", "--no-timers", *args],
        cwd=ROOT,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_ready(process: subprocess.Popen[str], timeout: float = 90) -> str:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops." in line:
            return "".join(lines)
    raise AssertionError("no ready banner: " + "".join(lines) + process.stderr.read())


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- settings checked at start-up ---


def example_values() -> dict[str, str]:
    return json.loads(EXAMPLE.read_text())["Values"]


def test_unchanged_example_settings_are_refused_with_every_problem(tmp_path):
    settings = tmp_path / "local.settings.json"
    settings.write_text(EXAMPLE.read_text())
    process = start(tmp_path, "--settings", str(settings), "--env-file", str(tmp_path / "env"))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert "Traceback" not in err
    assert "KEY_VAULT_URL is still the placeholder" in err
    assert "PARTNER_TENANT_ID is still the placeholder" in err
    assert "AzureWebJobsStorage expects Azurite (table service) at 127.0.0.1:10002" in err
    assert "embedded defaults" in err  # how to fix
    assert not (tmp_path / "env").exists()


def test_every_settings_problem_is_listed_at_once():
    values = {**example_values(), "PENDING_CONCURRENCY": "100"}
    del values["PARTNER_TENANT_ID"]
    problems = startup_problems(values, EXAMPLE, probe=False)
    text = "\n".join(problems)
    assert "PARTNER_TENANT_ID is required" in text
    assert "PENDING_CONCURRENCY must be between 1 and 32, got 100" in text
    assert "KEY_VAULT_URL is still the placeholder" in text


def test_real_looking_settings_pass_without_probing():
    values = {**example_values(), **REAL_LOOKING}
    assert startup_problems(values, EXAMPLE, probe=False) == []


# A GUID tenant: with CALLER_AUTH=entra it is also the tenant whose tokens are accepted, and tokens carry GUIDs.
REAL_LOOKING = {
    "KEY_VAULT_URL": "https://my-vault.vault.azure.net",
    "PARTNER_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
}


@pytest.mark.parametrize(
    "bad",
    [
        {"CALLER_AUTH": "bogus"},
        {"CALLER_AUTH": None},
        {"CALLER_AUTH": "entra", "CALLER_AUDIENCES": None},
        {"CALLER_AUTH": "entra", "CALLER_AUDIENCES": "api://x", "CALLER_TENANT_IDS": "contoso.onmicrosoft.com"},
        {"CALLER_AUTH": "entra", "CALLER_AUDIENCES": "api://x", "AZURE_AUTHORITY_HOST": "http://login.example"},
        {"PENDING_CONCURRENCY": "0"},
        {"PENDING_SCHEDULE": "every minute"},
    ],
    ids=lambda bad: ",".join(f"{k}={v}" for k, v in bad.items()),
)
def test_every_setting_the_app_refuses_is_refused_at_start_up_with_the_same_words(bad):
    """What the routes (caller settings), the runtime (app settings) and the timer (schedule)
    would answer with is what the runner lists before its banner."""
    from shared.errors import ConfigurationError
    from shared.settings import load_caller_settings, load_settings, pending_schedule

    values = {**example_values(), **REAL_LOOKING, "CALLER_AUTH": "function-key", **bad}
    values = {name: value for name, value in values.items() if value is not None}
    refusals = []
    for load in (load_caller_settings, load_settings, pending_schedule):
        try:
            load(values)
        except ConfigurationError as error:
            refusals.append(error.detail.removeprefix("Invalid app settings: "))
    assert refusals, "the app accepts these settings: the row tests nothing"
    problems = "\n".join(startup_problems(values, EXAMPLE, probe=False))
    for refusal in refusals:
        for part in refusal.split("; "):
            assert part in problems


def test_a_bad_caller_auth_on_embedded_defaults_stops_before_the_banner(tmp_path):
    env_file = tmp_path / "env"
    process = start(
        tmp_path, "--port", str(free_port()), "--env-file", str(env_file), env=clean_env(CALLER_AUTH="bogus")
    )
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # it served: stop it, then fail on what it printed
        stop(process)
        out, err = process.communicate()
    assert process.returncode == 2, out + err
    assert "CALLER_AUTH must be one of entra, function-key, got 'bogus'" in err
    assert "Ctrl-C stops." not in out and "Traceback" not in err
    assert not (tmp_path / "env").exists()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def stale_runner_env() -> dict[str, str]:
    """What `source .localrun/env` left in a shell after that runner stopped."""
    port = free_port()
    return {
        "LOCALRUN_PID": str(dead_pid()),
        "BASE": "http://localhost:7071",
        "KEY": "k",
        "SANDBOX_URL": f"https://127.0.0.1:{port}",
        "KEY_VAULT_URL": f"https://127.0.0.1:{port}",
        "PARTNER_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "REQUESTS_CA_BUNDLE": "/nonexistent/localrun/sandbox-ca.pem",
        "AzureWebJobsStorage": f"UseDevelopmentStorage=true;TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
        "CALLER_AUTH": "entra",
    }


def test_a_shell_holding_a_stopped_runners_env_is_told_exactly_what_to_unset(tmp_path):
    stale = stale_runner_env()
    process = start(tmp_path, "--port", str(free_port()), "--env-file", str(tmp_path / "env"), env=clean_env(**stale))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert err.strip().count("\n") == 0, err  # one message
    assert "local.settings.json" not in err and "Traceback" not in err
    unset = set(shlex.split(err.split("`unset ", 1)[1].split("`", 1)[0]))
    assert set(stale) <= unset <= set(RUNNER_ENV_NAMES)
    # following the advice is enough: the runner starts (embedded defaults) in that shell
    followed = {name: value for name, value in clean_env(**stale).items() if name not in unset}
    runner = start(tmp_path, "--port", str(free_port()), "--env-file", str(tmp_path / "env"), env=followed)
    try:
        wait_ready(runner)
    finally:
        stop(runner)


def test_sandbox_customer_after_the_runner_stopped_is_one_line(tmp_path):
    for env in (stale_runner_env(), {**stale_runner_env(), "LOCALRUN_PID": ""}):
        done = subprocess.run(
            [sys.executable, "-m", "sandbox", "customer", "x", "--ineligible", "--env-file", str(tmp_path / "none")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(**env),
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
        assert "make run" in done.stderr


# --- ports, instances, state ---


def test_port_in_use_is_one_clear_line_and_starts_nothing(tmp_path):
    port = free_port()
    first = start(tmp_path, "--port", str(port), "--env-file", str(tmp_path / "first" / "env"))
    try:
        wait_ready(first)
        env_before = (tmp_path / "first" / "env").read_text()
        second = start(tmp_path, "--env-file", str(tmp_path / "second" / "env"), env=clean_env(PORT=str(port)))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert err.strip().count("\n") == 0, err
        assert f"port {port} is already in use" in err and "PORT=" in err and "--port" in err
        assert children(second.pid) == set()
        assert (tmp_path / "first" / "env").read_text() == env_before
    finally:
        stop(first)


def test_a_second_instance_never_clobbers_the_first_ones_state(tmp_path):
    env_file = tmp_path / ".localrun" / "env"
    first = start(tmp_path, "--port", str(free_port()), "--env-file", str(env_file))
    try:
        wait_ready(first)
        before = env_file.read_text()
        second = start(tmp_path, "--port", str(free_port()), "--env-file", str(env_file))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert f"pid {first.pid}" in err and "--env-file" in err and "Traceback" not in err
        assert env_file.read_text() == before
    finally:
        stop(first)
    assert not env_file.exists()  # removed at exit: nothing left pointing at dead ports
    assert list(env_file.parent.iterdir()) == []  # nor its lock file


def make_run(state: Path, port: int) -> subprocess.Popen[str]:
    """`PORT=port make run` with the runner's state in `state` (LOCALRUN_STATE_DIR); the set-up
    stamps are taken as done (-o): this test is about the runner, not the install."""
    return subprocess.Popen(
        [shutil.which("make") or "make", "-s", "-o", ".venv/.installed", "-o", "node_modules/.installed", "run"],
        cwd=ROOT,
        env=clean_env(PORT=str(port), LOCALRUN_STATE_DIR=str(state)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def saved_env(path: Path) -> dict[str, str]:
    return dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in path.read_text().splitlines() if line
    )


def eligible(saved: dict[str, str]) -> bool:
    import uuid

    name, value = saved["AUTH"].split(": ", 1)
    reply = requests.post(
        f"{saved['BASE']}/api/product-upgrades/eligibility",
        json={"customerId": str(uuid.uuid4())},
        headers={name: value},
        timeout=30,
    )
    return reply.status_code == 200 and reply.json()["isEligible"] is True


def test_two_runners_on_two_ports_from_make_each_with_its_own_env_file(tmp_path):
    """The port-in-use advice names a command that works, and two runners coexist."""
    state = tmp_path / "state"
    first_port = free_port()
    first = make_run(state, first_port)
    runners = [first]
    try:
        assert f"source {state / 'env'}" in wait_ready(first)
        refused = make_run(state, first_port)
        _, err = refused.communicate(timeout=60)
        assert refused.returncode != 0 and "already in use" in err
        advice = re.search(r"PORT=(\d+) make run", err)
        assert advice, err
        second_port = int(advice.group(1))
        second = make_run(state, second_port)
        runners.append(second)
        assert f"source {state / f'env-{second_port}'}" in wait_ready(second)
        one, two = saved_env(state / "env"), saved_env(state / f"env-{second_port}")
        assert one["BASE"].endswith(f":{first_port}") and two["BASE"].endswith(f":{second_port}")
        assert eligible(one) and eligible(two)
    finally:
        for runner in runners:
            stop_group(runner)
    assert sorted(p.name for p in state.iterdir()) == []  # env files and their locks removed


def stop_group(process: subprocess.Popen[str]) -> None:
    """Ctrl-C as a terminal sends it: to the whole process group (make and the runner under it)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM])
def test_azurite_dies_with_the_runner_however_it_ends(tmp_path, signum):
    env_file = tmp_path / "env"
    runner = start(tmp_path, "--port", str(free_port()), "--env-file", str(env_file))
    try:
        wait_ready(runner)
        azurite = children(runner.pid)
        assert azurite, "the runner should have started Azurite"
        runner.send_signal(signum)
        runner.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(pid) for pid in azurite):
            time.sleep(0.1)
        assert not any(alive(pid) for pid in azurite), "Azurite outlived the runner"
        if signum != signal.SIGKILL:
            assert not env_file.exists()
        else:  # the file stays, but says whose it is: the CLI refuses it (test_cli: stale env)
            assert f"LOCALRUN_PID={runner.pid}" in env_file.read_text()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


# --- access log ---


def test_access_log_never_shows_keys_or_tokens(app_env, caplog):
    key, token = "function-key-in-query-123", "eyJhbGciOi.bearer-token-456"
    host = FunctionHost(list(registered_functions().values()), function_key=key, master_key="master-789")
    port = host.serve("127.0.0.1", 0)
    http = requests.Session()
    http.trust_env = False
    caplog.set_level(logging.INFO, logger="localrun.http")
    try:
        http.get(f"http://127.0.0.1:{port}/api/nothing?code={key}", timeout=10)
        http.get(
            f"http://127.0.0.1:{port}/api/product-upgrades/x?customerId=y&code={key}",
            headers={"Authorization": f"Bearer {token}", "x-functions-key": key},
            timeout=10,
        )
    finally:
        host.shutdown()
    access = [r.getMessage() for r in caplog.records if r.name == "localrun.http"]
    assert len(access) == 2
    assert all("code=***" in line for line in access), access
    assert not any(key in line or token in line for line in access), access


# --- the sandbox control the tour uses ---


def test_sandbox_customer_control_on_a_running_runner(tmp_path):
    import uuid

    env_file = tmp_path / ".localrun" / "env"
    runner = start(tmp_path, "--port", str(free_port()), "--env-file", str(env_file))
    try:
        wait_ready(runner)
        saved = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in env_file.read_text().splitlines()
            if line
        )
        auth_name, auth_value = saved["AUTH"].split(": ", 1)  # the caller's header, whatever CALLER_AUTH is
        customer = str(uuid.uuid4())

        def eligibility() -> dict:
            reply = requests.post(
                f"{saved['BASE']}/api/product-upgrades/eligibility",
                json={"customerId": customer},
                headers={auth_name: auth_value},
                timeout=30,
            )
            return reply.json()

        assert eligibility()["isEligible"] is True
        command = [sys.executable, "-m", "sandbox", "customer", customer, "--env-file", str(env_file)]
        done = subprocess.run([*command, "--ineligible"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "not eligible" in done.stdout
        assert eligibility()["isEligible"] is False
        done = subprocess.run([*command, "--eligible"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert eligibility()["isEligible"] is True
    finally:
        stop(runner)


def test_sandbox_customer_control_without_a_runner_says_what_to_do(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "customer", "x", "--ineligible", "--env-file", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 2
    assert "make run" in done.stderr
