"""``Sandbox``: the one object tests and tools use to run the fake Azure services.

It starts two local servers: HTTPS (Entra, Key Vault, Partner Center, ``/_sandbox`` control)
and plain HTTP (the managed identity endpoint, plain as on App Service), both on 127.0.0.1 with
OS-chosen ports. The app under test is pointed at them purely through ``env()``: production
code has no test switches.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .caller_tokens import DEFAULT_AUDIENCE, CallerTokenRequest, caller_claims, sign
from .dispatch import Dispatcher
from .httpd import SandboxHTTPServer, ServerThread
from .key_vault import challenge_resource
from .routes import identity_routes, tls_routes
from .state import Identities, SandboxState
from .tls import TestCertificateAuthority

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from .customer_directory import CustomerProfile
    from .customer_seed import SeedSummary
    from .customers import Customers
    from .faults import Faults
    from .recorder import RecordedCall
    from .throttle import ThrottleSetting

APP_ID_SECRET = "partner-center-app-id"
APP_SECRET_SECRET = "partner-center-app-secret"
REFRESH_TOKEN_SECRET = "partner-center-refresh-token"


class Sandbox:
    """Local fakes of Entra ID, managed identity, Key Vault and Partner Center.

    Use ``with Sandbox() as sb:`` or ``start()``/``stop()``. Every constructor argument is
    optional; defaults are fresh GUIDs and random secrets.
    """

    def __init__(
        self,
        tenant_id: str | None = None,
        app_id: str | None = None,
        app_secret: str | None = None,
        refresh_token: str | None = None,
    ) -> None:
        defaults = Identities()
        self._state = SandboxState(
            Identities(
                tenant_id=tenant_id or defaults.tenant_id,
                app_id=app_id or defaults.app_id,
                app_secret=app_secret or defaults.app_secret,
            )
        )
        tokens = self._state.tokens
        if refresh_token:
            tokens.add_refresh_token(refresh_token, self.app_id)
            self._refresh_token = refresh_token
        else:
            self._refresh_token = tokens.issue_refresh_token(self.app_id)
        self._tls: TestCertificateAuthority | None = None
        self._threads: list[ServerThread] = []
        self._identity_port = 0
        self._ca_bundle_path = ""

    # --- lifecycle ---

    def start(self) -> Sandbox:
        """Bind both servers on free ports and start serving (idempotent)."""
        if self._threads:
            return self
        self._state.stopping.clear()
        self._tls = TestCertificateAuthority()
        https = SandboxHTTPServer(Dispatcher(self._state, tls_routes()), self._tls.server_context())
        identity = SandboxHTTPServer(Dispatcher(self._state, identity_routes()))
        self._state.base_url = f"https://127.0.0.1:{https.port}"
        self._state.key_vault_resource = challenge_resource(https.port)
        self._identity_port = identity.port
        self._ca_bundle_path = self._tls.ca_bundle_path
        self._threads = [ServerThread(https, "sandbox-https"), ServerThread(identity, "sandbox-identity")]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections, wake hanging handlers, delete the CA file."""
        self._state.stopping.set()
        for thread in self._threads:
            thread.stop()
        self._threads = []
        if self._tls is not None:
            self._tls.cleanup()
            self._tls = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._threads)

    # --- where things are ---

    def _require_started(self) -> None:
        """Addresses exist once started (and stay readable after stop, for messages and asserts)."""
        if not self._state.base_url:
            raise RuntimeError("the sandbox was never started: call start() or use it as a context manager")

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: Entra authority host, Key Vault URL and Partner Center endpoint."""
        self._require_started()
        return self._state.base_url

    @property
    def authority(self) -> str:
        """The MSAL authority: ``{base_url}/{tenant_id}`` (use ``instance_discovery=False``)."""
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def identity_endpoint(self) -> str:
        """``http://127.0.0.1:PORT/msi/token``: the App Service managed identity endpoint."""
        self._require_started()
        return f"http://127.0.0.1:{self._identity_port}/msi/token"

    @property
    def identity_header(self) -> str:
        """The secret the managed identity endpoint requires in ``X-IDENTITY-HEADER``."""
        return self._state.identity_header

    @property
    def ca_bundle_path(self) -> str:
        """PEM file of the sandbox CA, for ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``."""
        self._require_started()
        return self._ca_bundle_path

    @property
    def key_vault_resource(self) -> str:
        """The audience Key Vault's challenge names (``https://0.0.1:PORT``, see key_vault.py)."""
        self._require_started()
        return self._state.key_vault_resource

    def env(self) -> dict[str, str]:
        """The app settings that point the real SDKs at this sandbox."""
        return {
            "KEY_VAULT_URL": self.base_url,
            "PARTNER_TENANT_ID": self.tenant_id,
            "PARTNER_CENTER_ENDPOINT": self.base_url,
            "AZURE_AUTHORITY_HOST": self.base_url,
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": self.ca_bundle_path,
            "SSL_CERT_FILE": self.ca_bundle_path,
        }

    def caller_env(self, audience: str = DEFAULT_AUDIENCE) -> dict[str, str]:
        """The settings that make the app accept this sandbox's caller tokens (``CALLER_AUTH=entra``)."""
        return {"CALLER_AUTH": "entra", "CALLER_AUDIENCES": audience, "CALLER_TENANT_IDS": self.tenant_id}

    # --- the app's own callers ---

    def caller_token(self, request: CallerTokenRequest | None = None, **fields: Any) -> str:
        """A signed caller token, as Entra issues it for the API (see ``CallerTokenRequest``:
        kind, roles, audience, tenant, version, expiry ...), signed with the current key."""
        wanted = request or CallerTokenRequest(**fields)
        claims = caller_claims(wanted, self.base_url, self.tenant_id)
        return self.sign_caller_claims(claims)

    def sign_caller_claims(self, claims: dict[str, Any]) -> str:
        """Sign exactly these claims with the current published key (for hand-made bad tokens)."""
        token = sign(claims, self._state.signing_keys.current)
        self._state.caller_tokens.append(token)
        return token

    def assign_caller_roles(self, client_id: str, roles: tuple[str, ...] | list[str]) -> None:
        """App roles of the API assigned to an application: what its client-credentials token for
        ``api://csp-upgrades/.default`` (a caller audience) carries."""
        self._state.caller_app_roles[client_id.lower()] = tuple(roles)

    def rotate_signing_keys(self, *, retire_old: bool = False) -> str:
        """Entra's key rollover: a new key is published and signs from now on; its kid."""
        return self._state.signing_keys.rotate(retire_old=retire_old)

    @property
    def signing_key_ids(self) -> list[str]:
        return [key["kid"] for key in self._state.signing_keys.jwks()["keys"]]

    @property
    def current_signing_key(self) -> Any:
        """The current ``SigningKey`` (kid + RSA private key), to forge tokens in tests."""
        return self._state.signing_keys.current

    # --- identities and credentials ---

    @property
    def tenant_id(self) -> str:
        return self._state.identities.tenant_id

    @property
    def app_id(self) -> str:
        return self._state.identities.app_id

    @property
    def app_secret(self) -> str:
        return self._state.identities.app_secret

    @property
    def refresh_token(self) -> str:
        """The refresh token obtained at (simulated) consent time."""
        return self._refresh_token

    @property
    def user_object_id(self) -> str:
        return self._state.identities.user_object_id

    @property
    def username(self) -> str:
        return self._state.identities.username

    @property
    def managed_identity_client_id(self) -> str:
        return self._state.identities.managed_identity_client_id

    @property
    def issued_refresh_tokens(self) -> list[str]:
        """Every refresh token ever issued (the consent-time one first), including revoked ones."""
        return self._state.tokens.refresh_tokens()

    def revoke_refresh_tokens(self, *, keep_latest_consent: bool = False) -> None:
        """All refresh tokens become invalid: the next refresh grant gets ``invalid_grant``; with
        ``keep_latest_consent``, all but the latest consent's chain (the token ``reconsent()``
        issued and those rotated from it): the old consent is withdrawn after a re-consent."""
        self._state.tokens.revoke_refresh_tokens(self._refresh_token if keep_latest_consent else None)

    def refresh_token_is_valid(self, token: str | None) -> bool:
        """Whether Entra would redeem this refresh token (issued here and not revoked)."""
        return self._state.tokens.is_valid_refresh_token(token)

    def reconsent(self) -> str:
        """Simulate an admin re-consenting: a new valid refresh token (also stored in the vault if seeded)."""
        self._refresh_token = self._state.tokens.issue_refresh_token(self.app_id)
        if self._state.secrets.get(REFRESH_TOKEN_SECRET) is not None:
            self._state.secrets.set(REFRESH_TOKEN_SECRET, self._refresh_token)
        return self._refresh_token

    def expire_access_tokens(self, *, delegated_only: bool = False) -> None:
        """Every access token issued so far is now expired (Entra, managed identity alike), or
        with ``delegated_only`` only the App+User ones Entra issued."""
        self._state.tokens.expire_access_tokens(delegated_only=delegated_only)

    @property
    def issued_access_tokens(self) -> list[str]:
        """Every access token ever issued (Entra, managed identity, callers), for leak scans."""
        return [*self._state.tokens.access_tokens(), *self._state.caller_tokens]

    def seed_partner_credentials(self) -> None:
        """Store the app id, app secret and refresh token in the vault under the app's secret names."""
        self._state.secrets.set(APP_ID_SECRET, self.app_id)
        self._state.secrets.set(APP_SECRET_SECRET, self.app_secret)
        self._state.secrets.set(REFRESH_TOKEN_SECRET, self._refresh_token)

    @property
    def secrets(self) -> Mapping[str, str]:
        """Read-only snapshot of ``{secret name: current value}``."""
        return self._state.secrets.current_values()

    def set_secret(self, name: str, value: str) -> None:
        self._state.secrets.set(name, value)

    def secret_versions(self, name: str) -> list[str]:
        """Values of every version of a secret, oldest first."""
        return [version.value for version in self._state.secrets.versions(name)]

    # --- observation ---

    def calls(self, service: str | None = None, operation: str | None = None) -> list[RecordedCall]:
        """Recorded calls, oldest first; ``service`` in entra, managed_identity, key_vault, partner_center."""
        return self._state.calls.select(service, operation)

    def reset_calls(self) -> None:
        self._state.calls.clear()

    def submissions(self, customer_id: str) -> int:
        """How many upgrades were actually created for the customer (replays not counted)."""
        return self._state.upgrades.submissions(customer_id)

    def reset_upgrades(self) -> None:
        """Forget every upgrade, submission count and MS-RequestId."""
        self._state.upgrades.clear()

    def upgrade_states(self, customer_id: str) -> list[str]:
        """States of the customer's upgrades ("in_progress", "complete", "failed"), oldest first."""
        upgrades = sorted(self._state.upgrades.all_for(customer_id), key=lambda upgrade: upgrade.created_at)
        return [upgrade.state for upgrade in upgrades]

    def land_late(self) -> int:
        """Process the requests ``land_late`` faults left unanswered (a create that took effect
        after its caller gave up); returns how many landed. They are not recorded again."""
        return self._state.land_late()

    @property
    def late_waiting(self) -> int:
        """How many ``land_late`` requests are parked, not landed yet."""
        return self._state.parked()

    def forget_late(self) -> None:
        """Drop parked ``land_late`` requests without processing them."""
        self._state.forget_parked()

    def upgrade_ids(self, customer_id: str) -> list[str]:
        """Ids of the customer's upgrades, oldest first."""
        upgrades = sorted(self._state.upgrades.all_for(customer_id), key=lambda upgrade: upgrade.created_at)
        return [upgrade.id for upgrade in upgrades]

    # --- behaviour ---

    @property
    def faults(self) -> Faults:
        return self._state.faults

    @property
    def customers(self) -> Customers:
        return self._state.customers

    def set_throttle(self, per_minute: float | None, *, window_seconds: float = 60.0) -> None:
        """Partner Center's throttle: above ``per_minute`` calls (all operations, this one partner,
        counted over a sliding ``window_seconds``) answer 429 + Retry-After; None switches it off
        and forgets the calls counted (a new rate on a running throttle keeps counting them)."""
        from .throttle import ThrottleSetting

        if per_minute is None:
            self._state.throttle.clear()
        else:
            self._state.throttle.configure(ThrottleSetting(per_minute, window_seconds))

    @property
    def throttle(self) -> ThrottleSetting | None:
        """The throttle's setting (None: off, the default)."""
        return self._state.throttle.setting

    @property
    def throttled_calls(self) -> int:
        """How many Partner Center calls the throttle has answered with 429."""
        return self._state.throttle.refused

    def seed_customers(self, count: int, *, random_seed: int | None = None) -> SeedSummary:
        """``count`` more customers on the partner's list (``GET /v1/customers``), a realistic mix:
        some ineligible with Partner Center's reasons, some already upgraded or being upgraded."""
        from .customer_seed import seed_customers

        return seed_customers(self._state.customers, count, random_seed)

    def listed_customers(self) -> list[CustomerProfile]:
        """The partner's customer list, in the order ``GET /v1/customers`` pages through it."""
        return self._state.customers.directory.all()

    @property
    def latency(self) -> float:
        """Seconds added before every Partner Center response is processed."""
        return self._state.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._state.latency = float(seconds)

    @property
    def access_token_lifetime(self) -> int:
        return self._state.access_token_lifetime

    @access_token_lifetime.setter
    def access_token_lifetime(self, seconds: int) -> None:
        self._state.access_token_lifetime = int(seconds)

    @property
    def managed_identity_token_lifetime(self) -> int:
        return self._state.managed_identity_token_lifetime

    @managed_identity_token_lifetime.setter
    def managed_identity_token_lifetime(self, seconds: int) -> None:
        self._state.managed_identity_token_lifetime = int(seconds)

    @property
    def rotate_refresh_token(self) -> bool:
        """When True each refresh grant returns a new refresh token (the old one stays valid)."""
        return self._state.rotate_refresh_token

    @rotate_refresh_token.setter
    def rotate_refresh_token(self, value: bool) -> None:
        self._state.rotate_refresh_token = bool(value)

    @property
    def location_style(self) -> str:
        """``"relative"`` (``productUpgrades/{id}``, as documented) or ``"absolute"``."""
        return self._state.location_style

    @location_style.setter
    def location_style(self, value: str) -> None:
        if value not in ("relative", "absolute"):
            raise ValueError('location_style must be "relative" or "absolute"')
        self._state.location_style = value

    def wait_for_calls(
        self, count: int, service: str | None = None, operation: str | None = None, timeout: float = 5.0
    ) -> list[RecordedCall]:
        """Wait until at least ``count`` matching calls were recorded (for calls whose answer was lost)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.calls(service, operation)
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)
