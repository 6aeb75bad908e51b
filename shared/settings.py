"""All app settings, read and validated in one place.

The names below are the public contract: `local.settings.example.json`, the README's settings
table and the Bicep app settings all use them (a test keeps the four in agreement). Every problem
is reported at once, naming the setting, so an operator fixes a deployment in one pass.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.deadlines import LEASE_MARGIN_SECONDS, claim_chain_seconds
from shared.errors import ConfigurationError
from shared.identifiers import is_guid


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
    "PARTNER_CENTER_TIMEOUT_SECONDS", "15", "Read timeout of one Partner Center call (1-30)."
)
HTTP_DEADLINE_SECONDS = Setting(
    "HTTP_DEADLINE_SECONDS",
    "100",
    "Every HTTP function answers within this (5-220; Azure's front end cuts at 230 s, Power Automate "
    "waits 120 s); on time-out it answers with the request's stored state (202 + Retry-After).",
)
PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS = Setting(
    "PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS",
    "5",
    "Longest Retry-After waited inline (0-20); longer ones leave the request pending (503 for queries).",
)

AZURE_WEBJOBS_STORAGE = Setting(
    "AzureWebJobsStorage",
    None,
    "Storage for the host and the request table: a connection string (UseDevelopmentStorage=true for "
    "Azurite), or identity-based AzureWebJobsStorage__accountName / __tableServiceUri (+ __clientId).",
)
UPGRADE_REQUESTS_TABLE = Setting("UPGRADE_REQUESTS_TABLE", "productupgraderequests", "Table of upgrade requests.")
PENDING_SCHEDULE = Setting(
    "PENDING_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the timer that processes pending requests."
)
PENDING_CONCURRENCY = Setting("PENDING_CONCURRENCY", "4", "Requests the timer works on at once (1-32).")
PENDING_MAX_ATTEMPTS = Setting(
    "PENDING_MAX_ATTEMPTS", "8", "Submission attempts before a request is failed with its last error (1-50)."
)
PENDING_RUN_SECONDS = Setting(
    "PENDING_RUN_SECONDS", "240", "A timer run stops claiming new work after this long (10-540)."
)
REQUEST_LEASE_SECONDS = Setting(
    "REQUEST_LEASE_SECONDS",
    "300",
    "Claim lease; a crashed worker's request is picked up after it (60-3600; at least the longest call "
    "chain of one claim, checked at startup).",
)
STATUS_POLL_SECONDS = Setting(
    "STATUS_POLL_SECONDS", "120", "Interval between status polls of a submitted upgrade (10-86400)."
)
REQUEST_RETENTION_DAYS = Setting(
    "REQUEST_RETENTION_DAYS",
    "400",
    "Final requests older than this many days are deleted by the timer, in bounded batches (1-3650).",
)
CAMPAIGN_MAX_MEMBERS = Setting(
    "CAMPAIGN_MAX_MEMBERS", "50000", "Most customers one campaign may list (1-99000; more is a 400)."
)
CAMPAIGN_DEFAULT_PER_HOUR = Setting(
    "CAMPAIGN_DEFAULT_PER_HOUR",
    "600",
    "A campaign's pace when it names none: Partner Center calls per hour, spread evenly (1-36000).",
)

CALLBACK_SIGNING_SECRET_NAME = Setting(
    "CALLBACK_SIGNING_SECRET_NAME",
    "webhook-signing-secret",
    "Key Vault secret (whsec_...) that signs completion callbacks (Standard Webhooks).",
)
CALLBACK_ALLOW_PRIVATE_NETWORKS = Setting(
    "CALLBACK_ALLOW_PRIVATE_NETWORKS",
    "false",
    "Local development only: allow http and private/loopback callback URLs.",
)
CALLBACK_MAX_ATTEMPTS = Setting("CALLBACK_MAX_ATTEMPTS", "8", "Callback deliveries tried before giving up (1-20).")
INBOUND_SIGNATURES_REQUIRED = Setting(
    "INBOUND_SIGNATURES_REQUIRED",
    "false",
    "Require Standard Webhooks signatures on POST /api/product-upgrades.",
)
INBOUND_SIGNING_SECRET_NAME = Setting(
    "INBOUND_SIGNING_SECRET_NAME",
    "inbound-webhook-secret",
    "Key Vault secret (whsec_...) that inbound webhook senders sign with.",
)

CALLER_AUTH = Setting(
    "CALLER_AUTH",
    None,
    "How callers prove who they are: `entra` (bearer token, what infra deploys) or `function-key`; "
    "missing or unknown: every route answers only the configuration problem.",
)
CALLER_AUDIENCES = Setting(
    "CALLER_AUDIENCES",
    None,
    "With `entra` (only then required): comma-separated accepted token audiences: the API's "
    "Application ID URI (e.g. `api://csp-upgrades`) and/or its client id.",
)
CALLER_TENANT_IDS = Setting(
    "CALLER_TENANT_IDS",
    "",
    "With `entra`: comma-separated tenant GUIDs whose tokens are accepted (empty: `PARTNER_TENANT_ID`); "
    "the first is the API registration's own tenant, the only one whose tokens may carry an Application ID URI "
    "audience (others must carry the client id).",
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
    HTTP_DEADLINE_SECONDS,
    AZURE_WEBJOBS_STORAGE,
    UPGRADE_REQUESTS_TABLE,
    PENDING_SCHEDULE,
    PENDING_CONCURRENCY,
    PENDING_MAX_ATTEMPTS,
    PENDING_RUN_SECONDS,
    REQUEST_LEASE_SECONDS,
    STATUS_POLL_SECONDS,
    REQUEST_RETENTION_DAYS,
    CAMPAIGN_MAX_MEMBERS,
    CAMPAIGN_DEFAULT_PER_HOUR,
    CALLBACK_SIGNING_SECRET_NAME,
    CALLBACK_ALLOW_PRIVATE_NETWORKS,
    CALLBACK_MAX_ATTEMPTS,
    INBOUND_SIGNATURES_REQUIRED,
    INBOUND_SIGNING_SECRET_NAME,
    CALLER_AUTH,
    CALLER_AUDIENCES,
    CALLER_TENANT_IDS,
)

_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$", re.ASCII)
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$", re.ASCII)
_TENANT_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$", re.ASCII)


@dataclass(frozen=True)
class StorageTarget:
    """Where the request table lives: a connection string, or an endpoint + managed identity."""

    connection_string: str | None
    table_endpoint: str | None
    client_id: str | None

    def __repr__(self) -> str:  # a connection string holds an account key: never print it
        hidden = "***" if self.connection_string else None
        return f"StorageTarget(table_endpoint={self.table_endpoint!r}, connection_string={hidden})"


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
    http_deadline_seconds: int
    upgrade_requests_table: str
    pending_concurrency: int
    pending_max_attempts: int
    pending_run_seconds: int
    request_lease_seconds: int
    status_poll_seconds: int
    storage: StorageTarget
    callback_signing_secret_name: str
    callback_allow_private_networks: bool
    callback_max_attempts: int
    inbound_signatures_required: bool
    inbound_signing_secret_name: str
    request_retention_days: int = 400
    campaign_max_members: int = 50000
    campaign_default_per_hour: int = 600

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

    def boolean(self, setting: Setting) -> bool:
        value = self.raw(setting).lower()
        if value not in ("true", "false"):
            self.problems.append(f"{setting.name} must be true or false, got {value!r}")
        return value == "true"

    def secret_name(self, setting: Setting) -> str:
        value = self.raw(setting)
        if not _SECRET_NAME.match(value):
            self.problems.append(
                f"{setting.name} must be a Key Vault secret name (1-127 letters, digits, hyphens), got {value!r}"
            )
        return value

    def table_name(self, setting: Setting) -> str:
        value = self.raw(setting)
        if not _TABLE_NAME.match(value):
            self.problems.append(
                f"{setting.name} must be a table name (3-63 letters/digits, letter first), got {value!r}"
            )
        return value

    def storage(self, setting: Setting) -> StorageTarget:
        """The Functions host's own storage setting, in any of its documented forms."""

        def get(suffix: str) -> str:
            return (self._environ.get(setting.name + suffix) or "").strip()

        connection_string, endpoint, account = get(""), get("__tableServiceUri"), get("__accountName")
        if not endpoint and account:
            endpoint = f"https://{account}.table.core.windows.net"
        if not connection_string and not endpoint:
            self.problems.append(f"{setting.name} is required ({setting.description})")
        elif not connection_string and not endpoint.startswith("https://"):
            self.problems.append(f"{setting.name}__tableServiceUri must be an https:// URL, got {endpoint!r}")
        client_id = get("__clientId") or (self._environ.get("AZURE_CLIENT_ID") or "").strip()
        return StorageTarget(connection_string or None, None if connection_string else endpoint, client_id or None)

    def tenant(self, setting: Setting) -> str:
        value = self.raw(setting)
        if value and not (is_guid(value) or _TENANT_DOMAIN.match(value)):
            self.problems.append(f"{setting.name} must be a tenant GUID or domain, got {value!r}")
        return value


PENDING_SCHEDULE_BINDING = f"%{PENDING_SCHEDULE.name}%"
"""What `function_app.py` gives the timer: the host resolves it from the app settings when it
loads the timer, so a bad value only affects the timer, never the indexing of the HTTP routes."""

_NCRONTAB_FIELD = re.compile(r"^[0-9A-Za-z*/,?-]+$", re.ASCII)


def pending_schedule(environ: Mapping[str, str] | None = None) -> str:
    """The timer's NCRONTAB schedule (the default when unset, as the local runner resolves it);
    `ConfigurationError` if it is not a 6-field expression."""
    value = (environ_or(environ).get(PENDING_SCHEDULE.name) or "").strip()
    schedule = value or str(PENDING_SCHEDULE.default)
    problem = _schedule_problem(schedule)
    if problem:
        raise ConfigurationError(problem)
    return schedule


def pending_schedule_problem(environ: Mapping[str, str]) -> str | None:
    value = (environ.get(PENDING_SCHEDULE.name) or "").strip()
    return _schedule_problem(value) if value else None


def _schedule_problem(schedule: str) -> str | None:
    fields = schedule.split()
    if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(field) for field in fields):
        return f"{PENDING_SCHEDULE.name} must be a 6-field NCRONTAB expression (seconds first), got {schedule!r}"
    return None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise one ConfigurationError listing all problems."""
    settings, problems = read_settings(environ)
    if problems:
        raise ConfigurationError("Invalid app settings: " + "; ".join(problems))
    return settings


def read_settings(environ: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """The settings as read (defaults where invalid) and the list of problems found."""
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
        partner_center_max_retry_after_seconds=read.integer(PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS, 0, 20),
        http_deadline_seconds=read.integer(HTTP_DEADLINE_SECONDS, 5, 220),
        upgrade_requests_table=read.table_name(UPGRADE_REQUESTS_TABLE),
        pending_concurrency=read.integer(PENDING_CONCURRENCY, 1, 32),
        pending_max_attempts=read.integer(PENDING_MAX_ATTEMPTS, 1, 50),
        pending_run_seconds=read.integer(PENDING_RUN_SECONDS, 10, 540),
        request_lease_seconds=read.integer(REQUEST_LEASE_SECONDS, 60, 3600),
        status_poll_seconds=read.integer(STATUS_POLL_SECONDS, 10, 86400),
        storage=read.storage(AZURE_WEBJOBS_STORAGE),
        callback_signing_secret_name=read.secret_name(CALLBACK_SIGNING_SECRET_NAME),
        callback_allow_private_networks=read.boolean(CALLBACK_ALLOW_PRIVATE_NETWORKS),
        callback_max_attempts=read.integer(CALLBACK_MAX_ATTEMPTS, 1, 20),
        inbound_signatures_required=read.boolean(INBOUND_SIGNATURES_REQUIRED),
        inbound_signing_secret_name=read.secret_name(INBOUND_SIGNING_SECRET_NAME),
        request_retention_days=read.integer(REQUEST_RETENTION_DAYS, 1, 3650),
        campaign_max_members=read.integer(CAMPAIGN_MAX_MEMBERS, 1, 99000),
        campaign_default_per_hour=read.integer(CAMPAIGN_DEFAULT_PER_HOUR, 1, 36000),
    )
    if not read.problems:
        read.problems.extend(lease_problems(settings))
    return settings, read.problems


def settings_report(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem with the app settings, one line each naming the setting (empty: all valid),
    the caller settings (CALLER_AUTH...) and the timer's schedule included, which `load_settings`
    leaves out: a bad schedule must only stop the timer, never the HTTP routes. The local runner
    checks this at start-up."""
    problems = read_settings(environ)[1]
    problems += [p for p in read_caller_settings(environ)[1] if p not in problems]  # what every route checks first
    schedule_problem = pending_schedule_problem(environ_or(environ))
    if schedule_problem:
        problems.append(schedule_problem)
    return problems


def environ_or(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def lease_problems(settings: Settings) -> list[str]:
    """A lease must outlast anything its holder may still be doing: an HTTP answer (it holds the
    claim of the request it submits inline) and the longest call chain of one claim."""
    chain = claim_chain_seconds(
        settings.partner_center_timeout_seconds, settings.partner_center_max_retry_after_seconds
    )
    needed = math.ceil(max(chain, settings.http_deadline_seconds) + LEASE_MARGIN_SECONDS)
    if settings.request_lease_seconds >= needed:
        return []
    return [
        f"{REQUEST_LEASE_SECONDS.name} must be at least {needed} with these settings "
        f"(the longest call chain of one claim is {chain:.0f} s, {HTTP_DEADLINE_SECONDS.name} is "
        f"{settings.http_deadline_seconds}, plus a {LEASE_MARGIN_SECONDS} s margin), "
        f"got {settings.request_lease_seconds}"
    ]


ENTRA = "entra"
FUNCTION_KEY = "function-key"
CALLER_AUTH_MODES = (ENTRA, FUNCTION_KEY)


def caller_auth_mode(environ: Mapping[str, str] | None = None) -> str | None:
    """`entra`, `function-key`, or None when CALLER_AUTH is missing or unknown. Read when
    `function_app` is indexed (it fixes the host's auth level), so it never raises."""
    try:
        value = ((os.environ if environ is None else environ).get(CALLER_AUTH.name) or "").strip().lower()
    except Exception:  # an unreadable environment fails closed, never the import
        return None
    return value if value in CALLER_AUTH_MODES else None


@dataclass(frozen=True)
class CallerSettings:
    """How callers are authenticated; build with `load_caller_settings`."""

    mode: str
    audiences: tuple[str, ...]
    tenant_ids: tuple[str, ...]
    authority_host: str

    def audiences_for(self, tenant_id: str) -> tuple[str, ...]:
        """The audiences a token issued by `tenant_id` may carry. An Application ID URI
        (`api://...`) is unique only inside one tenant: another allowed tenant could register a
        look-alike app with the same URI and mint tokens for it. So a URI counts only for the
        tenant of the API's registration, the first of `CALLER_TENANT_IDS`; from any other tenant
        only a client id (a GUID, unique across tenants) identifies our registration."""
        if self.tenant_ids and tenant_id == self.tenant_ids[0]:
            return self.audiences
        return tuple(audience for audience in self.audiences if is_guid(audience))


def _csv(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def load_caller_settings(environ: Mapping[str, str] | None = None) -> CallerSettings:
    """CALLER_AUTH and, with `entra`, its audiences and tenants; one ConfigurationError naming
    every problem. Separate from `load_settings`: the timer and the CLI never need it, and a
    route must be able to refuse a caller before any other setting or client is touched."""
    settings, problems = read_caller_settings(environ)
    if problems:
        raise ConfigurationError("Invalid app settings: " + "; ".join(problems))
    return settings


def read_caller_settings(environ: Mapping[str, str] | None = None) -> tuple[CallerSettings, list[str]]:
    """The caller settings as read and the problems found (`settings_report` lists them too)."""
    read = _Reader(os.environ if environ is None else environ)
    raw_mode = read.raw(CALLER_AUTH)
    mode = caller_auth_mode({CALLER_AUTH.name: raw_mode}) or ""
    if raw_mode and not mode:
        read.problems.append(f"{CALLER_AUTH.name} must be one of {', '.join(CALLER_AUTH_MODES)}, got {raw_mode!r}")
    audiences: tuple[str, ...] = ()
    tenant_ids: tuple[str, ...] = ()
    authority_host = ""
    if mode == ENTRA:
        audiences = _csv(read.raw(CALLER_AUDIENCES))
        if not audiences and not read.problems:
            read.problems.append(f"{CALLER_AUDIENCES.name} lists no audience")
        tenant_ids = tuple(t.lower() for t in _csv(read.raw(CALLER_TENANT_IDS) or read.raw(PARTNER_TENANT_ID)))
        if not tenant_ids:
            read.problems.append(f"{CALLER_TENANT_IDS.name} (or {PARTNER_TENANT_ID.name}) is required")
        for tenant in tenant_ids:
            if not is_guid(tenant):
                read.problems.append(
                    f"{CALLER_TENANT_IDS.name} must list tenant GUIDs (tokens carry the GUID), got {tenant!r}"
                )
        authority_host = read.https_url(AZURE_AUTHORITY_HOST)
    settings = CallerSettings(mode=mode, audiences=audiences, tenant_ids=tenant_ids, authority_host=authority_host)
    return settings, read.problems


# Host settings the telemetry reads (Application Insights' own names, set by infra/, not ALL_SETTINGS:
# the code has no default for them and runs without them).
APPLICATIONINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"


@dataclass(frozen=True)
class TelemetrySettings:
    """Where telemetry goes: nowhere without a connection string (local runs and tests stay
    offline); with `Authorization=AAD` in the authentication string, sent with the managed identity
    (`ClientId=` selects the user-assigned one), as the host does, because local auth is off."""

    connection_string: str | None
    entra_auth: bool
    managed_identity_client_id: str | None
    sampler_chosen: bool  # OTEL_TRACES_SAMPLER is set: the operator chose the sampling, not the app


def telemetry_settings(environ: Mapping[str, str] | None = None) -> TelemetrySettings:
    env = environ_or(environ)
    connection_string = (env.get(APPLICATIONINSIGHTS_CONNECTION_STRING) or "").strip() or None
    parts = dict(
        part.split("=", 1)
        for part in (env.get(APPLICATIONINSIGHTS_AUTHENTICATION_STRING) or "").split(";")
        if "=" in part
    )
    return TelemetrySettings(
        connection_string=connection_string,
        entra_auth=parts.get("Authorization", "").strip().upper() == "AAD",
        managed_identity_client_id=parts.get("ClientId", "").strip() or None,
        sampler_chosen=bool((env.get("OTEL_TRACES_SAMPLER") or "").strip()),
    )
