"""Accept-then-submit and refresh: the request flow shared by the HTTP API and the operator CLI."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from shared.errors import Conflict, NotFound, UpgradeError
from shared.telemetry.metrics import request_outcome
from shared.upgrade_requests.intake import MAX_WRITE_ROUNDS, Accepted, Intake
from shared.upgrade_requests.processor import RequestProcessor
from shared.upgrade_requests.record import PENDING, SUBMITTED, callback_fields, no_callback, utc_now
from shared.upgrade_requests.store import RequestStore, WriteConflict

if TYPE_CHECKING:
    from shared.upgrade_requests.record import RequestedBy
    from shared.upgrade_requests.store import Stored
    from shared.validation import UpgradeTarget

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """The parts of `shared.runtime.Runtime` a flow uses (the runtime wires this package, so it
    cannot be imported from here)."""

    @property
    def intake(self) -> Intake: ...
    @property
    def processor(self) -> RequestProcessor: ...
    @property
    def store(self) -> RequestStore: ...
    @property
    def owner(self) -> str: ...


def accept_and_submit(
    runtime: Runtime,
    target: UpgradeTarget,
    correlation_id: str,
    key_hash: str,
    *,
    queue: bool,
    callback_url: str | None = None,
    requested_by: RequestedBy | None = None,
) -> Accepted:
    """Store the request (or find the one it replays); unless queued, submit a new one now.
    `requested_by` is stored on a new request; a replay keeps the one who first asked."""
    accepted = runtime.intake.accept(
        target, correlation_id, key_hash, queue=queue, callback_url=callback_url, requested_by=requested_by
    )
    if accepted.replayed:
        if callback_url and accepted.stored.record.callback_url != callback_url:
            return Accepted(set_callback(runtime, accepted.stored.record.request_id, callback_url), replayed=True)
        return accepted
    request_outcome("accepted", accepted.stored.record.product_family)
    if queue:
        return accepted
    # A new inline request is stored as `submitting` under our lease: it is already claimed.
    try:
        return Accepted(runtime.processor.advance(accepted.stored, PENDING).stored, replayed=False)
    except UpgradeError as error:
        # The step's result could not be stored (the store failed, or the answer's deadline ran
        # out). What is durable is the accepted request, `submitting` under our lease: when the
        # lease ends the timer resolves it (eligibility first), so it is answered as it is stored.
        log.warning(
            "request.answered_with_stored_state request_id=%s type=%s",
            accepted.stored.record.request_id,
            error.slug,
        )
        return accepted


def refresh(runtime: Runtime, stored: Stored) -> Stored:
    """A submitted request polled now (under a claim, as the timer would); else as stored. If the
    poll or its write cannot be done in time, the request is shown as it was read."""
    if stored.record.state != SUBMITTED:
        return stored
    try:
        claimed = runtime.processor.claim(stored, runtime.owner)
        if claimed is None:  # the timer (or another caller) is on it right now: show what is stored
            return runtime.store.get(stored.record.request_id) or stored
        return runtime.processor.advance(claimed, SUBMITTED).stored
    except UpgradeError as error:
        log.warning("request.refresh_skipped request_id=%s type=%s", stored.record.request_id, error.slug)
        return stored


def set_callback(runtime: Runtime, request_id: str, url: str | None) -> Stored:
    """Register (or with None remove) the request's completion callback; a request that is
    already final gets its callback delivered now."""
    for _ in range(MAX_WRITE_ROUNDS):
        stored = runtime.store.get(request_id)
        if stored is None:
            raise NotFound(f"No upgrade request {request_id}")
        fields = callback_fields(url, utc_now()) if url else no_callback()
        try:
            saved = runtime.store.replace(stored.record.evolve(**fields), stored.etag)
        except WriteConflict:
            continue
        return runtime.processor.deliver_callback(saved) if url else saved
    raise Conflict("The request kept changing; retry", retry_after=1)
