"""The partner app's credentials in Key Vault, cached in-process for a bounded time.

One Key Vault read per secret per TTL keeps a warm instance off Key Vault's throttling limits
and off the request's critical path. `get(name, fresh=True)` bypasses the cache: the token
provider uses it when a refresh token is refused, so an operator's re-consent (a new secret
version) is picked up at once, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.deadlines import (
    IDENTITY_SECONDS,
    KEY_VAULT_SECONDS,
    azure_client_options,
    azure_transport,
    expired,
    remaining,
)
from shared.errors import CredentialsUnavailable, DeadlineExceeded

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient

log = logging.getLogger(__name__)


@dataclass
class _Cached:
    value: str
    read_at: float


class SecretStore:
    """Reads and writes named secrets through a `SecretClient`, caching reads for `ttl_seconds`."""

    def __init__(
        self,
        client: SecretClient,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._fetching: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str, *, fresh: bool = False) -> str:
        """The secret's current value; from the cache unless it is older than the TTL or `fresh`.

        A cache hit never waits on the network: `_lock` only guards the dictionaries, and the Key
        Vault read happens under that secret's own fetch lock (one read in flight per secret;
        concurrent cold callers of the same secret wait for it and share its value)."""
        requested_at = self._clock()
        if not fresh:
            value = self._cached(name, requested_at - self._ttl)
            if value is not None:
                return value
        fetch = self._fetch_lock(name)
        left = remaining()
        if not fetch.acquire(timeout=-1 if left is None else max(0.0, left)):
            raise DeadlineExceeded(f"Key Vault secret '{name}' is still being read")
        try:
            # Read by another caller while we waited (for `fresh`: a read that began after we asked)?
            value = (
                self._cached(name, requested_at, after=True) if fresh else self._cached(name, requested_at - self._ttl)
            )
            if value is not None:
                return value
            read_at = self._clock()
            value = self._read(name)
            with self._lock:
                self._cache[name] = _Cached(value, read_at)
            return value
        finally:
            fetch.release()

    def _cached(self, name: str, not_before: float, *, after: bool = False) -> str | None:
        with self._lock:
            cached = self._cache.get(name)
        if cached is None or (cached.read_at <= not_before if after else cached.read_at < not_before):
            return None
        if self._clock() - cached.read_at < self._ttl:
            return cached.value
        return None

    def _fetch_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(name, threading.Lock())

    def set(self, name: str, value: str) -> None:
        """Write a new version of the secret and use it from now on."""
        from azure.core.exceptions import AzureError

        try:
            self._client.set_secret(name, value, content_type="refresh-token")
        except AzureError as error:
            if expired():
                raise DeadlineExceeded(f"Key Vault did not answer within the deadline ('{name}')") from None
            raise CredentialsUnavailable(f"Could not write Key Vault secret '{name}': {_describe(error)}") from None
        with self._lock:
            self._cache[name] = _Cached(value, self._clock())
        log.info("key_vault.secret_written secret_name=%s", name)

    def _read(self, name: str) -> str:
        from azure.core.exceptions import AzureError

        try:
            value = self._client.get_secret(name).value
        except AzureError as error:
            if expired():
                raise DeadlineExceeded(f"Key Vault did not answer within the deadline ('{name}')") from None
            raise CredentialsUnavailable(f"Could not read Key Vault secret '{name}': {_describe(error)}") from None
        if not value:
            raise CredentialsUnavailable(f"Key Vault secret '{name}' is empty")
        log.info("key_vault.secret_read secret_name=%s", name)
        return value


def _describe(error: Exception) -> str:
    """A safe, actionable one-liner for a Key Vault failure (no URLs with tokens, no bodies)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    if isinstance(error, ResourceNotFoundError):
        return "the secret does not exist (check the secret name settings and the vault)"
    if isinstance(error, ClientAuthenticationError):
        return "the app's managed identity could not authenticate to Key Vault"
    if isinstance(error, HttpResponseError) and error.status_code == 403:
        return "the app's identity lacks Key Vault permission (needs 'Key Vault Secrets Officer')"
    if isinstance(error, ServiceRequestError):
        return "Key Vault is unreachable"
    status = getattr(error, "status_code", None)
    return f"Key Vault answered HTTP {status}" if status else type(error).__name__


def build_secret_store(vault_url: str, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> SecretStore:
    """A store backed by the real `SecretClient` authenticated with `DefaultAzureCredential`.

    In Azure that resolves to the function app's managed identity (`AZURE_CLIENT_ID` selects a
    user-assigned one); locally, to `az login` or environment credentials.
    """
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    # Explicit timeouts and retries (azure-core's defaults: 300 s reads, 3 retries), each call held
    # to its cap and the answer's deadline (`shared.deadlines`).
    credential = DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        transport=azure_transport(IDENTITY_SECONDS),
        **azure_client_options(IDENTITY_SECONDS),
    )
    client = SecretClient(
        vault_url=vault_url,
        credential=credential,
        transport=azure_transport(KEY_VAULT_SECONDS, endpoint=vault_url),
        **azure_client_options(KEY_VAULT_SECONDS),
    )
    return SecretStore(client, ttl_seconds, clock)
