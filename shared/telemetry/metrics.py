"""The app's metrics (Application Insights: customMetrics), recorded only while telemetry is on.

- `upgrade_requests`: requests by outcome (accepted, submitted, completed, failed, rejected), product
  family and, where a request belongs to one, campaign: a campaign's progress at a glance.
- `partner_center.throttled`: Partner Center 429 answers, by operation, retries inside a call included.
- `partner_center.duration`: Partner Center latency in ms per call (its retries included), by operation.
- `upgrade_requests.pending_due` and `upgrade_requests.oldest_pending_age`: the backlog each timer run
  finds (pending requests due now, and how long the oldest has waited since it was accepted).
- `timer_run.duration`: how long each timer run took, in seconds.
"""

from __future__ import annotations

import functools
from typing import Any

from shared.telemetry import attributes
from shared.telemetry.switch import active

METER_NAME = "csp_product_upgrade"
OUTCOMES = ("accepted", "submitted", "completed", "failed", "rejected")


@functools.cache
def _instruments() -> dict[str, Any]:
    """Created once, on first use after telemetry was turned on (the global meter provider is set
    by then, so they report to it)."""
    from opentelemetry import metrics

    meter = metrics.get_meter(METER_NAME)
    return {
        "requests": meter.create_counter(
            "upgrade_requests", unit="{request}", description="Upgrade requests by outcome"
        ),
        "throttled": meter.create_counter(
            "partner_center.throttled", unit="{response}", description="Partner Center 429 answers"
        ),
        "duration": meter.create_histogram(
            "partner_center.duration", unit="ms", description="Partner Center call latency, retries included"
        ),
        "pending": meter.create_gauge(
            "upgrade_requests.pending_due", unit="{request}", description="Pending requests due at a timer run"
        ),
        "oldest": meter.create_gauge(
            "upgrade_requests.oldest_pending_age", unit="s", description="Age of the oldest pending request due"
        ),
        "run": meter.create_histogram("timer_run.duration", unit="s", description="Timer run duration"),
    }


def request_outcome(outcome: str, product_family: str, campaign_id: str | None = None) -> None:
    if not active():
        return
    labels = {attributes.OUTCOME: outcome, attributes.PRODUCT_FAMILY: product_family}
    if campaign_id:
        labels[attributes.CAMPAIGN_ID] = campaign_id
    _instruments()["requests"].add(1, labels)


def partner_center_call(operation: str, status: int, milliseconds: float | None, throttled: int) -> None:
    if not active():
        return
    labels: dict[str, str | int] = {attributes.PC_OPERATION: operation}
    if throttled:
        _instruments()["throttled"].add(throttled, labels)
    if milliseconds is not None:
        _instruments()["duration"].record(milliseconds, {**labels, attributes.PC_STATUS: status})


def timer_run(seconds: float, pending_due: int, oldest_pending_seconds: float | None) -> None:
    if not active():
        return
    instruments = _instruments()
    instruments["run"].record(seconds)
    instruments["pending"].set(pending_due)
    instruments["oldest"].set(oldest_pending_seconds or 0.0)
