"""One run of the timer: claim due requests, advance each once, retry due callbacks, stop in time.

- Bounded concurrency (`PENDING_CONCURRENCY` threads; Partner Center throttles per partner and
  per customer, so more is not faster for long).
- A 429 seen by any worker pauses the whole run until its Retry-After, or ends the run early if
  that is past the run's budget: the throttled requests stay pending with `next_attempt_at`.
- The run ends within `PENDING_RUN_SECONDS`: it is the run's deadline (`shared.deadlines`), so
  every outbound call gets its share of the time left, and each claim is also held to its lease
  (less a margin), so no lease expires while its holder is inside a call. No new claim once less
  than `CLAIM_CUTOFF_SHARE` of the budget is left (at most `CLAIM_CUTOFF_SECONDS`), so a claimed
  request is not started without time to finish; unclaimed work is picked up by the next run.
  A step a slow dependency still holds past the run's end is `interrupted` (a warning, not an
  error): it keeps what it last saved, under its lease, for a later run.
- Before the work: `store.repair()` finishes writes a crash interrupted. After it, retention:
  at most `RETENTION_BATCH` final records older than `REQUEST_RETENTION_DAYS` are deleted (at
  most once an hour while there is nothing more to delete: a marker entity, one point read).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from shared.deadlines import LEASE_MARGIN_SECONDS, deadline
from shared.errors import DeadlineExceeded
from shared.upgrade_requests.processor import RequestProcessor
from shared.upgrade_requests.record import PENDING
from shared.upgrade_requests.store import Stored

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_RUN = 5000
CLAIM_CUTOFF_SHARE = 0.4
CLAIM_CUTOFF_SECONDS = 60.0
RUN_RESERVE_SHARE = 0.1
RETENTION_BATCH = 500
RETENTION_EVERY = timedelta(hours=1)  # unless a run left more to delete: then the next run goes on


@dataclass
class RunReport:
    """What one run did, by resulting state, plus what it could not do."""

    due: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)
    lost_claims: int = 0
    not_started: int = 0
    interrupted: int = 0  # started, but the run's time ended before its result was saved
    repaired: int = 0
    expired_deleted: int = 0
    seconds: float = 0.0
    # The backlog this run found: pending requests due now, and how long the oldest has waited.
    pending_due: int = 0
    oldest_pending_seconds: float | None = None
    campaigns: dict[str, object] = field(default_factory=dict)  # the campaign runner's report

    def as_dict(self) -> dict[str, object]:
        return {
            "due": self.due,
            "outcomes": dict(self.outcomes),
            "callbacks": dict(self.callbacks),
            "lostClaims": self.lost_claims,
            "notStarted": self.not_started,
            "interrupted": self.interrupted,
            "repaired": self.repaired,
            "expiredDeleted": self.expired_deleted,
            "seconds": round(self.seconds, 3),
            "pendingDue": self.pending_due,
            "oldestPendingSeconds": None if self.oldest_pending_seconds is None else round(self.oldest_pending_seconds),
            "campaigns": self.campaigns,
        }


class _ThrottleGate:
    """Shared 'Partner Center asked us to wait until T' across the run's workers."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def pause_until(self, monotonic_deadline: float) -> None:
        with self._lock:
            self._until = max(self._until, monotonic_deadline)

    def wait(self, run_deadline: float) -> bool:
        """Sleep out a pause; False if the pause outlasts the run."""
        with self._lock:
            until = self._until
        if until <= time.monotonic():
            return True
        if until >= run_deadline:
            return False
        time.sleep(until - time.monotonic())
        return True


def process_pending(
    processor: RequestProcessor,
    *,
    owner: str,
    concurrency: int,
    budget_seconds: float,
    thread_initializer: Callable[[], None] | None = None,
    retention_days: int | None = None,
    campaigns: Callable[[float], dict[str, object]] | None = None,
) -> RunReport:
    # A claim's final write is one storage call: a tenth of the run (at most 10 s) is kept for it.
    with deadline(budget_seconds, reserve_share=RUN_RESERVE_SHARE):
        return _run(processor, owner, concurrency, budget_seconds, thread_initializer, retention_days, campaigns)


def _run(
    processor: RequestProcessor,
    owner: str,
    concurrency: int,
    budget_seconds: float,
    thread_initializer: Callable[[], None] | None,
    retention_days: int | None,
    campaigns: Callable[[float], dict[str, object]] | None = None,
) -> RunReport:
    started = time.monotonic()
    run_deadline = started + budget_seconds
    claims_until = run_deadline - min(CLAIM_CUTOFF_SECONDS, CLAIM_CUTOFF_SHARE * budget_seconds)
    # (A lease shorter than twice the margin is a test's: settings allow 60 s at least.)
    lease = processor.policy.lease_seconds
    claim_seconds = lease - LEASE_MARGIN_SECONDS if lease > 2 * LEASE_MARGIN_SECONDS else budget_seconds
    report = RunReport()
    gate = _ThrottleGate()
    lock = threading.Lock()
    report.repaired = processor.store.repair()
    due = processor.store.due(processor.clock(), MAX_REQUESTS_PER_RUN)
    report.due = len(due)
    pending_since = [stored.record.created_at for stored in due if stored.record.state == PENDING]
    report.pending_due = len(pending_since)
    if pending_since:
        report.oldest_pending_seconds = (processor.clock() - min(pending_since)).total_seconds()

    out_of_time = threading.Event()  # a step ran out of time: the rest waits for the next run

    def work(stored: Stored) -> None:
        if out_of_time.is_set() or time.monotonic() >= claims_until or not gate.wait(claims_until):
            with lock:
                report.not_started += 1
            return
        try:
            with deadline(claim_seconds):  # the claim's calls end before its lease does
                claimed = processor.claim(stored, owner)
                if claimed is None:
                    with lock:
                        report.lost_claims += 1
                    return
                step = processor.advance(claimed, stored.record.state)
        except DeadlineExceeded:
            _interrupted(stored)
            return
        result = step.stored.record
        if result.last_error_type == DeadlineExceeded.slug:
            out_of_time.set()
        if step.throttled_for is not None:
            gate.pause_until(time.monotonic() + step.throttled_for)
        with lock:
            report.outcomes[result.state] += 1

    def _interrupted(stored: Stored) -> None:
        """The run's time ended inside a step (a slow dependency used it up), before its result
        could be saved: not an error. The request keeps what was last saved (a claim keeps its
        lease; a create that may have been sent is resolved first by whoever takes it next)."""
        out_of_time.set()
        with lock:
            report.interrupted += 1
        log.warning(
            "pending.step_interrupted owner=%s request_id=%s reason=run-out-of-time "
            "detail=the run's time ended before the step's result was saved; a later run takes it up",
            owner,
            stored.record.request_id,
        )

    callbacks = processor.store.due_callbacks(processor.clock(), MAX_REQUESTS_PER_RUN)

    def deliver(stored: Stored) -> None:
        if time.monotonic() >= claims_until:
            with lock:
                report.not_started += 1
            return
        try:
            state = processor.deliver_callback(stored).record.callback_state or "none"
        except DeadlineExceeded:
            _interrupted(stored)
            return
        with lock:
            report.callbacks[state] += 1

    # Campaign steps are one call each: they may go on until the run's reserve (a paced campaign
    # then works for most of the schedule's interval, not only until the claim cutoff).
    campaigns_until = run_deadline - min(10.0, RUN_RESERVE_SHARE * budget_seconds)
    campaign_thread = _campaign_thread(campaigns, campaigns_until, report, thread_initializer)
    with ThreadPoolExecutor(
        max_workers=concurrency, thread_name_prefix="pending", initializer=thread_initializer
    ) as pool:
        # Each job runs in a copy of this context: the run's deadline holds on the pool's threads.
        jobs = [pool.submit(contextvars.copy_context().run, work, stored) for stored in due] + [
            pool.submit(contextvars.copy_context().run, deliver, stored) for stored in callbacks
        ]
        for future in jobs:
            try:
                future.result()
            except Exception:  # one request's failure must not stop the others
                log.exception("pending.request_failed owner=%s", owner)
                with lock:
                    report.outcomes["error"] += 1
    if retention_days is not None and time.monotonic() < claims_until and not out_of_time.is_set():
        cutoff = processor.clock() - timedelta(days=retention_days)
        report.expired_deleted = processor.store.purge_expired(cutoff, RETENTION_BATCH, at_most_every=RETENTION_EVERY)
    if campaign_thread is not None:
        campaign_thread.join()
    report.seconds = time.monotonic() - started
    log.info(
        "pending.run_summary owner=%s due=%s done=%s left=%s callbacks=%s repaired=%s expired_deleted=%s",
        owner,
        report.due,
        sum(report.outcomes.values()),
        report.not_started + report.lost_claims + report.interrupted,
        sum(report.callbacks.values()),
        report.repaired,
        report.expired_deleted,
    )
    log.info("pending.run_finished owner=%s report=%s", owner, report.as_dict())
    return report


def _campaign_thread(
    campaigns: Callable[[float], dict[str, object]] | None,
    until: float,
    report: RunReport,
    thread_initializer: Callable[[], None] | None,
) -> threading.Thread | None:
    """Campaign work (`shared.upgrade_requests.campaigns.runner`) beside the requests' pool, on a
    thread of its own: its calls are paced (spread over the run, not burst at its start), so it
    must not hold one of the pool's workers. It ends by `until` (the run's reserve)."""
    if campaigns is None:
        return None
    run = campaigns  # narrowed for the closure

    def work() -> None:
        if thread_initializer is not None:
            thread_initializer()
        try:
            report.campaigns = run(until)
        except Exception:  # campaigns must not stop the requests' work
            log.exception("campaigns.run_failed")
            report.campaigns = {"error": True}

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name="pending-campaigns", daemon=True
    )
    thread.start()
    return thread
