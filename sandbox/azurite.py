"""Azurite (the Azure Storage emulator, from the project's npm dependency) on a free loopback port.

The request store is tested against the real Table service protocol, not an in-memory fake:
tests and the local runner start Azurite's table service with this class.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret: it only opens the local emulator).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


PR_SET_DEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(prctl: Any, parent_pid: int) -> None:
    """In the child, before exec: the kernel SIGKILLs it when the parent dies, however the parent
    ends (SIGKILL and SIGHUP included), so Azurite is never orphaned. The setting survives exec.
    It fires when the *thread* that started the child exits: start Azurite from a thread that lives
    as long as the process (the main thread in the runner and in pytest). `prctl` is resolved in
    the parent: loading a library between fork and exec could deadlock."""
    prctl(PR_SET_DEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def parent_death_hook() -> Callable[[], None] | None:
    """A `preexec_fn` setting the parent-death signal (Linux), or None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None  # elsewhere Ctrl-C and SIGTERM still stop Azurite; SIGKILL would orphan it
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return functools.partial(die_with_parent, prctl, os.getpid())


def azurite_table_command() -> list[str]:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-table"
    if local.exists():
        return [str(local)]
    found = shutil.which("azurite-table")
    if found:
        return [found]
    raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")


class Azurite:
    """The table service of Azurite, in memory, on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def table_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def pid(self) -> int:
        """The node process (a test stalls it with SIGSTOP/SIGCONT, as a loaded machine would)."""
        assert self._process is not None, "launch() first"
        return self._process.pid

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.table_endpoint};"
        )

    def start(self, timeout: float = 30.0) -> Azurite:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Azurite:
        """Start the process and return at once (node takes seconds to boot: do other work, then
        `wait_ready`)."""
        self.port = free_port()
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        command = [
            *azurite_table_command(),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
            "--silent",
        ]
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell; cwd keeps Azurite files out of the repo
            command,
            cwd=self._workdir.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            preexec_fn=parent_death_hook(),
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> Azurite:
        """Block until Azurite listens (RuntimeError with its stderr if it exits or times out)."""
        assert self._process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
                raise RuntimeError(f"Azurite exited at start: {error[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
