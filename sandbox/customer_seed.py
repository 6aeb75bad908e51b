"""Seed the sandbox's Partner Center with thousands of customers, a realistic mix of them.

A transition campaign meets, among a partner's customers, some that cannot be upgraded (each with
Partner Center's own reason and error code, from the error-codes page) and some already upgraded
or being upgraded (eligibility then names the existing ``upgradeId``). The mix is drawn from a
seeded generator, so the same ``--seed`` and ``--random-seed`` give the same customers.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .customer_directory import CustomerProfile

if TYPE_CHECKING:
    from .customers import Customers

# (create error status, error code, reason), as on Partner Center's REST error-codes page.
INELIGIBLE_REASONS: tuple[tuple[int, int, str], ...] = (
    (403, 900108, "Can't process Azure upgrade since customer has no Azure subscriptions."),
    (
        403,
        900105,
        "You have one or more Azure subscriptions in the suspended state. Suspended Azure subscriptions can't be "
        "transitioned to the Azure plan",
    ),
    (
        403,
        900130,
        "One or more Azure subscriptions were purchased recently, these subscriptions can't be transitioned at this "
        "time. Try again later",
    ),
    (403, 900119, "Can't process Azure upgrade for Azure Partner Shared Services"),
)
# How often each reason is drawn, in the order above: no Azure subscription is by far the most common.
REASON_WEIGHTS = (6, 2, 1, 1)

# Shares of the seeded customers (the rest are eligible).
INELIGIBLE_SHARE = 0.10
UPGRADED_SHARE = 0.05
IN_PROGRESS_SHARE = 0.01

_NAMES = (
    "Contoso",
    "Fabrikam",
    "Northwind Traders",
    "Adventure Works",
    "Tailspin Toys",
    "Wingtip Toys",
    "Litware",
    "Proseware",
    "Woodgrove Bank",
    "Alpine Ski House",
    "Coho Winery",
    "Lamna Healthcare",
    "Trey Research",
    "Wide World Importers",
    "Fourth Coffee",
    "Relecloud",
    "Humongous Insurance",
    "Lucerne Publishing",
    "Margie's Travel",
    "Blue Yonder Airlines",
)
_SUFFIXES = ("Ltd", "GmbH", "Inc.", "B.V.", "SAS", "Pty Ltd", "AB", "Oy", "S.p.A.", "LLC")


@dataclass(frozen=True)
class SeedSummary:
    seeded: int
    eligible: int
    ineligible: int
    already_upgraded: int
    upgrade_in_progress: int
    reasons: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seeded": self.seeded,
            "eligible": self.eligible,
            "ineligible": self.ineligible,
            "alreadyUpgraded": self.already_upgraded,
            "upgradeInProgress": self.upgrade_in_progress,
            "reasons": self.reasons,
        }


def _profile(rng: random.Random, number: int) -> CustomerProfile:
    customer_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    base, suffix = rng.choice(_NAMES), rng.choice(_SUFFIXES)
    slug = "".join(ch for ch in base.lower() if ch.isalnum())
    return CustomerProfile(
        id=customer_id,
        company_name=f"{base} {suffix} {number:05d}",
        domain=f"{slug}{number:05d}.onmicrosoft.com",
    )


def seed_customers(customers: Customers, count: int, random_seed: int | None = None) -> SeedSummary:
    """Add ``count`` customers to the partner's list, with their scenarios; what was seeded."""
    if count < 1:
        raise ValueError("count must be at least 1")
    rng = random.Random(random_seed)
    start = len(customers.directory)
    profiles = [_profile(rng, start + index + 1) for index in range(count)]
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for profile in profiles:
        draw = rng.random()
        if draw < INELIGIBLE_SHARE:
            status, code, reason = rng.choices(INELIGIBLE_REASONS, weights=REASON_WEIGHTS)[0]
            customers.set(profile.id, eligible=False, reason=reason, error_status=status, error_code=code)
            kinds["ineligible"] += 1
            reasons[str(code)] += 1
        elif draw < INELIGIBLE_SHARE + UPGRADED_SHARE:
            customers.set(profile.id, existing_upgrade="complete")
            kinds["upgraded"] += 1
        elif draw < INELIGIBLE_SHARE + UPGRADED_SHARE + IN_PROGRESS_SHARE:
            customers.set(profile.id, existing_upgrade="in_progress")
            kinds["in_progress"] += 1
        else:
            kinds["eligible"] += 1
    customers.directory.add_many(profiles)
    return SeedSummary(
        seeded=count,
        eligible=kinds["eligible"],
        ineligible=kinds["ineligible"],
        already_upgraded=kinds["upgraded"],
        upgrade_in_progress=kinds["in_progress"],
        reasons=dict(sorted(reasons.items())),
    )
