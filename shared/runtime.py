"""The process-wide objects, built once on first use and shared by every invocation.

Building is lazy so that importing `function_app` stays cheap (cold start) and so that a
misconfigured app still starts and answers each request with a problem+json naming the bad
setting, instead of failing to load with a stack trace in the host log.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from shared.deadlines import ENTRA_SECONDS, deadline_session, held
from shared.identifiers import new_guid
from shared.partner_center.client import PartnerCenterClient
from shared.partner_center.exactly_once import UpgradeService
from shared.partner_center.key_vault_secrets import SecretStore, build_secret_store
from shared.partner_center.tokens import PartnerCenterTokens
from shared.settings import CallerSettings, Settings, load_caller_settings, load_settings
from shared.upgrade_requests.intake import Intake
from shared.upgrade_requests.processor import ProcessingPolicy, RequestProcessor
from shared.upgrade_requests.store import RequestStore, build_request_store
from shared.webhooks.callbacks import CallbackPolicy, CallbackSender


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    secrets: SecretStore
    tokens: PartnerCenterTokens
    partner_center: PartnerCenterClient
    upgrades: UpgradeService
    store: RequestStore
    processor: RequestProcessor
    intake: Intake
    owner: str  # this instance's name on leases: which worker holds a claim


_settings: Settings | None = None
_caller_settings: CallerSettings | None = None
_runtime: Runtime | None = None
_settings_lock = threading.Lock()  # reading settings: no network, held an instant
_lock = threading.Lock()  # building the clients: a storage call, so waited for with the deadline


def get_settings() -> Settings:
    """The validated settings alone, without building clients: what a handler needs to check a
    request before any storage or Key Vault client exists."""
    global _settings
    if _settings is None:
        with _settings_lock:
            if _settings is None:
                _settings = load_settings()
    return _settings


def get_caller_settings() -> CallerSettings:
    """CALLER_AUTH and its settings alone: the first thing every route reads, so a caller is
    refused (or a bad CALLER_AUTH reported) before any other setting or client is touched."""
    global _caller_settings
    if _caller_settings is None:
        with _settings_lock:
            if _caller_settings is None:
                _caller_settings = load_caller_settings()
    return _caller_settings


def get_runtime() -> Runtime:
    """The shared runtime; raises ConfigurationError (naming each bad setting) if settings are wrong."""
    global _runtime
    if _runtime is None:
        settings = get_settings()
        # Building creates the table (a storage call): another thread building it (the timer,
        # on a longer deadline) is waited for no longer than this caller's deadline allows.
        with held(_lock, "the app's clients to be built"):
            if _runtime is None:
                _runtime = build_runtime(settings)
    return _runtime


def reset_runtime() -> None:
    """Forget the shared runtime so the next call re-reads settings (tests, local runner reloads)."""
    global _runtime, _settings, _caller_settings
    with _lock, _settings_lock:
        _runtime = None
        _settings = None
        _caller_settings = None


def instance_name() -> str:
    """Host/instance + process + a random suffix: unique per runtime, readable in the table."""
    host = os.environ.get("WEBSITE_INSTANCE_ID", "")[:12] or socket.gethostname()
    return f"{host}:{os.getpid()}:{new_guid()[:8]}"


# Libraries whose INFO lines (every HTTP request and response, token cache events) would drown
# our own step-by-step lines in Application Insights; their warnings and errors still come through.
NOISY_LOGGERS = ("azure", "msal", "urllib3")


def build_runtime(settings: Settings) -> Runtime:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    secrets = build_secret_store(settings.key_vault_url, settings.secret_cache_seconds)
    # MSAL's HTTP client: every Entra call held to ENTRA_SECONDS and the answer's deadline.
    tokens = PartnerCenterTokens(settings, secrets, http_client=deadline_session(ENTRA_SECONDS))
    partner_center = PartnerCenterClient(
        settings.partner_center_endpoint,
        tokens.access_token,
        read_timeout_seconds=settings.partner_center_timeout_seconds,
        max_retry_after_seconds=settings.partner_center_max_retry_after_seconds,
    )
    upgrades = UpgradeService(partner_center)
    store = build_request_store(
        settings.storage, settings.upgrade_requests_table, max_concurrency=2 * settings.pending_concurrency + 8
    )
    policy = ProcessingPolicy(
        max_attempts=settings.pending_max_attempts,
        lease_seconds=settings.request_lease_seconds,
        poll_interval_seconds=settings.status_poll_seconds,
    )
    owner = instance_name()
    callback_policy = CallbackPolicy(
        signing_secret_name=settings.callback_signing_secret_name,
        allow_private_networks=settings.callback_allow_private_networks,
        max_attempts=settings.callback_max_attempts,
    )
    return Runtime(
        settings=settings,
        secrets=secrets,
        tokens=tokens,
        partner_center=partner_center,
        upgrades=upgrades,
        store=store,
        processor=RequestProcessor(store, upgrades, policy, CallbackSender(secrets, callback_policy)),
        # A key without its record is taken over only after any intake must have ended: the deadline + 60 s.
        intake=Intake(store, owner, settings.request_lease_seconds, settings.http_deadline_seconds + 60),
        owner=owner,
    )
