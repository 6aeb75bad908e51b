"""All app settings, read and validated in one place.

The names below are the public contract: `local.settings.example.json`, the README's settings
table and the Bicep app settings all use them (a test keeps the four in agreement). Every problem
is reported at once, naming the setting, so an operator fixes a deployment in one pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .identifiers import is_guid


@dataclass(frozen=True)
class Setting:
    """One setting: its name, default (None = required) and what it is for (README text)."""

    name: str
    default: str | None
    description: str


KEY_VAULT_URL = Setting("KEY_VAULT_URL", None, "Vault holding the partner app's credentials.")
PARTNER_TENANT_ID = Setting("PARTNER_TENANT_ID", None, "The partner's Entra tenant (GUID or domain).")
APP_ID_SECRET_NAME = Setting(
    "APP_ID_SECRET_NAME", "partner-center-app-id", "Key Vault secret holding the app (client) id."
)
APP_SECRET_SECRET_NAME = Setting(
    "APP_SECRET_SECRET_NAME", "partner-center-app-secret", "Key Vault secret holding the client secret."
)
REFRESH_TOKEN_SECRET_NAME = Setting(
    "REFRESH_TOKEN_SECRET_NAME",
    "partner-center-refresh-token",
    "Key Vault secret holding the App+User refresh token; rotated tokens are written back here.",
)
PARTNER_CENTER_ENDPOINT = Setting(
    "PARTNER_CENTER_ENDPOINT", "https://api.partnercenter.microsoft.com", "Partner Center REST base URL."
)
PARTNER_CENTER_SCOPE = Setting(
    "PARTNER_CENTER_SCOPE",
    "https://api.partnercenter.microsoft.com/user_impersonation",
    "OAuth scope of the App+User token.",
)
AZURE_AUTHORITY_HOST = Setting(
    "AZURE_AUTHORITY_HOST",
    "https://login.microsoftonline.com",
    "Entra authority host. Not a known Microsoft cloud host: MSAL instance discovery is turned off.",
)
SECRET_CACHE_SECONDS = Setting(
    "SECRET_CACHE_SECONDS", "300", "How long a Key Vault secret value is reused in-process (0-86400)."
)
PARTNER_CENTER_TIMEOUT_SECONDS = Setting(
    "PARTNER_CENTER_TIMEOUT_SECONDS", "20", "Read timeout of one Partner Center call (1-30)."
)
PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS = Setting(
    "PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS",
    "10",
    "Longest Retry-After waited inline (0-30); longer ones are answered 503 with Retry-After.",
)

ALL_SETTINGS: tuple[Setting, ...] = (
    KEY_VAULT_URL,
    PARTNER_TENANT_ID,
    APP_ID_SECRET_NAME,
    APP_SECRET_SECRET_NAME,
    REFRESH_TOKEN_SECRET_NAME,
    PARTNER_CENTER_ENDPOINT,
    PARTNER_CENTER_SCOPE,
    AZURE_AUTHORITY_HOST,
    SECRET_CACHE_SECONDS,
    PARTNER_CENTER_TIMEOUT_SECONDS,
    PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS,
)

_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$", re.ASCII)
_TENANT_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$", re.ASCII)


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with `load_settings`."""

    key_vault_url: str
    partner_tenant_id: str
    app_id_secret_name: str
    app_secret_secret_name: str
    refresh_token_secret_name: str
    partner_center_endpoint: str
    partner_center_scope: str
    authority_host: str
    secret_cache_seconds: int
    partner_center_timeout_seconds: int
    partner_center_max_retry_after_seconds: int

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.partner_tenant_id}"

    @property
    def authority_is_known_microsoft_cloud(self) -> bool:
        """MSAL instance discovery only makes sense against Microsoft's own login hosts."""
        from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS  # imported here: msal is slow to import

        return (urlsplit(self.authority_host).hostname or "") in WELL_KNOWN_AUTHORITY_HOSTS


class _Reader:
    """Reads settings from a mapping and collects every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[str] = []

    def raw(self, setting: Setting) -> str:
        value = (self._environ.get(setting.name) or "").strip()
        if value:
            return value
        if setting.default is None:
            self.problems.append(f"{setting.name} is required ({setting.description})")
            return ""
        return setting.default

    def https_url(self, setting: Setting) -> str:
        value = self.raw(setting).rstrip("/")
        if value:
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
                self.problems.append(f"{setting.name} must be an https:// URL without query, got {value!r}")
        return value

    def integer(self, setting: Setting, low: int, high: int) -> int:
        value = self.raw(setting)
        try:
            number = int(value)
        except ValueError:
            self.problems.append(f"{setting.name} must be a whole number, got {value!r}")
            return int(setting.default or 0)
        if not low <= number <= high:
            self.problems.append(f"{setting.name} must be between {low} and {high}, got {number}")
        return number

    def secret_name(self, setting: Setting) -> str:
        value = self.raw(setting)
        if not _SECRET_NAME.match(value):
            self.problems.append(
                f"{setting.name} must be a Key Vault secret name (1-127 letters, digits, hyphens), got {value!r}"
            )
        return value

    def tenant(self, setting: Setting) -> str:
        value = self.raw(setting)
        if value and not (is_guid(value) or _TENANT_DOMAIN.match(value)):
            self.problems.append(f"{setting.name} must be a tenant GUID or domain, got {value!r}")
        return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise one ConfigurationError listing all problems."""
    read = _Reader(os.environ if environ is None else environ)
    settings = Settings(
        key_vault_url=read.https_url(KEY_VAULT_URL),
        partner_tenant_id=read.tenant(PARTNER_TENANT_ID),
        app_id_secret_name=read.secret_name(APP_ID_SECRET_NAME),
        app_secret_secret_name=read.secret_name(APP_SECRET_SECRET_NAME),
        refresh_token_secret_name=read.secret_name(REFRESH_TOKEN_SECRET_NAME),
        partner_center_endpoint=read.https_url(PARTNER_CENTER_ENDPOINT),
        partner_center_scope=read.raw(PARTNER_CENTER_SCOPE),
        authority_host=read.https_url(AZURE_AUTHORITY_HOST),
        secret_cache_seconds=read.integer(SECRET_CACHE_SECONDS, 0, 86400),
        partner_center_timeout_seconds=read.integer(PARTNER_CENTER_TIMEOUT_SECONDS, 1, 30),
        partner_center_max_retry_after_seconds=read.integer(PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS, 0, 30),
    )
    if read.problems:
        raise ConfigurationError("Invalid app settings: " + "; ".join(read.problems))
    return settings
