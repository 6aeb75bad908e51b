"""`local.settings.json`, read the way Core Tools reads it: its `Values` become environment
variables for the app (variables already set in the environment win, so a shell override works).

Used by the local runner and the operator CLI; the deployed app never reads this file."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_local_settings(path: Path) -> dict[str, str]:
    """The file's Values (empty if there is no file); raises ValueError on a malformed file."""
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise ValueError(f"{path}: 'Values' must be an object")
    return {str(key): str(value) for key, value in values.items()}


def apply(values: dict[str, str]) -> None:
    for key, value in values.items():
        os.environ.setdefault(key, value)


def check_local_env_is_live(environ: dict[str, str] | None = None) -> None:
    """Refuse settings sourced from a local runner that is gone (`.localrun/env` of a killed run).

    The runner removes its env file when it stops, but not when it is SIGKILLed; the file names
    the runner's pid (`LOCALRUN_PID`), so its ports are known to be dead when that pid is."""
    from shared.errors import ConfigurationError

    pid = (environ if environ is not None else os.environ).get("LOCALRUN_PID", "").strip()
    if not pid.isdigit():
        return
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        raise ConfigurationError(
            f"the settings in this shell came from .localrun/env of a local runner (pid {pid}) that is no longer "
            "running, so they point at dead ports: start `make run` again and `source .localrun/env` anew "
            "(or `unset LOCALRUN_PID` if you set these variables yourself)"
        ) from None
    except PermissionError:
        return  # it exists (another user's process)
