"""Product upgrades Partner Center has accepted, and how each progresses.

This store is the ground truth for "was the customer upgraded twice?": ``submissions`` counts
every upgrade actually created, including ones whose 202 never reached the client, and never
counts idempotent replays.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .customers import CustomerScenario


@dataclass(frozen=True)
class LineItem:
    source_id: str
    target_id: str


@dataclass
class Upgrade:
    """One upgrade and its progress; mutated only under the store's lock."""

    id: str
    customer_id: str
    product_family: str
    created_at: float
    request_id: str | None
    outcome: str  # final state: "complete", "failed" or "in_progress" (never finishes)
    polls_until_final: int
    failure_code: str
    failure_message: str
    line_items: list[LineItem] = field(default_factory=list)
    preexisting: bool = False
    polls: int = 0
    finished_at: float | None = None

    @property
    def state(self) -> str:
        """ "in_progress" until enough status polls have happened, then the outcome."""
        return self.outcome if self.finished_at is not None else "in_progress"

    def poll(self) -> str:
        """Count one status call; the call that reaches ``polls_until_final`` sees the outcome."""
        self.polls += 1
        if self.finished_at is None and self.outcome != "in_progress" and self.polls >= self.polls_until_final:
            self.finished_at = time.time()
        return self.state


class UpgradeStore:
    """Thread-safe upgrades plus the MS-RequestId idempotency index.

    ``lock`` is re-entrant and public so Partner Center's create can check-then-create
    atomically: two concurrent POSTs with the same MS-RequestId must create one upgrade.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._upgrades: dict[str, Upgrade] = {}
        self._by_request_id: dict[str, str] = {}
        self._submissions: Counter[str] = Counter()

    def create(
        self,
        customer_id: str,
        product_family: str,
        scenario: CustomerScenario,
        *,
        request_id: str | None = None,
        preexisting: bool = False,
        outcome: str | None = None,
        finished: bool = False,
    ) -> Upgrade:
        """Record a new upgrade; ``preexisting`` ones (scenario set-up) are not submissions."""
        final = outcome or scenario.outcome
        upgrade = Upgrade(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            product_family=product_family,
            created_at=time.time(),
            request_id=request_id,
            outcome=final,
            polls_until_final=scenario.status_polls_until_final,
            failure_code=scenario.failure_code,
            failure_message=scenario.failure_message,
            line_items=[LineItem(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(max(1, scenario.line_items))],
            preexisting=preexisting,
        )
        if finished and final != "in_progress":
            upgrade.finished_at = upgrade.created_at
        with self.lock:
            self._upgrades[upgrade.id] = upgrade
            if request_id:
                self._by_request_id[request_id.lower()] = upgrade.id
            if not preexisting:
                self._submissions[customer_id.lower()] += 1
        return upgrade

    def get(self, upgrade_id: str) -> Upgrade | None:
        with self.lock:
            return self._upgrades.get(upgrade_id.lower())

    def by_request_id(self, request_id: str | None) -> Upgrade | None:
        if not request_id:
            return None
        with self.lock:
            upgrade_id = self._by_request_id.get(request_id.lower())
            return self._upgrades.get(upgrade_id) if upgrade_id else None

    def latest_for(self, customer_id: str, product_family: str | None = None) -> Upgrade | None:
        with self.lock:
            matches = [
                upgrade
                for upgrade in self._upgrades.values()
                if upgrade.customer_id.lower() == customer_id.lower()
                and (product_family is None or upgrade.product_family.lower() == product_family.lower())
            ]
        return max(matches, key=lambda upgrade: upgrade.created_at) if matches else None

    def all_for(self, customer_id: str) -> list[Upgrade]:
        with self.lock:
            return [u for u in self._upgrades.values() if u.customer_id.lower() == customer_id.lower()]

    def submissions(self, customer_id: str) -> int:
        with self.lock:
            return self._submissions[customer_id.lower()]

    def submission_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self._submissions)

    def clear(self) -> None:
        with self.lock:
            self._upgrades.clear()
            self._by_request_id.clear()
            self._submissions.clear()
