"""Moving one stored request one step along its state machine (see `upgrade_requests`).

Used by both the HTTP path (submit right after accepting) and the timer (submit what is pending,
resolve what a crashed worker left in `submitting`, poll what is `submitted`). A worker may only
act on a record it has *claimed*: an ETag-conditional write that sets a lease. If the final write
finds the ETag changed, someone else took the record over after our lease expired; their
resolution (eligibility, then the same MS-RequestId) keeps that from doubling anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.correlation import CallContext, caller_on_log_lines
from shared.errors import (
    ConfigurationError,
    CredentialsUnavailable,
    PartnerCenterRejected,
    ReconsentRequired,
    SubmissionOutcomeUnknown,
    UpgradeError,
    UpstreamThrottled,
)
from shared.partner_center.exactly_once import Submission, UpgradeService, final_state
from shared.telemetry.attributes import STATE_AFTER
from shared.telemetry.metrics import request_outcome
from shared.telemetry.spans import request_step
from shared.upgrade_requests.record import (
    CALLBACK_PENDING,
    COMPLETE,
    FAILED,
    PENDING,
    REJECTED,
    SUBMITTED,
    SUBMITTING,
    UpgradeRequestRecord,
    utc_now,
)
from shared.upgrade_requests.store import RequestStore, Stored, WriteConflict
from shared.validation import UpgradeTarget

log = logging.getLogger(__name__)

# The request outcomes counted when a step moves a request into these states (shared.telemetry.metrics).
OUTCOME_OF_STATE = {SUBMITTED: "submitted", COMPLETE: "completed", FAILED: "failed", REJECTED: "rejected"}

# Errors only an operator can fix: the request waits (attempts are not used up) until they do.
OPERATOR_ERRORS = (ReconsentRequired, CredentialsUnavailable, ConfigurationError)


class CallbackDelivery(Protocol):
    """What the processor needs from the callback sender (`shared.webhooks.callbacks`), which sits
    above this package: deliver a final record and return it with the delivery state recorded."""

    def deliver(self, record: UpgradeRequestRecord) -> UpgradeRequestRecord: ...


@dataclass(frozen=True)
class ProcessingPolicy:
    max_attempts: int = 8
    lease_seconds: int = 300
    poll_interval_seconds: int = 120
    backoff_base_seconds: int = 60
    backoff_max_seconds: int = 3600

    def backoff(self, attempts: int) -> float:
        """Exponential: base, 2·base, 4·base ... capped."""
        return float(min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Advanced:
    """The stored result of one step, and Partner Center's Retry-After if it throttled us."""

    stored: Stored
    throttled_for: int | None


class RequestProcessor:
    def __init__(
        self,
        store: RequestStore,
        upgrades: UpgradeService,
        policy: ProcessingPolicy,
        callbacks: CallbackDelivery | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self._upgrades = upgrades
        self.policy = policy
        self.callbacks = callbacks
        # "Now" for leases and for what is due: tests pass a later clock instead of sleeping out a lease.
        self.clock = clock

    def deliver_callback(self, stored: Stored) -> Stored:
        """Claim the callback (push its next attempt past a lease), send it, record the result."""
        record = stored.record
        if self.callbacks is None or not record.is_final or record.callback_state != CALLBACK_PENDING:
            return stored
        lease = utc_now() + timedelta(seconds=self.policy.lease_seconds)
        try:
            claimed = self.store.replace(record.evolve(callback_next_at=lease), stored.etag)
        except WriteConflict:  # another worker has it
            return self.store.get(record.request_id) or stored
        result = self.callbacks.deliver(claimed.record)
        try:
            return self.store.replace(result, claimed.etag)
        except WriteConflict:
            log.warning("callback.result_not_saved request_id=%s", record.request_id)
            return self.store.get(record.request_id) or claimed

    def claim(self, stored: Stored, owner: str) -> Stored | None:
        """Take the record under a lease (pending becomes submitting); None if someone else did."""
        record = stored.record.leased(owner, self.policy.lease_seconds, now=self.clock())
        if record.state == PENDING:
            record = record.evolve(state=SUBMITTING, create_may_have_been_sent=True)
        try:
            return self.store.replace(record, stored.etag)
        except WriteConflict:
            return None

    def advance(self, claimed: Stored, previous_state: str) -> Advanced:
        """Do the next step for a claimed record and store the result (its log lines name the
        caller who asked, on the timer too: `caller_oid=`)."""
        requested_by = claimed.record.requested_by
        with caller_on_log_lines(requested_by.log_id if requested_by else None), request_step(claimed.record) as step:
            advanced = self._advance(claimed, previous_state)
            result = advanced.stored.record
            step.set({STATE_AFTER: result.state})
            if result.state != claimed.record.state and result.state in OUTCOME_OF_STATE:
                request_outcome(OUTCOME_OF_STATE[result.state], result.product_family)
            return advanced

    def _advance(self, claimed: Stored, previous_state: str) -> Advanced:
        record = claimed.record
        try:
            if record.state == SUBMITTED:
                updated = self._poll(record)
            else:
                # A record that was already `submitting` when claimed was left by a worker that
                # stopped mid-call: Partner Center may have the upgrade, so look before resending.
                updated = self._submit(record, resolve_first=previous_state == SUBMITTING)
        except UpstreamThrottled as throttled:
            if record.state == SUBMITTED:  # a throttled poll is not a failed submission
                updated = self._poll_later(record, throttled)
            else:
                updated = self._retry_later(record, throttled, record.attempts + 1, _retry_state(previous_state))
            return Advanced(self._save(updated, claimed.etag), throttled.retry_after)
        return Advanced(self._save(updated, claimed.etag), None)

    def _submit(self, record: UpgradeRequestRecord, *, resolve_first: bool) -> UpgradeRequestRecord:
        target = UpgradeTarget(record.customer_id, record.product_family)
        context = CallContext(record.correlation_id, record.ms_request_id)
        attempts = record.attempts + 1
        # Until an earlier create's outcome is resolved, every retry must resolve first again:
        # the request stays `submitting` on every error path (never back to a blind `pending`).
        retry_state = SUBMITTING if resolve_first else PENDING
        try:
            submission = self._resolved(target, context) if resolve_first else None
            submission = submission or self._upgrades.submit(target, context)
        except UpstreamThrottled:
            raise  # handled in advance(), which also reports the Retry-After to the run
        except OPERATOR_ERRORS as error:
            return self._wait_for_operator(record, error, retry_state)
        except SubmissionOutcomeUnknown as error:
            # A create may have reached Partner Center: stay `submitting` (never `pending`, never
            # failed by attempt count, the customer's lock kept); when the lease ends, the next
            # worker resolves it, eligibility first (resolve_first).
            if isinstance(error.__cause__, OPERATOR_ERRORS):
                return self._wait_for_operator(record, error.__cause__, SUBMITTING)
            return self._retry_later(record, error, attempts, SUBMITTING)
        except PartnerCenterRejected as error:
            return self._finish(record, REJECTED, error, attempts=attempts)
        except UpgradeError as error:
            return self._retry_later(record, error, attempts, retry_state)
        now = utc_now()
        return record.evolve(
            state=SUBMITTED,
            upgrade_id=submission.upgrade_id,
            outcome=submission.outcome,
            attempts=attempts,
            submitted_at=now,
            next_attempt_at=now + timedelta(seconds=self.policy.poll_interval_seconds),
            lease_until=now,
            last_error=None,
            last_error_type=None,
        )

    def _resolved(self, target: UpgradeTarget, context: CallContext) -> Submission | None:
        eligibility = self._upgrades.eligibility(target, context.next_operation())
        if eligibility.upgrade_id:
            log.info(
                "request.resolved_existing upgrade_id=%s customer_id=%s correlation_id=%s",
                eligibility.upgrade_id,
                target.customer_id,
                context.correlation_id,
            )
            return Submission(eligibility.upgrade_id, "resolved")
        return None

    def _poll(self, record: UpgradeRequestRecord) -> UpgradeRequestRecord:
        target = UpgradeTarget(record.customer_id, record.product_family)
        now = utc_now()
        try:
            status = self._upgrades.status(record.upgrade_id or "", target, CallContext.new(record.correlation_id))
        except UpstreamThrottled:
            raise
        except UpgradeError as error:
            return self._poll_later(record, error)
        upstream = status.get("status") if isinstance(status.get("status"), str) else None
        line_items = _list_of_dicts(status.get("lineItems"))
        error_details = status.get("errorDetails") if isinstance(status.get("errorDetails"), dict) else None
        polled = record.evolve(
            polls=record.polls + 1,
            upstream_status=upstream,
            line_items=line_items,
            error_details=error_details,
            last_error=None,
            last_error_type=None,
            lease_until=now,
            next_attempt_at=now + timedelta(seconds=self.policy.poll_interval_seconds),
        )
        state = final_state(upstream)
        if state is None:
            return polled
        if state == COMPLETE:
            return polled.evolve(state=COMPLETE, finished_at=now)
        reason = _error_text(error_details) or f"Partner Center reports the upgrade as {upstream}"
        return polled.evolve(state=FAILED, finished_at=now, last_error=reason, last_error_type="upgrade-failed")

    def _poll_later(self, record: UpgradeRequestRecord, error: UpgradeError) -> UpgradeRequestRecord:
        """A status poll failed: keep the request submitted and poll again later."""
        now = utc_now()
        delay = max(self.policy.poll_interval_seconds, error.retry_after or 0)
        return record.evolve(
            polls=record.polls + 1,
            last_error=error.detail,
            last_error_type=error.slug,
            next_attempt_at=now + timedelta(seconds=delay),
            lease_until=now,
        )

    def _retry_later(
        self, record: UpgradeRequestRecord, error: UpgradeError, attempts: int, state: str
    ) -> UpgradeRequestRecord:
        # A `submitting` request may have an upgrade at Partner Center: it is never given up as
        # failed (that would release the customer and stop looking); it keeps resolving, backed off.
        if attempts >= self.policy.max_attempts and state != SUBMITTING:
            detail = f"Gave up after {attempts} attempts; last error: {error.detail}"
            return self._finish(record, FAILED, error, attempts=attempts, detail=detail)
        now = utc_now()
        delay = max(self.policy.backoff(attempts), float(error.retry_after or 0))
        return record.evolve(
            state=state,
            attempts=attempts,
            last_error=error.detail,
            last_error_type=error.slug,
            next_attempt_at=now + timedelta(seconds=delay),
            lease_until=now + timedelta(seconds=delay) if state == SUBMITTING else now,
        )

    def _wait_for_operator(self, record: UpgradeRequestRecord, error: UpgradeError, state: str) -> UpgradeRequestRecord:
        now = utc_now()
        later = now + timedelta(seconds=self.policy.backoff_max_seconds / 4)
        log.error(
            "request.waiting_for_operator request_id=%s type=%s detail=%s", record.request_id, error.slug, error.detail
        )
        return record.evolve(
            state=state,
            last_error=error.detail,
            last_error_type=error.slug,
            next_attempt_at=later,
            lease_until=later if state == SUBMITTING else now,
        )

    def _finish(
        self, record: UpgradeRequestRecord, state: str, error: UpgradeError, *, attempts: int, detail: str | None = None
    ) -> UpgradeRequestRecord:
        now = utc_now()
        return record.evolve(
            state=state,
            attempts=attempts,
            last_error=detail or error.detail,
            last_error_type=error.slug,
            error_details=record.error_details or _problem_extensions(error),
            finished_at=now,
            lease_until=now,
        )

    def _save(self, record: UpgradeRequestRecord, etag: str) -> Stored:
        try:
            saved = self.store.replace(record, etag)
        except WriteConflict:
            log.warning("request.lease_lost request_id=%s state=%s", record.request_id, record.state)
            current = self.store.get(record.request_id)
            if current is None:
                raise
            return current
        if record.is_final:  # the store released the customer's lock when it stored the record final
            saved = self.deliver_callback(saved)
        log.info(
            "request.advanced request_id=%s state=%s upgrade_id=%s customer_id=%s correlation_id=%s attempts=%s",
            record.request_id,
            record.state,
            record.upgrade_id,
            record.customer_id,
            record.correlation_id,
            record.attempts,
        )
        return saved


def _retry_state(previous_state: str) -> str:
    """Where a failed attempt leaves the request: still resolving if it was, else pending.

    `pending` only when no create may have reached Partner Center: a first create that was
    definitely refused or never sent. After an ambiguous create the upgrade service raises
    `SubmissionOutcomeUnknown` whatever stopped the resolution (see `exactly_once`), which
    `_submit` keeps `submitting`."""
    return SUBMITTING if previous_state == SUBMITTING else PENDING


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _error_text(details: dict[str, Any] | None) -> str | None:
    if not details:
        return None
    code = details.get("code")
    message = details.get("message") or details.get("description")
    return " ".join(str(part) for part in (code, message) if part) or None


def _problem_extensions(error: UpgradeError) -> dict[str, Any] | None:
    """What Partner Center said when it refused (its status and error code), kept on the record."""
    details = {
        "code": error.extensions.get("partnerCenterErrorCode"),
        "partnerCenterStatus": error.extensions.get("partnerCenterStatus"),
        "message": error.detail,
    }
    return {key: value for key, value in details.items() if value is not None}
