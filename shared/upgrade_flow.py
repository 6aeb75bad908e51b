"""Accept-then-submit and refresh: the request flow shared by the HTTP API and the operator CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .intake import Accepted
from .upgrade_requests import PENDING, SUBMITTED

if TYPE_CHECKING:
    from .request_store import Stored
    from .runtime import Runtime
    from .validation import UpgradeTarget


def accept_and_submit(
    runtime: Runtime, target: UpgradeTarget, correlation_id: str, key_hash: str, *, queue: bool
) -> Accepted:
    """Store the request (or find the one it replays); unless queued, submit a new one now."""
    accepted = runtime.intake.accept(target, correlation_id, key_hash, queue=queue)
    if accepted.replayed or queue:
        return accepted
    # A new inline request is stored as `submitting` under our lease: it is already claimed.
    return Accepted(runtime.processor.advance(accepted.stored, PENDING).stored, replayed=False)


def refresh(runtime: Runtime, stored: Stored) -> Stored:
    """A submitted request polled now (under a claim, as the timer would); else as stored."""
    if stored.record.state != SUBMITTED:
        return stored
    claimed = runtime.processor.claim(stored, runtime.owner)
    if claimed is None:  # the timer (or another caller) is on it right now: show what is stored
        return runtime.store.get(stored.record.request_id) or stored
    return runtime.processor.advance(claimed, SUBMITTED).stored
