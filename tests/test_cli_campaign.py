"""The campaign commands of the operator CLI say things in CLI words and follow the same rules as
the rest of the CLI (issue 20): `export`'s format rule is `batch`'s, `summary` is the API's,
`list --top` states its range, a refusal names the flag (`--force`, not `{"force": true}`), and
`watch` keeps watching while the store is unreachable."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from sandbox.azurite import free_port
from shared.cli import exit_codes
from shared.cli.__main__ import build_parser, main
from shared.runtime import reset_runtime
from shared.upgrade_requests.record import FAILED, PENDING, REJECTED

from .test_campaign import make

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--settings", "/nonexistent.json", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- export: the format from --format, else the extension; another extension is refused first ---


def test_export_to_a_json_file_writes_json(app_env, capsys, tmp_path):
    request_id = make(str(uuid.uuid4()), PENDING).record.request_id
    output = tmp_path / "x.json"
    code, _, _ = cli(capsys, "export", "--output", str(output))
    assert code == exit_codes.OK
    assert [r["requestId"] for r in json.loads(output.read_text())] == [request_id]


def test_export_format_flag_wins_over_the_extension(app_env, capsys, tmp_path):
    make(str(uuid.uuid4()), PENDING)
    output = tmp_path / "x.json"
    assert cli(capsys, "export", "--format", "csv", "--output", str(output))[0] == exit_codes.OK
    assert output.read_text().startswith("requestId,status,")


@pytest.mark.parametrize("name", ["x.txt", "x"])
def test_export_to_another_extension_is_refused_before_any_work(app_env, capsys, tmp_path, name):
    output = tmp_path / name
    code, _, err = cli(capsys, "export", "--output", str(output))
    assert code == exit_codes.USAGE
    assert ".csv or .json" in err and not output.exists()


# --- summary: the API's summary route, from the CLI ---


def test_summary_counts_by_state_and_error(app_env, capsys):
    make(str(uuid.uuid4()), PENDING)
    make(str(uuid.uuid4()), FAILED, last_error_type="upgrade-failed", last_error="boom")
    code, out, _ = cli(capsys, "--json", "summary")
    assert code == exit_codes.OK
    body = json.loads(out)
    assert body["byState"][PENDING] == 1 and body["byState"][FAILED] == 1
    assert body["byLastErrorType"] == {"upgrade-failed": 1}
    assert body["oldestPendingAgeSeconds"] >= 0
    code, out, _ = cli(capsys, "summary")
    assert code == exit_codes.OK and "pending 1" in out and "upgrade-failed 1" in out


# --- README's CLI table names exactly the commands of --help ---


def readme_cli_commands() -> set[str]:
    section = (ROOT / "README.md").read_text().split("## Operator CLI", 1)[1].split("\n### ", 1)[0]
    first_cells = re.findall(r"^\| (.+?) \| .+ \|$", section, re.M)
    return {match for cell in first_cells for match in re.findall(r"`([a-z][a-z-]*)(?: [^`]*)?`", cell)}


def help_commands() -> set[str]:
    parser = build_parser()
    commands = next(action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction")
    return set(commands.choices)


def test_readme_cli_table_and_help_name_the_same_commands():
    assert {"upgrade", "list", "summary"} <= help_commands()
    assert readme_cli_commands() == help_commands()


# --- messages in CLI words ---


@pytest.mark.parametrize("top", ["0", "501", "many"])
def test_list_top_out_of_range_states_the_range(capsys, top):
    with pytest.raises(SystemExit) as exited:
        main(["list", "--top", top])
    assert exited.value.code == exit_codes.USAGE
    err = capsys.readouterr().err
    assert "top must be 1-500" in err and "choose from" not in err and len(err) < 1000  # not 500 choices


def test_retry_of_a_rejected_request_names_the_flag(app_env, capsys):
    rejected = make(str(uuid.uuid4()), REJECTED, last_error_type="not-eligible").record.request_id
    code, _, err = cli(capsys, "retry", "--request-id", rejected)
    assert code == exit_codes.REFUSED
    assert "--force" in err and '{"force"' not in err


def test_a_bad_row_names_the_file_and_line_not_the_request(app_env, capsys, tmp_path):
    source = tmp_path / "customers.csv"
    source.write_text("customer\n")
    code, _, err = cli(capsys, "batch", str(source), "--output", str(tmp_path / "out.csv"))
    assert code == exit_codes.USAGE
    assert f"{source}, line 1:" in err and "The request is not valid" not in err


def dead_storage(monkeypatch) -> None:
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;",
    )
    reset_runtime()


def test_storage_unavailable_is_said_once(app_env, capsys, monkeypatch):
    dead_storage(monkeypatch)
    code, _, err = cli(capsys, "list")
    assert code == exit_codes.OPERATOR
    assert err.lower().count("unavailable") == 1, err


def test_watch_keeps_watching_while_the_store_is_unreachable(app_env, monkeypatch):
    """A failed refresh is shown, not fatal: `watch` runs until Ctrl-C (a real SIGINT)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    dead_storage(monkeypatch)
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "--settings", "/nonexistent.json", "watch", "--interval", "0.5"],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    still_running = process.poll() is None
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert still_running, (process.returncode, err)
    assert process.returncode == exit_codes.OK and "Traceback" not in err
    assert "unreachable" in out


def test_a_batch_of_one_row_says_one_row(app_env, sandbox, capsys, tmp_path, customer_id):
    source = tmp_path / "one.csv"
    source.write_text(f"customerId\n{customer_id}\n")
    code, out, _ = cli(capsys, "batch", str(source), "--output", str(tmp_path / "out.csv"))
    assert code == exit_codes.OK
    assert out.startswith("1 row: ") and "1 rows" not in out
