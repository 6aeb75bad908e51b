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

from shared.errors import CredentialsUnavailable

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
        self._lock = threading.Lock()

    def get(self, name: str, *, fresh: bool = False) -> str:
        """The secret's current value; from the cache unless it is older than the TTL or `fresh`."""
        with self._lock:  # one reader at a time: concurrent cold requests make one Key Vault call
            cached = self._cache.get(name)
            if cached and not fresh and self._clock() - cached.read_at < self._ttl:
                return cached.value
            value = self._read(name)
            self._cache[name] = _Cached(value, self._clock())
            return value

    def set(self, name: str, value: str) -> None:
        """Write a new version of the secret and use it from now on."""
        from azure.core.exceptions import AzureError

        try:
            self._client.set_secret(name, value, content_type="refresh-token")
        except AzureError as error:
            raise CredentialsUnavailable(f"Could not write Key Vault secret '{name}': {_describe(error)}") from None
        with self._lock:
            self._cache[name] = _Cached(value, self._clock())
        log.info("key_vault.secret_written secret_name=%s", name)

    def _read(self, name: str) -> str:
        from azure.core.exceptions import AzureError

        try:
            value = self._client.get_secret(name).value
        except AzureError as error:
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

    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    return SecretStore(SecretClient(vault_url=vault_url, credential=credential), ttl_seconds, clock)
