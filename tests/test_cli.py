"""The operator CLI against the sandbox: commands, exit codes, --json, a re-runnable batch."""

from __future__ import annotations

import csv
import getpass
import json
import os
import socket
import uuid

import pytest

from shared.cli import exit_codes
from shared.cli.__main__ import main


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
