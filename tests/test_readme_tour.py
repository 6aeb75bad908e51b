"""README.md's tour is executable documentation: its shell blocks run verbatim (bash) against
`python -m localrun` on the embedded defaults, and every `# -> ` line is checked.

Convention (stated in the README): `# -> 202 | text | more text` under a command means its output
shows HTTP status 202 (the last status line of `curl -si`) and contains each text, where `…`
stands for anything on the line; `# -> exit 3 | text` checks a command's exit code instead.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.azurite import free_port

ROOT = Path(__file__).resolve().parent.parent
EXPECT = "# -> "
BASH = shutil.which("bash") or "/bin/bash"


@dataclass
class Step:
    command: str
    expectation: str | None


def tour_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Tour\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def steps(blocks: list[str]) -> list[Step]:
    found, pending = [], []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith(EXPECT):
                found.append(Step("\n".join(pending), line[len(EXPECT) :]))
                pending = []
            else:
                pending.append(line)
        if pending:
            found.append(Step("\n".join(pending), None))
            pending = []
    return found


def check(expectation: str, output: str, exit_code: int) -> None:
    head, *texts = [part.strip() for part in expectation.split(" | ")]
    if head.startswith("exit "):
        assert exit_code == int(head.split()[1]), f"exit {exit_code}, expected {head}:\n{output}"
    else:
        statuses = re.findall(r"^HTTP/[\d.]+ (\d{3})", output, re.M)
        assert statuses and statuses[-1] == head, f"status {statuses}, expected {head}:\n{output}"
    for text in texts:
        pattern = ".*?".join(re.escape(piece) for piece in text.split("…"))
        assert re.search(pattern, output, re.I if ":" in text.split("…")[0][:30] else 0), (
            f"{text!r} not in the output:\n{output}"
        )


def test_the_convention_checker_can_fail():
    check('202 | "status":"pending"', 'HTTP/1.1 202 Accepted\n\n{"status":"pending"}', 0)
    with pytest.raises(AssertionError):
        check("200", "HTTP/1.1 202 Accepted\n", 0)
    with pytest.raises(AssertionError):
        check("202 | Location: …/x/…", "HTTP/1.1 202 Accepted\nLocation: /y/1\n", 0)
    with pytest.raises(AssertionError):
        check("exit 3", "", 0)


def test_every_variable_the_tour_uses_is_defined_or_printed_by_the_runner():
    text = "\n".join(tour_blocks((ROOT / "README.md").read_text()))
    used = set(re.findall(r"\$\{?([A-Z_]+)", text))
    assigned = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    from localrun.__main__ import main  # noqa: F401 - the runner writes these names (see the live test)

    written_by_runner = {"BASE", "KEY", "MASTER_KEY", "AUTH"}
    assert used <= assigned | written_by_runner, used - assigned - written_by_runner


def test_the_tour_runs_verbatim(tmp_path):
    readme = (ROOT / "README.md").read_text()
    tour = steps(tour_blocks(readme))
    assert sum(1 for step in tour if step.expectation) >= 10

    # A working directory that looks like a fresh clone at rest: the repository's files, the shared
    # venv, no local.settings.json, and this runner's .localrun/env.
    work = tmp_path / "clone"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".localrun", "local.settings.json", ".git"):
            (work / entry.name).symlink_to(entry)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AzureWebJobsStorage", "KEY_VAULT", "PARTNER_", "AZURE_", "IDENTITY_"))
        and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PORT", "LOCALRUN_PID")
    }
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localrun",
            "--port",
            str(free_port()),
            "--settings",
            str(work / "none.json"),
            "--env-file",
            str(work / ".localrun" / "env"),
            "--no-timers",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = runner.stdout.readline()
            if not line:
                break
            banner.append(line)
            if "Ctrl-C stops." in line:
                break
        banner_text = "".join(banner)
        assert "Ctrl-C stops." in banner_text, banner_text + runner.stderr.read()
        for name in ("BASE=", "KEY=", "MASTER_KEY=", "AUTH="):
            assert name in banner_text  # printed under the names the tour uses

        outputs = tmp_path / "outputs"
        outputs.mkdir()
        script = ["set -u"]
        for index, step in enumerate(tour):
            script.append(f"{{\n{step.command}\n}} > {shlex.quote(str(outputs / str(index)))} 2>&1")
            script.append(f"echo $? > {shlex.quote(str(outputs / f'{index}.rc'))}")
        done = subprocess.run(
            [BASH, "-c", "\n".join(script)], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        for index, step in enumerate(tour):
            output = (outputs / str(index)).read_text()
            code = int((outputs / f"{index}.rc").read_text())
            if step.expectation is None:
                assert code == 0, f"{step.command}\n{output}"
            else:
                check(step.expectation, output, code)
            assert "Traceback" not in output, output
    finally:
        runner.terminate()
        runner.wait(timeout=30)
