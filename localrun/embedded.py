"""The embedded defaults: Azurite and the sandbox, started only when no real settings are given."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from sandbox import Sandbox
from sandbox.azurite import Azurite
from shared.local_settings import RUNNER_SETTINGS

BOTH_ROLES = ("ProductUpgrades.Submit", "ProductUpgrades.Read")
READ_ROLE = "ProductUpgrades.Read"

# Settings that say "this run points at real services": any of them disables the embedded defaults.
REAL_SETTINGS = ("KEY_VAULT_URL", "PARTNER_TENANT_ID")
SHARED_ENV = RUNNER_SETTINGS  # what .localrun/env exports of the settings in use


def needs_embedded_defaults(environ: Mapping[str, str]) -> bool:
    return not any((environ.get(name) or "").strip() for name in REAL_SETTINGS)


class EmbeddedServices:
    def __init__(self) -> None:
        self.sandbox = Sandbox()
        self.azurite = Azurite()

    def launch(self) -> None:
        """Start Azurite's process now; `start()` waits for it (the runner imports the app meanwhile)."""
        self.azurite.launch()

    def start(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Start both, seed the vault with demo credentials; the settings that point at them.
        Callers sign in with the sandbox's Entra (`CALLER_AUTH=entra`) unless CALLER_AUTH is set."""
        if self.azurite.port == 0:
            self.azurite.launch()
        self.sandbox.start()
        self.azurite.wait_ready()
        self.sandbox.seed_partner_credentials()
        callers = {} if (environ.get("CALLER_AUTH") or "").strip() else self.sandbox.caller_env()
        return {**self.sandbox.env(), **callers, "AzureWebJobsStorage": self.azurite.connection_string}

    def caller_token(self, roles: tuple[str, ...]) -> str:
        """A sandbox-signed caller token (a user) with these app roles, for the banner's curl."""
        return self.sandbox.caller_token(roles=roles, lifetime=8 * 3600)

    def token_command(self, roles: tuple[str, ...]) -> str:
        """A shell command that prints a fresh caller token with these roles."""
        body = json.dumps({"roles": list(roles)})
        return (
            f"curl -s --cacert {shlex.quote(self.sandbox.ca_bundle_path)} -X POST "
            f"'{self.sandbox.base_url}/_sandbox/caller-tokens' -H 'Content-Type: application/json' "
            f"-d '{body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
        )

    def stop(self) -> None:
        self.sandbox.stop()
        self.azurite.stop()
