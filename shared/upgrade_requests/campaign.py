"""Steering one stored request by hand during a campaign: cancel it, or retry it.

Both are ETag-guarded read-decide-write loops over the record (the source of truth), so they
race safely with the timer and with each other:

- cancel: only a request that never sent a create (`pending` and `createMayHaveBeenSent` false)
  becomes `cancelled` (final: lock released, callback fired). Once a create may have reached
  Partner Center, cancelling could leave an upgrade nobody follows: 409 `cannot-cancel`.
- retry: a `failed` request (a `rejected` one only with `force`) is reopened with its attempts
  reset. If a create may have reached Partner Center before, it is reopened as `submitting` with
  an expired lease, which the processor treats as "resolve through eligibility first, then resend
  with the same MS-RequestId": never a blind second create. Otherwise it is `pending` again.
"""

from __future__ import annotations

import logging

from shared.errors import CannotCancel, CannotRetry, Conflict, NotFound
from shared.identifiers import new_guid
from shared.upgrade_requests.flow import Runtime
from shared.upgrade_requests.intake import MAX_WRITE_ROUNDS
from shared.upgrade_requests.record import (
    CANCELLED,
    FAILED,
    PENDING,
    REJECTED,
    SUBMITTING,
    UpgradeRequestRecord,
    callback_fields,
    utc_now,
)
from shared.upgrade_requests.store import Stored, WriteConflict

log = logging.getLogger(__name__)


def cancel(runtime: Runtime, request_id: str) -> Stored:
    """Cancel a request that has not sent a create; `CannotCancel` (409) once one may have been."""
    for _ in range(MAX_WRITE_ROUNDS):
        stored = _get(runtime, request_id)
        record = stored.record
        if record.state == CANCELLED:
            return stored  # idempotent
        if record.is_final:
            raise CannotCancel(
                f"The request is already {record.state}; there is nothing to cancel",
                extensions={"requestId": request_id, "requestStatus": record.state},
            )
        if record.state != PENDING or _create_may_have_been_sent(record):
            raise CannotCancel(
                f"The request is {record.state} and a create may already have reached Partner Center, "
                "so cancelling could leave an upgrade nobody follows. Let it finish (GET shows its "
                "progress), then retry or act on the resulting upgrade in Partner Center",
                extensions={"requestId": request_id, "requestStatus": record.state},
            )
        now = utc_now()
        cancelled = record.evolve(
            state=CANCELLED,
            finished_at=now,
            lease_until=now,
            last_error="Cancelled by an operator",
            last_error_type="cancelled",
        )
        try:
            saved = runtime.store.replace(cancelled, stored.etag)
        except WriteConflict:
            continue  # the timer claimed it (or another operator acted): decide again
        log.info("request.cancelled request_id=%s customer_id=%s", request_id, record.customer_id)
        return runtime.processor.deliver_callback(saved)
    raise Conflict("The request kept changing; retry", retry_after=1)


def retry(runtime: Runtime, request_id: str, *, force: bool = False) -> Stored:
    """Reopen a failed (or, forced, rejected) request under the same exactly-once rules."""
    for _ in range(MAX_WRITE_ROUNDS):
        stored = _get(runtime, request_id)
        record = stored.record
        if record.state not in (FAILED, REJECTED) or (record.state == REJECTED and not force):
            hint = (
                'Partner Center refused it; fix the cause, then retry with {"force": true}'
                if record.state == REJECTED
                else "only failed requests (and rejected ones, with force) can be retried"
            )
            raise CannotRetry(
                f"The request is {record.state}: {hint}",
                extensions={"requestId": request_id, "requestStatus": record.state},
            )
        now = utc_now()
        # An earlier create that produced an upgrade (which then failed) is settled: nothing is left
        # to resolve, and a new create (with a new MS-RequestId) is what the operator asks for.
        settled = record.upgrade_id is not None
        resolve_first = _create_may_have_been_sent(record) and not settled
        reopened = record.evolve(
            state=SUBMITTING if resolve_first else PENDING,
            attempts=0,
            polls=0,
            upgrade_id=None,
            outcome=None,
            upstream_status=None,
            line_items=[],
            error_details=None,
            last_error=None,
            last_error_type=None,
            finished_at=None,
            submitted_at=None,
            next_attempt_at=now,
            lease_until=now,
            lease_owner="",
            reopened_from=record.state,
            create_may_have_been_sent=resolve_first,
            # An earlier create that produced an upgrade (which then failed) is settled: a new
            # create needs a new MS-RequestId, or Partner Center would answer with the old one.
            ms_request_id=new_guid() if record.upgrade_id else record.ms_request_id,
            **(callback_fields(record.callback_url, now) if record.callback_url else {}),
        )
        try:
            saved = runtime.store.reopen(stored, reopened)
        except WriteConflict as conflict:
            if str(conflict) == "lock":
                raise CannotRetry(
                    "The customer has another active request for this product family; wait for it to finish",
                    extensions={"requestId": request_id},
                ) from None
            continue
        log.info(
            "request.retried request_id=%s from_state=%s resolve_first=%s customer_id=%s",
            request_id,
            record.state,
            resolve_first,
            record.customer_id,
        )
        return saved
    raise Conflict("The request kept changing; retry", retry_after=1)


def _create_may_have_been_sent(record: UpgradeRequestRecord) -> bool:
    """The flag, or any sign of an attempt (records stored before the flag existed lack it)."""
    return record.create_may_have_been_sent or record.attempts > 0 or bool(record.upgrade_id)


def _get(runtime: Runtime, request_id: str) -> Stored:
    stored = runtime.store.get(request_id)
    if stored is None:
        raise NotFound(f"No upgrade request {request_id}")
    return stored
