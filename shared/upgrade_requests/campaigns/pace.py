"""When a campaign's next Partner Center call may go: its `perHour`, spread evenly, carried
across timer runs on the campaign entity, halved by a 429 and climbing back.

- Calls are spaced `3600 / rate` seconds apart (`rate`: `perHour`, or less after a 429). The
  next slot is kept on the campaign (`PaceState.next_at`), so the pace holds across runs, and a
  slot long past is not saved up: after an idle time the next call goes now, then the spacing
  resumes (no burst at the start of a run).
- A 429 pauses the campaign's calls for its `Retry-After` and halves the rate (at least
  `MIN_RATE`); calls answered without one add it back linearly in time (additive increase):
  half of `perHour` per `RECOVERY_SECONDS` of calls, up to `perHour`.
- Calls are counted per minute for the last hour: the pace achieved, shown by GET.
- Nothing is sent before the campaign's `notBefore`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from shared.upgrade_requests.campaigns.model import Campaign, PaceState

MIN_RATE = 1.0
RECOVERY_SECONDS = 600.0  # from half the pace back to all of it, calling without a 429 meanwhile
_MINUTE = "%Y-%m-%dT%H:%M"


def rate(campaign: Campaign) -> float:
    """The calls per hour allowed now."""
    current = campaign.pace.rate
    return float(campaign.per_hour) if current is None else max(MIN_RATE, min(float(campaign.per_hour), current))


def spacing(campaign: Campaign) -> timedelta:
    return timedelta(seconds=3600.0 / rate(campaign))


def next_slot(campaign: Campaign, now: datetime) -> datetime:
    """The earliest time the campaign's next call may go."""
    slot = now
    pace = campaign.pace
    for bound in (pace.next_at, pace.throttled_until, campaign.not_before):
        if bound is not None and bound > slot:
            slot = bound
    return slot


def after_call(campaign: Campaign, at: datetime) -> PaceState:
    """The pace after a call sent at `at` (answered without a 429)."""
    pace = campaign.pace
    start = at if pace.next_at is None or pace.next_at < at - spacing(campaign) else max(at, pace.next_at)
    recovered = None
    if pace.rate is not None:
        step_seconds = 3600.0 / rate(campaign)  # the time this call stands for at the current rate
        recovered = pace.rate + campaign.per_hour / 2 * step_seconds / RECOVERY_SECONDS
        recovered = None if recovered >= campaign.per_hour else recovered
    updated = replace(pace, rate=recovered, calls=pace.calls + 1, minutes=_counted(pace.minutes, at))
    return replace(updated, next_at=start + timedelta(seconds=3600.0 / _rate_of(campaign, updated)))


def after_throttle(campaign: Campaign, at: datetime, retry_after: int) -> PaceState:
    """The pace after a 429 answered at `at` with `Retry-After: retry_after`."""
    pace = campaign.pace
    until = at + timedelta(seconds=retry_after)
    return replace(
        pace,
        rate=max(MIN_RATE, rate(campaign) / 2),
        throttled_until=max(until, pace.throttled_until or until),
        last_throttled_at=at,
        last_retry_after=retry_after,
        throttles=pace.throttles + 1,
        calls=pace.calls + 1,
        minutes=_counted(pace.minutes, at),
        next_at=max(until, pace.next_at or until),
    )


def achieved_last_hour(campaign: Campaign, now: datetime) -> int:
    """Calls sent in the 60 minutes up to `now`."""
    since = (now - timedelta(minutes=59)).strftime(_MINUTE)
    return sum(calls for minute, calls in campaign.pace.minutes.items() if minute >= since)


def _counted(minutes: dict[str, int], at: datetime) -> dict[str, int]:
    since = (at - timedelta(minutes=59)).strftime(_MINUTE)
    kept = {minute: calls for minute, calls in minutes.items() if minute >= since}
    key = at.strftime(_MINUTE)
    kept[key] = kept.get(key, 0) + 1
    return kept


def _rate_of(campaign: Campaign, pace: PaceState) -> float:
    return rate(replace(campaign, pace=pace))
