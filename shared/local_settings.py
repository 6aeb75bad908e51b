"""`local.settings.json`, read the way Core Tools reads it: its `Values` become environment
variables for the app (variables already set in the environment win, so a shell override works).

Used by the local runner and the operator CLI; the deployed app never reads this file."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
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


# What the local runner's `.localrun/env` exports (localrun writes exactly these): the app settings
# of its services, then its own names. A shell that sourced it holds them until told otherwise.
RUNNER_SETTINGS = (
    "KEY_VAULT_URL",
    "PARTNER_TENANT_ID",
    "PARTNER_CENTER_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "AzureWebJobsStorage",
    "UPGRADE_REQUESTS_TABLE",
    "CALLER_AUTH",
    "CALLER_AUDIENCES",
    "CALLER_TENANT_IDS",
)
RUNNER_ENV_NAMES = ("BASE", "KEY", "MASTER_KEY", "AUTH", "LOCALRUN_PID", "SANDBOX_URL", *RUNNER_SETTINGS)
LOCAL_ENV_FILE = Path(".localrun") / "env"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process)
    return True


def stale_runner_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this environment holds the settings of a local runner that is gone (None: it does not).

    The runner removes its env file when it stops, but a shell that sourced it keeps the values,
    which point at dead ports; `LOCALRUN_PID` says whose they were. The answer names exactly the
    variables to unset, in one command, so following it is enough."""
    env = os.environ if environ is None else environ
    pid = (env.get("LOCALRUN_PID") or "").strip()
    if not pid.isdigit() or _pid_alive(int(pid)):
        return None
    names = " ".join(name for name in RUNNER_ENV_NAMES if name in env)
    return (
        f"the settings in this shell came from .localrun/env of a local runner (pid {pid}) that is no longer "
        f"running, so they point at dead ports: run `unset {names}`, then `make run` "
        "(and `source .localrun/env` anew in the shell that uses it)"
    )


def check_local_env_is_live(environ: Mapping[str, str] | None = None) -> None:
    """Refuse settings sourced from a local runner that is gone (`stale_runner_env`)."""
    from shared.errors import ConfigurationError

    problem = stale_runner_env(environ)
    if problem:
        raise ConfigurationError(problem)


def unsourced_runner_hint(environ: Mapping[str, str] | None = None, env_file: Path = LOCAL_ENV_FILE) -> str | None:
    """`source .localrun/env` when a local runner is up here but this shell has not sourced its
    env (the CLI then finds no settings): said beside the missing settings."""
    env = os.environ if environ is None else environ
    if env.get("LOCALRUN_PID") or not env_file.exists():
        return None
    pid = load_env_file(env_file).get("LOCALRUN_PID", "")
    if not pid.isdigit() or not _pid_alive(int(pid)):
        return None
    return f"a local runner (pid {pid}) is up: `source {env_file}` first to use its services"


def load_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines of a runner's env file."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line.removeprefix("export "))
        if words and "=" in words[0]:
            name, value = words[0].split("=", 1)
            values[name] = value
    return values
