"""Everything the fake services share: identities, stores, scenarios, faults and the call log.

One object so every request handler sees the same world, and so ``Sandbox`` can expose it.
Each store has its own lock; the scalar settings below are replaced atomically (single
attribute assignments) and read once per request.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .caller_tokens import DEFAULT_AUDIENCE, KeyRing
from .customers import Customers
from .faults import Faults
from .recorder import CallLog
from .throttle import Throttle
from .tokens import TokenStore
from .upgrades import UpgradeStore
from .vault_store import SecretStore
from .wire import new_guid

PARTNER_CENTER_RESOURCE = "https://api.partnercenter.microsoft.com"
KEY_VAULT_PUBLIC_RESOURCE = "https://vault.azure.net"


@dataclass(frozen=True)
class Identities:
    """Who is who: the partner tenant, its app registration, the consenting user, the MSI."""

    tenant_id: str = field(default_factory=new_guid)
    tenant_domain: str = "contosopartner.onmicrosoft.com"
    app_id: str = field(default_factory=new_guid)
    app_secret: str = field(default_factory=lambda: "sbx8Q~" + secrets.token_urlsafe(30))
    user_object_id: str = field(default_factory=new_guid)
    username: str = "admin.agent@contosopartner.onmicrosoft.com"
    display_name: str = "Admin Agent"
    managed_identity_client_id: str = field(default_factory=new_guid)
    managed_identity_object_id: str = field(default_factory=new_guid)


class SandboxState:
    """The shared mutable world of one sandbox."""

    def __init__(self, identities: Identities) -> None:
        self.identities = identities
        self.tokens = TokenStore()
        self.secrets = SecretStore()
        self.upgrades = UpgradeStore()
        self.customers = Customers()
        self.faults = Faults()
        self.throttle = Throttle()  # Partner Center's per-partner rate; off until configured
        self.calls = CallLog()
        self.identity_header = secrets.token_urlsafe(32)
        self.signing_keys = KeyRing()  # signs the app's callers' tokens; published at the jwks_uri
        self.caller_tokens: list[str] = []
        # The API's app registration as Entra sees it: its audiences, and the app roles assigned
        # to each client (client id -> roles) for client-credentials tokens.
        self.caller_audiences: set[str] = {DEFAULT_AUDIENCE}
        self.caller_app_roles: dict[str, tuple[str, ...]] = {}
        self.stopping = threading.Event()
        # Known once the TLS server is bound (the port is chosen by the OS).
        self.base_url = ""
        self.key_vault_resource = ""
        # Runtime settings.
        self.latency = 0.0
        self.access_token_lifetime = 3600
        self.managed_identity_token_lifetime = 86400
        self.rotate_refresh_token = True
        self.location_style = "relative"
        # Requests a `land_late` fault left unanswered, to be processed by `land_late()`.
        self._parked: list[Callable[[], object]] = []
        self._parked_lock = threading.Lock()

    def park(self, process: Callable[[], object]) -> None:
        with self._parked_lock:
            self._parked.append(process)

    def land_late(self) -> int:
        """Process every parked request now, oldest first; how many there were."""
        with self._parked_lock:
            parked, self._parked = self._parked, []
        for process in parked:
            process()
        return len(parked)

    def parked(self) -> int:
        with self._parked_lock:
            return len(self._parked)

    def forget_parked(self) -> None:
        with self._parked_lock:
            self._parked.clear()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` but wake at once when the sandbox stops; True if stopping."""
        if seconds <= 0:
            return self.stopping.is_set()
        return self.stopping.wait(seconds)
