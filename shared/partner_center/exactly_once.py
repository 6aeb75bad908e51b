"""Submitting an upgrade so that it happens once: the rules around Partner Center's create call.

Two situations must never turn into a second upgrade:

1. The customer already has an upgrade for the family. Partner Center refuses the create
   (409/900109 "in progress", 400/900110 "completed", ...); we then ask eligibility, whose
   `upgradeId` names the upgrade in place, and answer with that id (outcome "existing").

2. The create call's outcome is unknown (read timeout, reset after sending, 500/502/504). We do
   NOT fire a blind second create. Resolution, in order:
   a. eligibility: an `upgradeId` means an upgrade is in place: ours (outcome "resolved").
   b. eligible with no upgrade in place: the first call did not take effect, so the create is
      sent again with the SAME `MS-RequestId`. Partner Center uses that header for idempotency,
      so even if the first call lands late, both calls are one upgrade.
   c. anything else (not eligible without an id, eligibility failing, the resend ambiguous,
      throttled, unavailable or without a token): `SubmissionOutcomeUnknown`. The caller is told
      to check before retrying; the request store keeps the request in `submitting` for the timer
      to resolve the same way later.

The contract `shared.upgrade_requests.processor` relies on: once a create may have reached
Partner Center, `submit` ends in an upgrade id, a definite refusal, or `SubmissionOutcomeUnknown`
(whose `__cause__` is the error that stopped the resolution, e.g. a refused refresh token) and
never in another error that would read as "nothing was sent".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from shared.correlation import CallContext
from shared.errors import (
    NotEligible,
    PartnerCenterRejected,
    SubmissionOutcomeUnknown,
    UpgradeError,
    UpstreamConflict,
    UpstreamError,
)
from shared.partner_center.client import AmbiguousCreate, Eligibility, PartnerCenterClient
from shared.validation import UpgradeTarget

log = logging.getLogger(__name__)

Outcome = Literal["created", "existing", "resolved"]

SUCCESS_STATUSES = frozenset({"completed", "complete", "succeeded", "success"})
FAILURE_STATUSES = frozenset({"failed", "failure", "cancelled", "canceled", "error"})


@dataclass(frozen=True)
class Submission:
    upgrade_id: str
    outcome: Outcome


def final_state(upgrade_status: str | None) -> Literal["complete", "failed"] | None:
    """`complete`/`failed` for a final Partner Center status, None while it is still going.

    Partner Center documents no status enum (only "Completed" appears), so values are compared
    case-insensitively and anything unrecognised is treated as not final: we keep polling rather
    than declare an outcome we cannot read.
    """
    value = (upgrade_status or "").strip().casefold()
    if value in SUCCESS_STATUSES:
        return "complete"
    if value in FAILURE_STATUSES:
        return "failed"
    return None


class UpgradeService:
    """The product-upgrade operations, with the exactly-once rules of the module docstring."""

    def __init__(self, partner_center: PartnerCenterClient) -> None:
        self._pc = partner_center

    def submit(self, target: UpgradeTarget, context: CallContext) -> Submission:
        """Create the upgrade (or find the one in place); `context.request_id` is its MS-RequestId."""
        try:
            upgrade_id = self._pc.create_upgrade(target.customer_id, target.product_family, context)
        except AmbiguousCreate as reason:
            log.warning(
                "upgrade.create_ambiguous reason=%s customer_id=%s correlation_id=%s request_id=%s",
                reason,
                target.customer_id,
                context.correlation_id,
                context.request_id,
            )
            return self._resolve_ambiguous(target, context)
        except PartnerCenterRejected as refusal:
            return self._existing_or_raise(target, context, refusal)
        self._log_submitted(target, context, upgrade_id, "created")
        return Submission(upgrade_id, "created")

    def eligibility(self, target: UpgradeTarget, context: CallContext) -> Eligibility:
        return self._pc.eligibility(target.customer_id, target.product_family, context)

    def status(self, upgrade_id: str, target: UpgradeTarget, context: CallContext) -> dict[str, Any]:
        return self._pc.upgrade_status(upgrade_id, target.customer_id, target.product_family, context)

    def _existing_or_raise(self, target: UpgradeTarget, context: CallContext, refusal: UpgradeError) -> Submission:
        """After a refusal, an upgrade already in place is the answer; otherwise the refusal is."""
        if isinstance(refusal, NotEligible):
            raise refusal
        try:
            eligibility = self.eligibility(target, context.next_operation())
        except UpgradeError as error:
            if isinstance(refusal, UpstreamConflict):
                # Partner Center says an upgrade exists but we could not learn its id: that is
                # not a final "no"; retry later (a new create will be refused again, not doubled).
                raise UpstreamError(
                    f"Partner Center reports an upgrade in place but eligibility failed: {error.detail}",
                    extensions=refusal.extensions,
                ) from None
            raise refusal from None
        if eligibility.upgrade_id:
            self._log_submitted(target, context, eligibility.upgrade_id, "existing")
            return Submission(eligibility.upgrade_id, "existing")
        if not eligibility.is_eligible:
            raise NotEligible(
                f"Partner Center says the customer is not eligible: {eligibility.reason or 'no reason given'}",
                extensions=refusal.extensions,
            )
        raise refusal

    def _resolve_ambiguous(self, target: UpgradeTarget, context: CallContext) -> Submission:
        unknown = SubmissionOutcomeUnknown(
            "The create call got no answer and the outcome could not be confirmed. Do not resubmit "
            "blindly: check eligibility (an upgradeId there means the upgrade exists) or retry with "
            "the same request, whose MS-RequestId makes Partner Center treat it as one.",
            extensions={"msRequestId": context.request_id},
        )
        try:
            eligibility = self.eligibility(target, context.next_operation())
        except UpgradeError as error:
            raise _unknown_because(unknown, error) from error
        if eligibility.upgrade_id:
            self._log_submitted(target, context, eligibility.upgrade_id, "resolved")
            return Submission(eligibility.upgrade_id, "resolved")
        if not eligibility.is_eligible:
            raise unknown
        try:  # same context, same MS-RequestId: Partner Center deduplicates it
            upgrade_id = self._pc.create_upgrade(target.customer_id, target.product_family, context)
        except AmbiguousCreate:
            raise unknown from None
        except PartnerCenterRejected as refusal:  # e.g. the first call landed meanwhile: find it
            try:
                return self._existing_or_raise(target, context, refusal)
            except PartnerCenterRejected:
                raise  # a definite "no" (not eligible, ...): nothing was created
            except UpgradeError as error:
                raise _unknown_because(unknown, error) from error
        except UpgradeError as error:
            # Throttled, unavailable, no token for the resend: the first create is still unresolved.
            raise _unknown_because(unknown, error) from error
        self._log_submitted(target, context, upgrade_id, "resolved")
        return Submission(upgrade_id, "resolved")

    @staticmethod
    def _log_submitted(target: UpgradeTarget, context: CallContext, upgrade_id: str, outcome: str) -> None:
        log.info(
            "upgrade.submitted outcome=%s upgrade_id=%s customer_id=%s correlation_id=%s request_id=%s",
            outcome,
            upgrade_id,
            target.customer_id,
            context.correlation_id,
            context.request_id,
        )


def _unknown_because(unknown: SubmissionOutcomeUnknown, cause: UpgradeError) -> SubmissionOutcomeUnknown:
    """`unknown`, asking to wait as long as the error that stopped the resolution asked."""
    unknown.retry_after = cause.retry_after
    return unknown
