"""Creating a campaign and steering it: every check before anything is stored, and each action
an ETag-guarded read-decide-write of the campaign row (racing safely with the timer, which
writes the same row: the loser reads again and decides again).

| action   | allowed from                      | becomes                                |
|----------|-----------------------------------|----------------------------------------|
| start    | `ready`                           | `running`                              |
| pause    | `assessing`, `ready`, `running`   | `paused` (remembers where it was)      |
| resume   | `paused`                          | where it was paused                    |
| cancel   | any state but `complete`          | `cancelled` (again: the same answer)   |

Anything else is `409 campaign-conflict` naming the state. Pausing stops new Partner Center
calls and new requests; requests already made finish (the timer follows them). Cancelling turns
members not yet requested into `cancelled` (the timer does it, a batch per run).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.errors import CampaignConflict, Conflict, InvalidRequest, NotFound
from shared.identifiers import is_guid, new_guid
from shared.upgrade_requests.campaigns.model import (
    ASSESSING,
    CANCELLED,
    COMPLETE,
    PAUSED,
    PENDING,
    READY,
    RUNNING,
    SOURCE_CUSTOMERS,
    SOURCE_PARTNER_CENTER,
    Campaign,
)
from shared.upgrade_requests.record import RequestedBy, utc_now
from shared.upgrade_requests.store.campaigns import CHUNK_SIZE, CampaignStore, StoredCampaign
from shared.upgrade_requests.store.table import WriteConflict
from shared.validation import DEFAULT_PRODUCT_FAMILY, product_family_value

log = logging.getLogger(__name__)

CREATE_FIELDS = (
    "name",
    "productFamily",
    "customers",
    "source",
    "companyNamePrefix",
    "perHour",
    "notBefore",
    "autoStart",
)
MAX_PER_HOUR = 36000
MAX_NAME_LENGTH = 200
MAX_PREFIX_LENGTH = 256
LISTED_BAD_IDS = 20
WRITE_ROUNDS = 10


@dataclass(frozen=True)
class NewCampaign:
    campaign: Campaign
    customers: list[str]  # distinct, lower case, in the order given
    duplicates: int


def new_campaign(
    document: Mapping[str, Any],
    *,
    max_members: int,
    default_per_hour: int,
    requested_by: RequestedBy | None,
    now: datetime | None = None,
) -> NewCampaign:
    """The campaign a `POST /api/campaigns` body asks for, or `InvalidRequest` naming what is wrong
    (unknown fields were refused by the reader)."""
    name = document.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be text of 1-{MAX_NAME_LENGTH} characters", extensions={"field": "name"})
    family = product_family_value(document.get("productFamily", DEFAULT_PRODUCT_FAMILY))
    source = document.get("source", SOURCE_CUSTOMERS if "customers" in document else None)
    if source not in (SOURCE_CUSTOMERS, SOURCE_PARTNER_CENTER):
        raise InvalidRequest(
            'Give "customers" (a list of customer GUIDs) or "source": "partner-center"',
            extensions={"field": "source"},
        )
    prefix = document.get("companyNamePrefix")
    customers: list[str] = []
    duplicates = 0
    if source == SOURCE_CUSTOMERS:
        if prefix is not None:
            raise InvalidRequest(
                'companyNamePrefix is only for "source": "partner-center"', extensions={"field": "companyNamePrefix"}
            )
        customers, duplicates = _customers(document.get("customers"), max_members)
    else:
        if "customers" in document:
            raise InvalidRequest(
                'Give either "customers" or "source": "partner-center", not both', extensions={"field": "customers"}
            )
        if prefix is not None and (
            not isinstance(prefix, str) or not prefix.strip() or len(prefix) > MAX_PREFIX_LENGTH
        ):
            raise InvalidRequest(
                f"companyNamePrefix must be text of 1-{MAX_PREFIX_LENGTH} characters",
                extensions={"field": "companyNamePrefix"},
            )
    per_hour = document.get("perHour", default_per_hour)
    if isinstance(per_hour, bool) or not isinstance(per_hour, int) or not 1 <= per_hour <= MAX_PER_HOUR:
        raise InvalidRequest(
            f"perHour must be a whole number from 1 to {MAX_PER_HOUR} (Partner Center calls per hour)",
            extensions={"field": "perHour"},
        )
    not_before = _time(document.get("notBefore"))
    auto_start = document.get("autoStart", False)
    if not isinstance(auto_start, bool):
        raise InvalidRequest("autoStart must be true or false", extensions={"field": "autoStart"})
    now = now or utc_now()
    campaign = Campaign(
        campaign_id=new_guid(),
        name=name.strip(),
        product_family=family,
        source=source,
        per_hour=per_hour,
        state=ASSESSING,
        created_at=now,
        updated_at=now,
        company_name_prefix=prefix.strip() if isinstance(prefix, str) else None,
        not_before=not_before,
        auto_start=auto_start,
        requested_by=requested_by,
        members=len(customers),
        duplicates=duplicates,
        counts={PENDING: len(customers)},
        chunks=(len(customers) + CHUNK_SIZE - 1) // CHUNK_SIZE,
        discovery_done=source == SOURCE_CUSTOMERS,
    )
    return NewCampaign(campaign, customers, duplicates)


def create(store: CampaignStore, new: NewCampaign) -> StoredCampaign:
    chunks = [new.customers[i : i + CHUNK_SIZE] for i in range(0, len(new.customers), CHUNK_SIZE)]
    stored = store.create(new.campaign, chunks)
    log.info(
        "campaign.created campaign_id=%s members=%d duplicates=%d source=%s per_hour=%d",
        new.campaign.campaign_id,
        new.campaign.members,
        new.duplicates,
        new.campaign.source,
        new.campaign.per_hour,
    )
    return stored


def get(store: CampaignStore, campaign_id: str) -> StoredCampaign:
    stored = store.get(campaign_id) if is_guid(campaign_id) else None
    if stored is None:
        raise NotFound(f"No campaign {campaign_id}")
    return stored


def act(store: CampaignStore, campaign_id: str, action: str) -> Campaign:
    """start / pause / resume / cancel (table in the module docstring)."""
    for _ in range(WRITE_ROUNDS):
        stored = get(store, campaign_id)
        campaign = stored.campaign
        updated = _decide(campaign, action)
        if updated is None:
            return campaign  # already where the action leads
        try:
            saved = store.replace(updated.evolve(updated_at=utc_now()), stored.etag)
        except WriteConflict:
            continue
        if action in ("resume", "start"):
            store.mark_active(campaign_id)  # work again (the timer may have dropped a paused one)
        log.info("campaign.%s campaign_id=%s from_state=%s", action, campaign_id, campaign.state)
        return saved.campaign
    raise Conflict("The campaign kept changing; retry", retry_after=1)


def _decide(campaign: Campaign, action: str) -> Campaign | None:
    state = campaign.state
    if action == "start" and state == READY:
        return campaign.evolve(state=RUNNING)
    if action == "start" and state == RUNNING:
        return None
    if action == "pause" and state in (ASSESSING, READY, RUNNING):
        return campaign.evolve(state=PAUSED, paused_from=state)
    if action == "pause" and state == PAUSED:
        return None
    if action == "resume" and state == PAUSED:
        return campaign.evolve(state=campaign.paused_from or ASSESSING, paused_from=None)
    if action == "cancel" and state == CANCELLED:
        return None
    if action == "cancel" and state != COMPLETE:
        return campaign.evolve(state=CANCELLED, paused_from=None)
    allowed = {
        "start": "a campaign that is ready (assessment finished)",
        "pause": "a campaign that is assessing, ready or running",
        "resume": "a paused campaign",
        "cancel": "a campaign that is not complete",
    }[action]
    raise CampaignConflict(
        f"The campaign is {state}: {action} applies only to {allowed}",
        extensions={"campaignId": campaign.campaign_id, "campaignState": state},
    )


def _customers(value: Any, max_members: int) -> tuple[list[str], int]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("customers must be a non-empty list of customer GUIDs", extensions={"field": "customers"})
    if len(value) > max_members:
        raise InvalidRequest(
            f"customers lists {len(value)} entries; a campaign holds at most {max_members} (CAMPAIGN_MAX_MEMBERS)",
            extensions={"field": "customers", "maxMembers": max_members, "given": len(value)},
        )
    bad = [(index, item) for index, item in enumerate(value) if not is_guid(item)]
    if bad:
        shown = [{"index": index, "value": str(item)[:60]} for index, item in bad[:LISTED_BAD_IDS]]
        raise InvalidRequest(
            f"{len(bad)} of the customers are not customer GUIDs (8-4-4-4-12 hex); the first are listed",
            extensions={"field": "customers", "invalidCount": len(bad), "invalid": shown},
        )
    distinct = list(dict.fromkeys(item.lower() for item in value))
    return distinct, len(value) - len(distinct)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip()) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or not 2000 <= parsed.year <= 9000:
        raise InvalidRequest(
            "notBefore must be an ISO 8601 date-time like 2026-12-01T08:00:00Z", extensions={"field": "notBefore"}
        )
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
