"""The runner's state file (`.localrun/env`), owned by one running instance at a time.

`.localrun/env` tells the operator CLI, the sandbox control and the README tour where the
running instance's services are. A second `make run` used to overwrite it and leave the CLI
aimed at dead ports. Now the file is guarded by an exclusive `flock` on `<env-file>.lock`, held
for the runner's life: a second instance on the same file refuses to start and says who owns
it; the file is removed when the runner stops; the kernel drops the lock even on SIGKILL, and
the file names the runner's pid (`LOCALRUN_PID`) so a reader can tell it is stale.
"""

from __future__ import annotations

import fcntl
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import IO


class StateInUse(Exception):
    """Another running instance owns this state file."""


class InstanceState:
    def __init__(self, env_file: Path) -> None:
        self.env_file = env_file
        self.lock_file = env_file.with_name(env_file.name + ".lock")
        self._lock: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateInUse naming the owner (pid and base URL)."""
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = self.lock_file.open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                raise StateInUse(owner) from None
            if self._is_current(handle):
                self._lock = handle
                return
            handle.close()  # its owner removed it as it stopped (release): lock the new file instead

    def _is_current(self, handle: IO[str]) -> bool:
        """Whether the locked file is still the one at `lock_file` (release unlinks it)."""
        try:
            return os.stat(self.lock_file).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def record_owner(self, description: str) -> None:
        if self._lock is not None:
            self._lock.seek(0)
            self._lock.truncate()
            self._lock.write(description)
            self._lock.flush()

    def write_env(self, values: Mapping[str, str]) -> None:
        """`export NAME=value` lines (so `source .localrun/env` works in bash), mode 0600: it holds keys."""
        lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items() if value]
        temporary = self.env_file.with_name(self.env_file.name + ".tmp")
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        temporary.chmod(0o600)
        os.replace(temporary, self.env_file)

    def release(self) -> None:
        """Remove the env file (it would point at dead ports) and the lock file, then drop the lock."""
        if self._lock is None:
            return
        self.env_file.unlink(missing_ok=True)
        self.lock_file.unlink(missing_ok=True)  # while still locked: a waiting acquire sees it went
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None
