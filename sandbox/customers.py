"""Per-customer scenarios: how Partner Center will treat each customer.

Real customers differ (no Azure subscription, an upgrade already done, an upgrade that fails),
and the app must handle each; tests pick the behaviour per customer id instead of per request.
Unknown customers are eligible and their upgrades complete.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from .customer_directory import CustomerDirectory

OUTCOMES = ("complete", "failed", "in_progress")
_OUTCOME_ALIASES = {
    "complete": "complete",
    "completed": "complete",
    "failed": "failed",
    "fail": "failed",
    "in_progress": "in_progress",
    "inprogress": "in_progress",
    "stuck": "in_progress",
}


def normalize_outcome(value: str) -> str:
    """Map the accepted spellings to one of ``OUTCOMES``."""
    key = value.replace("-", "_").lower()
    if key not in _OUTCOME_ALIASES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {value!r}")
    return _OUTCOME_ALIASES[key]


@dataclass(frozen=True)
class CustomerScenario:
    """How Partner Center answers for one customer.

    ``eligible=False`` makes eligibility report ``isEligible: false`` with ``reason`` and makes a
    create fail with ``error_status``/``error_code`` (403/900108 "no Azure subscriptions" is the
    documented code). ``outcome`` is where an upgrade ends up ("in_progress" never finishes),
    after ``status_polls_until_final`` status calls. ``existing_upgrade`` pre-creates an upgrade
    (True or "complete": completed, "in_progress": still running, "failed") that does not count
    as a submission.
    """

    eligible: bool = True
    reason: str | None = None
    outcome: str = "complete"
    status_polls_until_final: int = 2
    existing_upgrade: bool | str = False
    error_status: int = 403
    error_code: int = 900108
    failure_code: str = "900120"
    failure_message: str = "Can't process Azure upgrade"
    line_items: int = 1

    @property
    def polls_until_final(self) -> int:
        return self.status_polls_until_final

    @property
    def ineligible_reason(self) -> str:
        return self.reason or "Can't process Azure upgrade since customer has no Azure subscriptions."


class Customers:
    """Thread-safe registry of ``CustomerScenario`` by customer id (case-insensitive), and the
    partner's customer list (``directory``: who ``GET /v1/customers`` lists; a scenario alone does
    not put a customer on it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scenarios: dict[str, CustomerScenario] = {}
        self.directory = CustomerDirectory()

    def set(self, customer_id: str, **settings: Any) -> CustomerScenario:
        """Create or update a customer's scenario; ``polls_until_final`` is accepted as an alias."""
        if "polls_until_final" in settings:
            settings["status_polls_until_final"] = settings.pop("polls_until_final")
        if "outcome" in settings:
            settings["outcome"] = normalize_outcome(settings["outcome"])
        existing = settings.get("existing_upgrade")
        if isinstance(existing, str):
            settings["existing_upgrade"] = normalize_outcome(existing)
        with self._lock:
            current = self._scenarios.get(customer_id.lower(), CustomerScenario())
            scenario = replace(current, **settings)
            self._scenarios[customer_id.lower()] = scenario
        return scenario

    def get(self, customer_id: str) -> CustomerScenario:
        with self._lock:
            return self._scenarios.get(customer_id.lower(), CustomerScenario())

    def clear(self) -> None:
        """Forget every scenario and empty the customer list."""
        with self._lock:
            self._scenarios.clear()
        self.directory.clear()

    def snapshot(self) -> dict[str, CustomerScenario]:
        with self._lock:
            return dict(self._scenarios)
