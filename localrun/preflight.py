"""Start-up checks of the local runner: every setting, placeholders, and the services they name.

The app itself reads settings lazily (on the first request), which is right in Azure but made a
local mistake show up as a 500 or a misleading 502 minutes later. The runner checks everything
before it serves, lists every problem at once, says what it expects where and how to fix each.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.settings import AZURE_WEBJOBS_STORAGE, KEY_VAULT_URL, PARTNER_TENANT_ID, settings_report

EXAMPLE_FILE = "local.settings.example.json"
# Azurite's fixed table endpoint for `UseDevelopmentStorage=true` (the Storage SDKs' convention).
DEVELOPMENT_STORAGE_TABLE = ("127.0.0.1", 10002)
EMBEDDED_HINT = "or delete local.settings.json (and unset the variable) to run on the embedded defaults"


@dataclass(frozen=True)
class Service:
    """A service the settings point at: what, where (host, port) and which setting says so."""

    name: str
    setting: str
    host: str
    port: int

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def placeholder_problems(environ: Mapping[str, str], example_file: Path) -> list[str]:
    """Required settings still holding the example file's placeholder values."""
    if not example_file.exists():
        return []
    example = json.loads(example_file.read_text(encoding="utf-8")).get("Values", {})
    problems = []
    for setting in (KEY_VAULT_URL, PARTNER_TENANT_ID):
        value = (environ.get(setting.name) or "").strip()
        if value and value == example.get(setting.name):
            problems.append(
                f"{setting.name} is still the placeholder from {EXAMPLE_FILE} ({value!r}): "
                f"set {'your vault URL' if setting is KEY_VAULT_URL else 'your partner tenant id'}, {EMBEDDED_HINT}"
            )
    return problems


def storage_service(environ: Mapping[str, str]) -> Service | None:
    """Where `AzureWebJobsStorage` sends table calls (None if it is not set or not understood)."""
    name = AZURE_WEBJOBS_STORAGE.name
    connection = (environ.get(name) or "").strip()
    if connection:
        parts = dict(
            part.split("=", 1) for part in connection.split(";") if "=" in part
        )  # values may contain '=' (keys): split once
        if parts.get("UseDevelopmentStorage", "").lower() == "true":
            return Service("Azurite (table service)", name, *DEVELOPMENT_STORAGE_TABLE)
        endpoint = parts.get("TableEndpoint")
        if not endpoint and parts.get("AccountName"):
            suffix = parts.get("EndpointSuffix", "core.windows.net")
            endpoint = f"{parts.get('DefaultEndpointsProtocol', 'https')}://{parts['AccountName']}.table.{suffix}"
        return _service_at("Table Storage", name, endpoint) if endpoint else None
    endpoint = (environ.get(name + "__tableServiceUri") or "").strip()
    account = (environ.get(name + "__accountName") or "").strip()
    if not endpoint and account:
        endpoint = f"https://{account}.table.core.windows.net"
    return _service_at("Table Storage", name, endpoint) if endpoint else None


def vault_service(environ: Mapping[str, str]) -> Service | None:
    url = (environ.get(KEY_VAULT_URL.name) or "").strip()
    return _service_at("Key Vault", KEY_VAULT_URL.name, url) if url else None


def _service_at(name: str, setting: str, url: str) -> Service | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return Service(name, setting, parts.hostname, port)


def unreachable(service: Service, timeout: float = 2.0) -> str | None:
    """Why nothing answers at the service's address (None: something listens there)."""
    try:
        with socket.create_connection((service.host, service.port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"the host name {service.host} does not resolve"
    except OSError as error:
        return f"nothing answers at {service.where} ({error.strerror or type(error).__name__})"


def reachability_problems(environ: Mapping[str, str]) -> list[str]:
    problems = []
    storage = storage_service(environ)
    if storage is not None and (why := unreachable(storage)):
        if (storage.host, storage.port) == DEVELOPMENT_STORAGE_TABLE:
            fix = (
                "start Azurite's table service there (`npx azurite-table --tableHost 127.0.0.1 --inMemoryPersistence`"
                f" in another terminal), {EMBEDDED_HINT} (Azurite is then started for you)"
            )
        else:
            fix = f"check {storage.setting} and your network, {EMBEDDED_HINT}"
        problems.append(f"{storage.setting} expects {storage.name} at {storage.where}, but {why}: {fix}")
    vault = vault_service(environ)
    if vault is not None and (why := unreachable(vault)):
        problems.append(
            f"{vault.setting} expects {vault.name} at {vault.where}, but {why}: check the vault URL and your network "
            f"(`az login` for access), {EMBEDDED_HINT}"
        )
    return problems


def startup_problems(environ: Mapping[str, str], example_file: Path, *, probe: bool = True) -> list[str]:
    """Everything that would make the app fail, each line naming the setting and the fix."""
    problems = [f"{line}: fix it in local.settings.json or the environment" for line in settings_report(environ)]
    problems += placeholder_problems(environ, example_file)
    if probe:
        problems += reachability_problems(environ)
    return problems


def expected_services(environ: Mapping[str, str]) -> list[str]:
    """One line per service the app will call, for the ready banner."""
    lines = []
    for service in (storage_service(environ), vault_service(environ)):
        if service is not None:
            lines.append(f"  {service.name:<24} {service.where:<28} ({service.setting})")
    return lines
