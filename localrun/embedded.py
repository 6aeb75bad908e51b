"""The embedded defaults: Azurite and the sandbox, started only when no real settings are given."""

from __future__ import annotations

from collections.abc import Mapping

from sandbox import Sandbox
from sandbox.azurite import Azurite

# Settings that say "this run points at real services": any of them disables the embedded defaults.
REAL_SETTINGS = ("KEY_VAULT_URL", "PARTNER_TENANT_ID")
SHARED_ENV = (
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
)


def needs_embedded_defaults(environ: Mapping[str, str]) -> bool:
    return not any((environ.get(name) or "").strip() for name in REAL_SETTINGS)


class EmbeddedServices:
    def __init__(self) -> None:
        self.sandbox = Sandbox()
        self.azurite = Azurite()

    def launch(self) -> None:
        """Start Azurite's process now; `start()` waits for it (the runner imports the app meanwhile)."""
        self.azurite.launch()

    def start(self) -> dict[str, str]:
        """Start both, seed the vault with demo credentials; the settings that point at them."""
        if self.azurite.port == 0:
            self.azurite.launch()
        self.sandbox.start()
        self.azurite.wait_ready()
        self.sandbox.seed_partner_credentials()
        return {**self.sandbox.env(), "AzureWebJobsStorage": self.azurite.connection_string}

    def stop(self) -> None:
        self.sandbox.stop()
        self.azurite.stop()
