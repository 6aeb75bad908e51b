"""The campaign objects of the shared runtime, built once per runtime: the campaign store (on
the request table's client) and the timer's campaign runner with a Partner Center client of its
own that never waits out a 429 inline (`PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS` = 0 for it), so
every 429 reaches the campaign's pacing (pause for Retry-After, halve the rate)."""

from __future__ import annotations

import threading

from shared.partner_center.client import PartnerCenterClient
from shared.runtime import Runtime, get_runtime
from shared.upgrade_requests.campaigns.runner import CampaignRunner
from shared.upgrade_requests.store.campaigns import CampaignStore, beside

_lock = threading.Lock()
_built: dict[int, tuple[Runtime, CampaignStore, CampaignRunner]] = {}


def campaign_store() -> CampaignStore:
    return _for(get_runtime())[1]


def campaign_runner(runtime: Runtime | None = None) -> CampaignRunner:
    return _for(runtime or get_runtime())[2]


def _for(runtime: Runtime) -> tuple[Runtime, CampaignStore, CampaignRunner]:
    with _lock:
        found = _built.get(id(runtime))
        if found is None or found[0] is not runtime:
            settings = runtime.settings
            client = PartnerCenterClient(
                settings.partner_center_endpoint,
                runtime.tokens.access_token,
                read_timeout_seconds=settings.partner_center_timeout_seconds,
                max_retry_after_seconds=0,
            )
            store = beside(runtime.store)
            found = (runtime, store, CampaignRunner(store, runtime.store, runtime.intake, client))
            _built.clear()
            _built[id(runtime)] = found
        return found
