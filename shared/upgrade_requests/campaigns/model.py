"""A campaign and its members as plain data, and the names of their states (a public contract:
the API, the CLI, the connector and the report show them as they are here).

Campaign: `assessing` -> `ready` -> `running` -> `complete`; `paused` (from any of the first
three, `resume` goes back), `cancelled` (from any state that is not final).

Member: `pending` (not assessed yet) -> `eligible` | `ineligible` | `already-upgraded` |
`assessment-failed`; an `eligible` member, once the campaign runs, -> `requested` (its upgrade
request was accepted) -> the request's final state `complete` | `failed` | `rejected` |
`cancelled`. A campaign's cancel turns `pending` and `eligible` members into `cancelled`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from shared.upgrade_requests.record import RequestedBy

# Campaign states
ASSESSING = "assessing"
READY = "ready"
RUNNING = "running"
PAUSED = "paused"
COMPLETE = "complete"
CANCELLED = "cancelled"
CAMPAIGN_STATES = (ASSESSING, READY, RUNNING, PAUSED, COMPLETE, CANCELLED)
CAMPAIGN_FINAL = frozenset({COMPLETE, CANCELLED})

# Member states
PENDING = "pending"
ELIGIBLE = "eligible"
INELIGIBLE = "ineligible"
ALREADY_UPGRADED = "already-upgraded"
ASSESSMENT_FAILED = "assessment-failed"
REQUESTED = "requested"
MEMBER_COMPLETE = "complete"
MEMBER_FAILED = "failed"
MEMBER_REJECTED = "rejected"
MEMBER_CANCELLED = "cancelled"
MEMBER_STATES = (
    PENDING,
    ELIGIBLE,
    INELIGIBLE,
    ALREADY_UPGRADED,
    ASSESSMENT_FAILED,
    REQUESTED,
    MEMBER_COMPLETE,
    MEMBER_FAILED,
    MEMBER_REJECTED,
    MEMBER_CANCELLED,
)
MEMBER_FINAL = frozenset(
    {INELIGIBLE, ALREADY_UPGRADED, ASSESSMENT_FAILED, MEMBER_COMPLETE, MEMBER_FAILED, MEMBER_REJECTED, MEMBER_CANCELLED}
)
# Members the campaign still has work for (a count of 0 for all of them: nothing left to do).
MEMBER_OPEN = (PENDING, ELIGIBLE, REQUESTED)

SOURCE_CUSTOMERS = "customers"
SOURCE_PARTNER_CENTER = "partner-center"

# Work queues (rows `q|{queue}|...` in the campaign's partition, deleted when done).
ASSESS = "assess"
START = "start"
FOLLOW = "follow"


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class PaceState:
    """The campaign's pacing, carried across timer runs (see `pace`)."""

    next_at: datetime | None = None  # the earliest time of the next call
    rate: float | None = None  # the rate allowed now (calls per hour); None = the campaign's perHour
    throttled_until: datetime | None = None
    last_throttled_at: datetime | None = None
    last_retry_after: int | None = None
    throttles: int = 0
    calls: int = 0
    minutes: dict[str, int] = field(default_factory=dict)  # "YYYY-mm-ddTHH:MM" -> calls, last hour

    def to_json(self) -> dict[str, Any]:
        return {
            "nextAt": iso(self.next_at),
            "rate": self.rate,
            "throttledUntil": iso(self.throttled_until),
            "lastThrottledAt": iso(self.last_throttled_at),
            "lastRetryAfter": self.last_retry_after,
            "throttles": self.throttles,
            "calls": self.calls,
            "minutes": self.minutes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PaceState:
        return cls(
            next_at=parse_time(data.get("nextAt")),
            rate=data.get("rate"),
            throttled_until=parse_time(data.get("throttledUntil")),
            last_throttled_at=parse_time(data.get("lastThrottledAt")),
            last_retry_after=data.get("lastRetryAfter"),
            throttles=int(data.get("throttles") or 0),
            calls=int(data.get("calls") or 0),
            minutes={str(k): int(v) for k, v in (data.get("minutes") or {}).items()},
        )


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    name: str
    product_family: str
    source: str
    per_hour: int
    state: str
    created_at: datetime
    updated_at: datetime
    company_name_prefix: str | None = None
    not_before: datetime | None = None
    auto_start: bool = False
    paused_from: str | None = None
    requested_by: RequestedBy | None = None
    finished_at: datetime | None = None
    members: int = 0  # distinct members (staged, whether expanded yet or not)
    duplicates: int = 0  # customers given more than once, stored once
    counts: dict[str, int] = field(default_factory=dict)  # members by state
    chunks: int = 0  # staged chunks of customer ids (`in|{n}` rows)
    chunks_expanded: int = 0  # chunks turned into members and queue entries
    discovery_done: bool = True  # False while a Partner Center listing has pages to read
    discovery_next: dict[str, Any] | None = None  # the NextLink to resume the listing from
    discovery_pages: int = 0
    pace: PaceState = field(default_factory=PaceState)
    last_error: str | None = None

    def evolve(self, **changes: Any) -> Campaign:
        return replace(self, **changes)

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)

    @property
    def open_members(self) -> int:
        return sum(self.count(state) for state in MEMBER_OPEN)

    @property
    def staged_everything(self) -> bool:
        """Every member is known and expanded (the listing is done, every chunk expanded)."""
        return self.discovery_done and self.chunks_expanded >= self.chunks

    def moved(self, from_state: str, to_state: str, n: int = 1) -> Campaign:
        counts = dict(self.counts)
        counts[from_state] = counts.get(from_state, 0) - n
        counts[to_state] = counts.get(to_state, 0) + n
        return replace(self, counts=counts)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("created_at", "updated_at", "not_before", "finished_at"):
            data[name] = iso(data[name])
        data["requested_by"] = self.requested_by.public_view() if self.requested_by else None
        data["pace"] = self.pace.to_json()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Campaign:
        data = json.loads(text)
        for name in ("created_at", "updated_at", "not_before", "finished_at"):
            data[name] = parse_time(data.get(name))
        by = data.get("requested_by")
        data["requested_by"] = RequestedBy.from_public_view(by) if by else None
        data["pace"] = PaceState.from_json(data.get("pace") or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Member:
    customer_id: str
    state: str = PENDING
    chunk: int = -1  # the staged chunk it came from (-1: none)
    company_name: str | None = None
    reason: str | None = None
    upgrade_id: str | None = None
    request_id: str | None = None
    queue_row: str | None = None  # its entry in a work queue, if any
    attempts: int = 0
    last_error: str | None = None
    assessed_at: datetime | None = None
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Member:
        return replace(self, **changes)

    def public_view(self) -> dict[str, Any]:
        data = asdict(self)
        view = {
            "customerId": self.customer_id,
            "state": self.state,
            "companyName": self.company_name,
            "reason": self.reason,
            "requestId": self.request_id,
            "upgradeId": self.upgrade_id,
            "attempts": self.attempts,
            "lastError": self.last_error,
        }
        for name, key in (
            ("assessed_at", "assessedAt"),
            ("requested_at", "requestedAt"),
            ("finished_at", "finishedAt"),
            ("updated_at", "updatedAt"),
        ):
            view[key] = iso(data[name])
        return view
