"""The operator CLI against the sandbox: commands, exit codes, --json, a re-runnable batch."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.cli import exit_codes
from shared.cli.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *args: str) -> tuple[int, dict | str]:
    code = main(["--json", "--settings", "/nonexistent.json", *args])
    out = capsys.readouterr().out.strip()
    return code, json.loads(out) if out else ""


def test_upgrade_submits_and_reports(app_env, sandbox, capsys, customer_id):
    code, body = run(capsys, "upgrade", "--customer-id", customer_id)
    assert code == exit_codes.OK
    assert body["status"] == "submitted"
    assert body["upgradeId"] == sandbox.upgrade_ids(customer_id)[0]


def test_upgrade_with_eligibility_check_refuses_without_submitting(app_env, sandbox, capsys, customer_id):
    sandbox.customers.set(customer_id, eligible=False, reason="No Azure subscriptions")
    code, body = run(capsys, "upgrade", "--customer-id", customer_id, "--check-eligibility")
    assert code == exit_codes.REFUSED
    assert body == {
        "customerId": customer_id,
        "isEligible": False,
        "upgradeId": None,
        "reason": "No Azure subscriptions",
        "submitted": False,
    }
    assert sandbox.calls("partner_center", "create_upgrade") == []


def test_upgrade_queue_then_process_pending(app_env, sandbox, capsys, customer_id):
    code, body = run(capsys, "upgrade", "--customer-id", customer_id, "--queue")
    assert code == exit_codes.NOT_YET
    assert body["status"] == "pending"
    code, report = run(capsys, "process-pending")
    assert code == exit_codes.OK
    assert report["outcomes"] == {"submitted": 1}
    code, status = run(capsys, "status", "--request-id", body["requestId"])
    assert status["upgradeId"] == sandbox.upgrade_ids(customer_id)[0]


def test_status_of_an_upgrade_and_eligibility(app_env, sandbox, capsys, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=1)
    _, body = run(capsys, "upgrade", "--customer-id", customer_id)
    code, status = run(capsys, "status", "--upgrade-id", body["upgradeId"], "--customer-id", customer_id)
    assert code == exit_codes.OK
    assert status["state"] == "complete"
    code, eligibility = run(capsys, "eligibility", "--customer-id", customer_id)
    assert eligibility["upgradeId"] == body["upgradeId"]


def test_bad_input_exits_2_and_sends_nothing(app_env, sandbox, capsys):
    assert main(["--settings", "/nonexistent.json", "upgrade", "--customer-id", "not-a-guid"]) == exit_codes.USAGE
    assert "GUID" in capsys.readouterr().err
    assert sandbox.calls("partner_center") == []


def test_reconsent_needed_exits_5(app_env, sandbox, capsys, customer_id):
    sandbox.revoke_refresh_tokens()
    assert main(["--settings", "/nonexistent.json", "eligibility", "--customer-id", customer_id]) == exit_codes.OPERATOR
    assert "re-consent" in capsys.readouterr().err


def test_missing_settings_exit_5_naming_them(monkeypatch, capsys, tmp_path):
    for name in ("KEY_VAULT_URL", "PARTNER_TENANT_ID", "AzureWebJobsStorage"):
        monkeypatch.delenv(name, raising=False)
    from shared.runtime import reset_runtime

    reset_runtime()
    code = main(["--settings", str(tmp_path / "none.json"), "eligibility", "--customer-id", str(uuid.uuid4())])
    assert code == exit_codes.OPERATOR
    assert "KEY_VAULT_URL is required" in capsys.readouterr().err
    reset_runtime()


def test_batch_of_100_with_one_failure_is_safe_to_rerun(app_env, sandbox, capsys, tmp_path):
    customers = [str(uuid.uuid4()) for _ in range(100)]
    refused = customers[37]
    sandbox.customers.set(refused, eligible=False, reason="Suspended subscriptions")
    source = tmp_path / "customers.csv"
    source.write_text("customerId,productFamily\n" + "".join(f"{c},Azure\n" for c in customers))
    output = tmp_path / "results.csv"

    code, summary = run(capsys, "batch", str(source), "--concurrency", "8", "--output", str(output))
    assert code == exit_codes.REFUSED
    assert summary["byStatus"] == {"submitted": 99, "rejected": 1}
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 100
    assert {row["customerId"] for row in rows if row["status"] == "rejected"} == {refused}
    assert all(
        row["upgradeId"] == sandbox.upgrade_ids(row["customerId"])[0] for row in rows if row["status"] == "submitted"
    )
    creates = len(sandbox.calls("partner_center", "create_upgrade"))

    code, again = run(capsys, "batch", str(source), "--output", str(tmp_path / "again.json"))
    assert code == exit_codes.REFUSED
    assert again["byStatus"] == {"submitted": 99, "rejected": 1}
    assert len(sandbox.calls("partner_center", "create_upgrade")) == creates  # nothing sent twice
    assert all(sandbox.submissions(c) == 1 for c in customers if c != refused)
    rerun = json.loads((tmp_path / "again.json").read_text())
    assert {r["requestId"] for r in rerun} == {row["requestId"] for row in rows}


def test_batch_reports_invalid_rows(app_env, sandbox, capsys, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("customerId\nnot-a-guid\n")
    code, summary = run(capsys, "batch", str(source), "--output", str(tmp_path / "out.csv"))
    assert code == exit_codes.USAGE
    assert summary["byStatus"] == {"error": 1}
    assert sandbox.calls("partner_center") == []


@pytest.mark.parametrize("header", ["customer\n", ""])
def test_batch_needs_a_customer_id_header(app_env, capsys, tmp_path, header):
    source = tmp_path / "bad.csv"
    source.write_text(header)
    assert main(["--settings", "/nonexistent.json", "batch", str(source)]) == exit_codes.USAGE


# --- The first-hour report (issue 11): one exit-code table, flags anywhere, batch hygiene. ---


def test_json_flag_after_the_subcommand(app_env, sandbox, capsys, customer_id):
    code = main(["eligibility", "--customer-id", customer_id, "--json", "--settings", "/nonexistent.json"])
    assert code == exit_codes.OK
    assert json.loads(capsys.readouterr().out)["isEligible"] is True


def test_eligibility_with_an_upgrade_in_place_exits_3(app_env, sandbox, capsys, customer_id):
    sandbox.customers.set(customer_id, existing_upgrade=True)
    code, body = run(capsys, "eligibility", "--customer-id", customer_id)
    assert body["upgradeId"]
    assert code == exit_codes.REFUSED


def test_eligibility_naming_an_upgrade_exits_3_even_when_partner_center_says_eligible(
    app_env, sandbox, capsys, customer_id
):
    """Partner Center can answer `isEligible: true` with an `upgradeId` (here: an earlier upgrade
    that failed); the table's row 3 covers "an upgrade already in place" whatever isEligible says."""
    sandbox.customers.set(customer_id, existing_upgrade="failed")
    code, body = run(capsys, "eligibility", "--customer-id", customer_id)
    assert body["isEligible"] is True and body["upgradeId"]
    assert code == exit_codes.REFUSED


def test_a_batch_with_refused_and_not_yet_rows_exits_3_as_help_orders_them(app_env, sandbox, capsys, tmp_path):
    """`--help`: a batch exits with the most severe of its rows in the order 5, 1, 2, 3, 4, 0,
    so a refused row (3) outranks a row still waiting (4)."""
    assert "5, 1, 2, 3, 4, 0" in exit_codes.table_text()
    waiting, refused = str(uuid.uuid4()), str(uuid.uuid4())
    assert run(capsys, "upgrade", "--customer-id", waiting, "--queue")[0] == exit_codes.NOT_YET
    sandbox.customers.set(refused, eligible=False, reason="No Azure subscriptions")
    source = tmp_path / "customers.csv"
    source.write_text(f"customerId\n{waiting}\n{refused}\n")
    output = tmp_path / "results.json"
    code, summary = run(capsys, "batch", str(source), "--output", str(output))
    rows = {row["customerId"]: row["exitCode"] for row in json.loads(output.read_text())}
    assert rows == {waiting: exit_codes.NOT_YET, refused: exit_codes.REFUSED}, summary
    assert code == exit_codes.REFUSED


def test_list_without_all_reads_one_page_and_hands_back_the_token(app_env, capsys):
    customer = str(uuid.uuid4())
    first = run(capsys, "upgrade", "--customer-id", customer, "--queue")[1]["requestId"]
    assert run(capsys, "cancel", "--request-id", first)[0] == exit_codes.OK
    second = run(capsys, "upgrade", "--customer-id", customer, "--queue")[1]["requestId"]

    code, page = run(capsys, "list", "--customer-id", customer, "--top", "1")
    assert code == exit_codes.OK
    assert len(page["value"]) == 1 and page["continuationToken"]
    code, rest = run(
        capsys, "list", "--customer-id", customer, "--top", "1", "--continuation-token", page["continuationToken"]
    )
    assert code == exit_codes.OK and len(rest["value"]) == 1
    assert {page["value"][0]["requestId"], rest["value"][0]["requestId"]} == {first, second}
    code, every = run(capsys, "list", "--customer-id", customer, "--top", "1", "--all")
    assert sorted(r["requestId"] for r in every["value"]) == sorted([first, second])
    assert every["continuationToken"] is None


def test_unknown_request_id_exits_3_saying_so(app_env, capsys):
    unknown = str(uuid.uuid4())
    assert main(["--settings", "/nonexistent.json", "status", "--request-id", unknown]) == exit_codes.REFUSED
    assert f"No upgrade request {unknown}" in capsys.readouterr().err


def test_concurrency_out_of_range_states_the_range(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["batch", "x.csv", "--concurrency", "99"])
    assert exited.value.code == exit_codes.USAGE
    err = capsys.readouterr().err
    assert "must be between 1 and 32, got 99" in err
    assert "choose from" not in err


def test_unknown_output_extension_is_refused_before_any_work(app_env, sandbox, capsys, tmp_path, customer_id):
    source = tmp_path / "customers.csv"
    source.write_text(f"customerId\n{customer_id}\n")
    code = main(["--settings", "/nonexistent.json", "batch", str(source), "--output", str(tmp_path / "x.txt")])
    assert code == exit_codes.USAGE
    assert ".csv or .json" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
    assert sandbox.calls("partner_center") == []


def test_format_flag_overrides_the_extension(app_env, capsys, tmp_path, customer_id):
    source = tmp_path / "customers.csv"
    source.write_text(f"customerId\n{customer_id}\n")
    output = tmp_path / "results.txt"
    code, _ = run(capsys, "batch", str(source), "--output", str(output), "--format", "json")
    assert code == exit_codes.OK
    assert json.loads(output.read_text())[0]["customerId"] == customer_id


def test_duplicate_customer_in_a_batch_is_one_row_and_a_warning(app_env, sandbox, capsys, tmp_path, customer_id):
    source = tmp_path / "customers.csv"
    source.write_text(f"customerId,productFamily\n{customer_id},Azure\n{customer_id.upper()},azure\n")
    output = tmp_path / "results.csv"
    code = main(["--settings", "/nonexistent.json", "batch", str(source), "--output", str(output), "--json"])
    captured = capsys.readouterr()
    assert code == exit_codes.OK
    rows = list(csv.DictReader(output.open()))
    assert [row["status"] for row in rows] == ["submitted"]
    assert "row 3" in captured.err and "also on row 2" in captured.err
    assert json.loads(captured.out)["duplicates"]
    assert sandbox.submissions(customer_id) == 1


def test_a_replay_is_marked(app_env, sandbox, capsys, customer_id):
    assert main(["--settings", "/nonexistent.json", "upgrade", "--customer-id", customer_id]) == exit_codes.OK
    assert "replayed" not in capsys.readouterr().out
    assert main(["--settings", "/nonexistent.json", "upgrade", "--customer-id", customer_id]) == exit_codes.OK
    assert capsys.readouterr().out.startswith("replayed")
    _, body = run(capsys, "upgrade", "--customer-id", customer_id)
    assert body["replayed"] is True


def test_stale_local_env_exits_5(app_env, monkeypatch, capsys, customer_id):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setenv("LOCALRUN_PID", str(dead.pid))
    monkeypatch.setenv("BASE", "http://localhost:7071")
    monkeypatch.setenv("SANDBOX_URL", "https://127.0.0.1:1")
    assert main(["--settings", "/nonexistent.json", "eligibility", "--customer-id", customer_id]) == exit_codes.OPERATOR
    err = capsys.readouterr().err
    assert "no longer running" in err and err.strip().count("\n") == 0
    # exactly the variables .localrun/env exported that this shell still holds, in one command
    unset = re.search(r"`unset ([^`]+)`", err)
    assert unset, err
    names = set(unset.group(1).split())
    assert {"LOCALRUN_PID", "BASE", "SANDBOX_URL", "KEY_VAULT_URL", "AzureWebJobsStorage"} <= names
    assert names <= set(os.environ)


def test_without_a_sourced_env_while_a_runner_is_up_the_cli_says_source_it(monkeypatch, capsys, tmp_path):
    for name in ("KEY_VAULT_URL", "PARTNER_TENANT_ID", "AzureWebJobsStorage", "LOCALRUN_PID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".localrun").mkdir()
    (tmp_path / ".localrun" / "env").write_text(f"export LOCALRUN_PID={os.getpid()}\nexport BASE=http://localhost:1\n")
    monkeypatch.chdir(tmp_path)
    from shared.runtime import reset_runtime

    reset_runtime()
    code = main(["--settings", str(tmp_path / "none.json"), "eligibility", "--customer-id", str(uuid.uuid4())])
    assert code == exit_codes.OPERATOR
    assert "source .localrun/env" in capsys.readouterr().err
    reset_runtime()


def _readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    return {int(code): meaning.strip() for code, meaning in re.findall(r"^\| `(\d+)` \| (.+?) \|$", section, re.M)}


def test_one_exit_code_table_in_readme_help_and_code():
    assert _readme_exit_codes() == dict(exit_codes.TABLE)
    assert exit_codes.table_text() in build_parser().format_help().replace("\n  ", "\n  ")


@pytest.mark.parametrize("code", [row[0] for row in exit_codes.TABLE if row[0] != exit_codes.INTERRUPTED])
def test_each_exit_code_row_happens(code, app_env, sandbox, capsys, customer_id, tmp_path):
    """One real situation per row of the table (130, Ctrl-C, needs a process of its own: the batch
    test below)."""
    args = ["--settings", "/nonexistent.json"]
    if code == exit_codes.OK:
        args += ["upgrade", "--customer-id", customer_id]
    elif code == exit_codes.UNEXPECTED:
        sandbox.faults.add("eligibility", "status", count=10, status=500)
        args += ["eligibility", "--customer-id", customer_id]
    elif code == exit_codes.USAGE:
        args += ["upgrade", "--customer-id", "not-a-guid"]
    elif code == exit_codes.REFUSED:
        sandbox.customers.set(customer_id, eligible=False, reason="No Azure subscriptions")
        args += ["upgrade", "--customer-id", customer_id]
    elif code == exit_codes.NOT_YET:
        args += ["upgrade", "--customer-id", customer_id, "--queue"]
    else:
        sandbox.revoke_refresh_tokens()
        args += ["eligibility", "--customer-id", customer_id]
    assert main(args) == code, capsys.readouterr()


def test_a_command_registered_by_another_module_gets_the_global_flags(monkeypatch, capsys):
    import shared.cli.__main__ as cli

    original = cli.build_parser

    def with_extra_command():
        parser = original()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        extra = commands.add_parser("hello")
        extra.set_defaults(handler=lambda args: print(json.dumps({"json": args.json, "verbose": args.verbose})) or 0)
        return parser

    monkeypatch.setattr(cli, "build_parser", with_extra_command)
    assert main(["hello", "--json", "-v", "--settings", "/nonexistent.json"]) == exit_codes.OK
    assert json.loads(capsys.readouterr().out) == {"json": True, "verbose": True}


# --- who ran it ---


def fake_az(tmp_path, monkeypatch, script: str) -> None:
    """An `az` executable first on PATH (the Azure CLI is not installed here)."""
    az = tmp_path / "az"
    az.write_text("#!/bin/sh\n" + script + "\n")
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")


def test_upgrade_records_the_os_operator_when_there_is_no_azure_cli(app_env, capsys, customer_id, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no az anywhere
    code, body = run(capsys, "upgrade", "--customer-id", customer_id)
    assert code == exit_codes.OK
    assert body["requestedBy"] == {
        "kind": "user",
        "objectId": None,
        "appId": None,
        "displayName": f"{getpass.getuser()}@{socket.gethostname()}",
        "tenantId": None,
        "authMethod": "cli",
    }
    _, status = run(capsys, "status", "--request-id", body["requestId"])
    assert status["requestedBy"] == body["requestedBy"]  # stored, not just printed


def test_upgrade_records_the_signed_in_azure_cli_account(app_env, capsys, customer_id, monkeypatch, tmp_path):
    tenant = str(uuid.uuid4())
    account = {"tenantId": tenant, "user": {"name": "ops@contosopartner.com", "type": "user"}}
    fake_az(tmp_path, monkeypatch, f"echo '{json.dumps(account)}'")
    _, body = run(capsys, "upgrade", "--customer-id", customer_id)
    assert body["requestedBy"]["displayName"] == "ops@contosopartner.com"
    assert body["requestedBy"]["tenantId"] == tenant
    assert body["requestedBy"]["authMethod"] == "cli"


@pytest.mark.parametrize("script", ["echo 'Please run az login' >&2; exit 1", "echo 'not json'"])
def test_a_broken_or_signed_out_azure_cli_falls_back_to_the_os_user(
    app_env, capsys, customer_id, monkeypatch, tmp_path, script
):
    fake_az(tmp_path, monkeypatch, script)
    code, body = run(capsys, "upgrade", "--customer-id", customer_id)
    assert code == exit_codes.OK
    assert body["requestedBy"]["displayName"] == f"{getpass.getuser()}@{socket.gethostname()}"


def test_batch_rows_record_the_operator(app_env, capsys, tmp_path, monkeypatch):
    from shared.runtime import get_runtime

    monkeypatch.setenv("PATH", "/nonexistent")
    customers = [str(uuid.uuid4()) for _ in range(2)]
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("customerId\n" + "\n".join(customers) + "\n")
    code, _ = run(capsys, "batch", str(csv_file))
    assert code == exit_codes.OK
    stored = [r for r in get_runtime().store.all_records() if r.customer_id in customers]
    assert len(stored) == 2
    assert {r.requested_by.auth_method for r in stored if r.requested_by} == {"cli"}
    assert all(r.requested_by is not None for r in stored)


# --- Ctrl-C during a batch ---


def interrupted_batch(sandbox, tmp_path: Path, customers: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    """`cli batch` in its own process (real SIGINT, as a terminal's Ctrl-C), interrupted once a few
    rows reached Partner Center; every create is slowed so most rows are still to come."""
    import signal
    import time

    sandbox.faults.add("create_upgrade", "delay", count=len(customers), seconds=0.4)
    source = tmp_path / "customers.csv"
    source.write_text("customerId\n" + "".join(f"{c}\n" for c in customers))
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "shared.cli", "--settings", "/nonexistent.json", "batch", str(source)]
    process = subprocess.Popen(
        [*command, "--concurrency", "2", "--output", str(output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(sandbox.calls("partner_center", "create_upgrade")) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), output


def test_ctrl_c_in_a_batch_writes_the_results_and_says_how_to_resume(app_env, sandbox, tmp_path):
    customers = [str(uuid.uuid4()) for _ in range(40)]
    done, output = interrupted_batch(sandbox, tmp_path, customers)
    assert done.returncode == exit_codes.INTERRUPTED, done.stderr
    assert "Traceback" not in done.stderr
    resume = [line for line in done.stderr.splitlines() if "again" in line]
    assert len(resume) == 1 and "replay" in resume[0] and str(output) in resume[0], done.stderr
    rows = json.loads(output.read_text())
    assert [row["customerId"] for row in rows] == customers  # every row, in the file's order
    by_status: dict[str, list[str]] = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row["customerId"])
    assert set(by_status) == {"submitted", "not-reached"}, by_status  # in-flight rows were finished
    assert all(sandbox.submissions(c) == 1 for c in by_status["submitted"])
    assert all(sandbox.submissions(c) == 0 for c in by_status["not-reached"])
    assert len(by_status["not-reached"]) > len(customers) // 2

    # The resume line is true: the same command again submits the rest, nothing twice.
    rerun = [sys.executable, "-m", "shared.cli", "--settings", "/nonexistent.json", "batch"]
    again = subprocess.run(
        [*rerun, str(tmp_path / "customers.csv"), "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == exit_codes.OK, again.stderr
    assert all(sandbox.submissions(c) == 1 for c in customers)
