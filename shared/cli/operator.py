"""Who runs the CLI: recorded as `requestedBy` (authMethod `cli`) on every request it stores.

The signed-in Azure CLI account when `az account show` answers (user name, tenant, and whether it
is a user or a service principal), else the OS user at this host. The Azure CLI is optional: not
installed, not signed in, slow or broken, it is simply not used (never an error for the operator).
"""

from __future__ import annotations

import getpass
import json
import logging
import shutil
import socket
import subprocess

from shared.upgrade_requests.record import APPLICATION, USER, RequestedBy

log = logging.getLogger(__name__)

AZ_TIMEOUT_SECONDS = 10


def current_operator() -> RequestedBy:
    return azure_cli_account() or os_operator()


def os_operator() -> RequestedBy:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return RequestedBy(kind=USER, auth_method="cli", display_name=f"{user}@{socket.gethostname()}")


def azure_cli_account() -> RequestedBy | None:
    """The account `az account show` reports, or None (no Azure CLI, not signed in, any failure)."""
    az = shutil.which("az")
    if az is None:
        return None
    try:
        shown = subprocess.run(  # noqa: S603 - fixed arguments, az found on PATH by which(); no user input
            [az, "account", "show", "--output", "json"],
            capture_output=True,
            text=True,
            timeout=AZ_TIMEOUT_SECONDS,
            check=False,
        )
        account = json.loads(shown.stdout) if shown.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        account = None
    if not isinstance(account, dict) or not isinstance(account.get("user"), dict):
        log.info("cli.operator az_account=unavailable")
        return None
    user = account["user"]
    name = user.get("name")
    kind = APPLICATION if user.get("type") == "servicePrincipal" else USER
    return RequestedBy(
        kind=kind,
        auth_method="cli",
        display_name=str(name) if name else None,
        app_id=str(name) if kind == APPLICATION and name else None,
        tenant_id=str(account.get("tenantId")) if account.get("tenantId") else None,
    )
