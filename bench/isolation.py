"""Start a measurement in a child interpreter (bench.worker) and always clean it up.

The child gets its own session (process group), so a Ctrl-C in the terminal reaches only us: we
send it SIGTERM (it stops the sandbox and Azurite on the way out), wait, and as a last resort
SIGKILL its process group, which holds exactly the worker and the Azurite it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 20


class WorkerFailed(RuntimeError):
    pass


def _exited(pid: int, timeout: float) -> bool:
    """Wait for the child to exit WITHOUT reaping it: while it is a zombie its pid (and so its
    process group id) cannot be reused, so the killpg below can only reach what it started."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _kill_group_and_reap(process: subprocess.Popen[bytes]) -> int:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the group we created: the worker and its Azurite
    return process.wait()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if not _exited(process.pid, 0):
        process.send_signal(signal.SIGTERM)  # the worker unwinds: sandbox and Azurite stopped
        _exited(process.pid, GRACE_SECONDS)
    _kill_group_and_reap(process)


def run_isolated(target: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`bench.worker` running `target` ("module:function") with `params`; its JSON result."""
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        out_path = Path(workdir) / "result.json"
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", target, json.dumps(params), str(out_path)],
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        try:
            finished = _exited(process.pid, timeout)
        except BaseException:  # KeyboardInterrupt included: never leave the worker behind
            _stop(process)
            raise
        if not finished:
            _stop(process)
            raise WorkerFailed(f"{target} did not finish within {timeout:.0f} s")
        code = _kill_group_and_reap(process)  # nothing of its group may survive it (e.g. Azurite)
        if code != 0 or not out_path.exists():
            raise WorkerFailed(f"{target} exited with code {code}")
        return json.loads(out_path.read_text(encoding="utf-8"))
