"""The timer's campaign work: one run over the campaigns with work, within the run's time.

Per campaign named in `campaigns-active` (one point read of its row):

1. Storage-only work, not paced: follow members whose request is due a look (a point read of
   the request in the request store: no Partner Center call), turn members of a cancelled
   campaign that were not requested yet into `cancelled`.
2. Paced work, one Partner Center call (or one request accepted) per slot of `pace`: a page of
   the partner's customers (`source: partner-center`, resumed from the saved next link), the
   eligibility of a `pending` member, or (campaign `running`) the request of an `eligible`
   member through the same intake as `POST /api/product-upgrades`, with the idempotency key
   `campaign:{campaignId}:{customerId}:{productFamily}`. Campaigns take turns by their next slot.
3. The campaign's state follows its counts: `assessing` -> `ready` (-> `running` with
   `autoStart`) -> `complete`; a campaign with nothing left leaves `campaigns-active`.

Each member transition is one transaction with the campaign's counts and pace (see the store),
so a crash anywhere loses nothing: a queue entry is deleted only with the work it stands for.
A request accepted just before a crash is found again through its idempotency key.

Reads follow the work: the head of a queue, `top` = the calls that fit in the run's time at the
campaign's pace; a chunk of staged ids is expanded only when the assess queue runs short.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.correlation import CallContext
from shared.errors import Conflict, PartnerCenterRejected, UpgradeError, UpstreamThrottled
from shared.identifiers import new_guid
from shared.partner_center.client import PartnerCenterClient
from shared.partner_center.customers import NextLink, customer_pages
from shared.upgrade_requests.campaigns import pace
from shared.upgrade_requests.campaigns.model import (
    ALREADY_UPGRADED,
    ASSESS,
    ASSESSING,
    ASSESSMENT_FAILED,
    CAMPAIGN_FINAL,
    CANCELLED,
    COMPLETE,
    ELIGIBLE,
    FOLLOW,
    INELIGIBLE,
    MEMBER_CANCELLED,
    MEMBER_FINAL,
    PENDING,
    READY,
    REQUESTED,
    RUNNING,
    START,
    Campaign,
)
from shared.upgrade_requests.intake import Intake, idempotency_key_hash
from shared.upgrade_requests.record import FINAL_STATES, UpgradeRequestRecord, utc_now
from shared.upgrade_requests.store import RequestStore
from shared.upgrade_requests.store.campaigns import (
    CampaignStore,
    MemberChange,
    QueueEntry,
    StoredCampaign,
    StoredMember,
    queue_row,
)
from shared.upgrade_requests.store.table import WriteConflict
from shared.validation import UpgradeTarget

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 30.0  # how often a member looks at its request again
FOLLOW_BATCH = 200
DRAIN_BATCH = 30  # members cancelled per transaction (3 operations each, and the campaign)
MAX_ASSESS_ATTEMPTS = 3
MAX_BUFFER = 500
ORPHAN_SECONDS = 60  # an active entry naming no campaign this long was left by a crashed create
WRITE_ROUNDS = 5


@dataclass
class CampaignRunReport:
    campaigns: int = 0
    calls: int = 0
    throttled: int = 0
    assessed: Counter[str] = field(default_factory=Counter)
    requested: int = 0
    followed: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    expanded_chunks: int = 0
    discovered_pages: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "campaigns": self.campaigns,
            "calls": self.calls,
            "throttled": self.throttled,
            "assessed": dict(self.assessed),
            "requested": self.requested,
            "followed": dict(self.followed),
            "cancelled": self.cancelled,
            "expandedChunks": self.expanded_chunks,
            "discoveredPages": self.discovered_pages,
        }


@dataclass
class _Work:
    stored: StoredCampaign
    buffer: list[QueueEntry] = field(default_factory=list)
    buffer_queue: str = ""
    queue_dry: bool = False  # the last read of the queue found fewer entries than asked
    skipped: set[str] = field(default_factory=set)  # customers not to retry in this run
    done: bool = False  # nothing more this run

    @property
    def campaign(self) -> Campaign:
        return self.stored.campaign

    @property
    def campaign_id(self) -> str:
        return self.stored.campaign.campaign_id


class CampaignRunner:
    def __init__(
        self,
        store: CampaignStore,
        requests: RequestStore,
        intake: Intake,
        partner_center: PartnerCenterClient,
        *,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        follow_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._requests = requests
        self._intake = intake
        self._pc = partner_center
        self._clock = clock
        self._sleep = sleep
        self._follow_seconds = follow_seconds
        self._gate: datetime | None = None  # a 429 pauses every campaign's calls until then
        self._steps_left: int | None = None

    def run(self, until: float, max_steps: int | None = None) -> CampaignRunReport:
        """Work until the monotonic time `until` or until nothing is left that may go now (at most
        `max_steps` paced steps: a benchmark's or a test's fixed amount of work)."""
        report = CampaignRunReport()
        works = self._load()
        report.campaigns = len(works)
        for work in works:
            self._storage_work(work, report, until)
            self._settle(work)
        self._steps_left = max_steps
        steps = 0
        while time.monotonic() < until and (max_steps is None or steps < max_steps):
            steps += 1
            self._steps_left = None if max_steps is None else max_steps - steps + 1
            chosen = self._next(works)
            if chosen is None:
                break
            wait = (self._slot(chosen.campaign) - self._clock()).total_seconds()
            if time.monotonic() + max(0.0, wait) >= until:
                break
            if wait > 0:
                self._sleep(wait)
            self._paced_step(chosen, report, until)
        for work in works:
            self._settle(work)
            self._log_progress(work)
        if works:
            log.info("campaigns.run_finished report=%s", report.as_dict())
        return report

    # --- loading and settling ---------------------------------------------------------------------

    def _load(self) -> list[_Work]:
        works = []
        now = self._clock()
        for campaign_id, written_at, etag in self._store.active():
            stored = self._store.get(campaign_id)
            if stored is None:
                if now - written_at > timedelta(seconds=ORPHAN_SECONDS):
                    self._store.drop_active(campaign_id, etag)
                continue
            works.append(_Work(stored))
        return works

    def _settle(self, work: _Work) -> None:
        """The campaign's state from its counts; leave `campaigns-active` when nothing is left."""
        for _ in range(WRITE_ROUNDS):
            campaign = work.campaign
            updated = _settled(campaign, self._clock())
            if updated is None:
                break
            try:
                work.stored = self._store.replace(updated, work.stored.etag)
                log.info("campaign.state campaign_id=%s state=%s", campaign.campaign_id, updated.state)
            except WriteConflict:
                if not self._reload(work):
                    return
        campaign = work.campaign
        if campaign.state in CAMPAIGN_FINAL and campaign.open_members == 0 and campaign.staged_everything:
            self._store.drop_active(campaign.campaign_id)

    def _log_progress(self, work: _Work) -> None:
        """One line per campaign per run: what the workbook's campaign view charts."""
        campaign = work.campaign
        done = sum(campaign.count(state) for state in MEMBER_FINAL)
        log.info(
            "campaign.progress campaign_id=%s name=%s state=%s done=%d total=%d asked_per_hour=%d "
            "allowed_per_hour=%.1f achieved_last_hour=%d throttles=%d",
            campaign.campaign_id,
            campaign.name.replace(" ", "_")[:60],
            campaign.state,
            done,
            campaign.members,
            campaign.per_hour,
            pace.rate(campaign),
            pace.achieved_last_hour(campaign, self._clock()),
            campaign.pace.throttles,
        )

    def _reload(self, work: _Work) -> bool:
        stored = self._store.get(work.campaign_id)
        if stored is None:
            work.done = True
            return False
        changed = stored.etag != work.stored.etag
        work.stored = stored
        return changed

    # --- storage-only work -----------------------------------------------------------------------

    def _storage_work(self, work: _Work, report: CampaignRunReport, until: float) -> None:
        self._follow_requests(work, report)
        if work.campaign.state == CANCELLED:
            self._drain(work, report, until)

    def _follow_requests(self, work: _Work, report: CampaignRunReport) -> None:
        if work.campaign.count(REQUESTED) == 0:
            return
        now = self._clock()
        entries = self._store.queue(work.campaign_id, FOLLOW, FOLLOW_BATCH, due_by=now)
        if not entries:
            return
        members = self._store.members(work.campaign_id, [entry.customer_id for entry in entries])
        changes: list[tuple[MemberChange, str, str]] = []
        for entry, stored in zip(entries, members, strict=True):
            if stored is None or stored.member.queue_row != entry.row or not stored.member.request_id:
                continue
            request = self._requests.get(stored.member.request_id)
            member = stored.member
            if request is not None and request.record.is_final:
                record = request.record
                final = member.evolve(
                    state=record.state,
                    upgrade_id=record.upgrade_id or member.upgrade_id,
                    last_error=record.last_error,
                    finished_at=record.finished_at or now,
                    queue_row=None,
                    updated_at=now,
                )
                changes.append((MemberChange(final, stored.etag, [entry]), REQUESTED, record.state))
                report.followed[record.state] += 1
            else:
                follow = FOLLOW_SECONDS if self._follow_seconds is None else self._follow_seconds
                row = queue_row(FOLLOW, member.customer_id, now + timedelta(seconds=follow))
                if row == entry.row:
                    continue  # due again at once: nothing to rewrite
                again = member.evolve(queue_row=row)
                changes.append((MemberChange(again, stored.etag, [entry], row), REQUESTED, REQUESTED))
        self._apply_batches(work, changes, now)

    def _drain(self, work: _Work, report: CampaignRunReport, until: float) -> None:
        """Members of a cancelled campaign that were never requested become `cancelled`."""
        while time.monotonic() < until:
            if work.campaign.count(PENDING) == 0 and work.campaign.count(ELIGIBLE) == 0:
                return
            entries = self._store.queue(work.campaign_id, ASSESS, DRAIN_BATCH)
            entries += self._store.queue(work.campaign_id, START, DRAIN_BATCH - len(entries))
            if not entries:
                if not self._expand_next(work, report):
                    return
                continue
            now = self._clock()
            members = self._store.members(work.campaign_id, [entry.customer_id for entry in entries])
            changes = []
            for entry, stored in zip(entries, members, strict=True):
                if stored is None or stored.member.queue_row != entry.row:
                    continue
                member = stored.member
                cancelled = member.evolve(state=MEMBER_CANCELLED, queue_row=None, finished_at=now, updated_at=now)
                changes.append((MemberChange(cancelled, stored.etag, [entry]), member.state, MEMBER_CANCELLED))
            if not self._apply_batches(work, changes, now):
                return
            report.cancelled += len(changes)

    def _apply_batches(self, work: _Work, changes: list[tuple[MemberChange, str, str]], now: datetime) -> bool:
        """Write the transitions, up to a transaction's worth at a time, with the campaign's counts."""
        batch: list[tuple[MemberChange, str, str]] = []
        used = 1
        for item in changes:
            if used + item[0].operations > 100:
                if not self._apply(work, batch, now):
                    return False
                batch, used = [], 1
            batch.append(item)
            used += item[0].operations
        return not batch or self._apply(work, batch, now)

    def _apply(self, work: _Work, batch: list[tuple[MemberChange, str, str]], now: datetime) -> bool:
        for _ in range(WRITE_ROUNDS):
            campaign = work.campaign
            for _change, before, after in batch:
                campaign = campaign.moved(before, after)
            campaign = campaign.evolve(updated_at=now)
            try:
                work.stored = self._store.apply(work.stored, campaign, [change for change, _, _ in batch])
                return True
            except WriteConflict:
                if not self._reload(work):  # the campaign did not change: a member or entry did
                    log.warning("campaign.transition_conflict campaign_id=%s", work.campaign_id)
                    return False
        return False

    # --- paced work ---------------------------------------------------------------------------------

    def _slot(self, campaign: Campaign) -> datetime:
        slot = pace.next_slot(campaign, self._clock())
        return max(slot, self._gate) if self._gate is not None else slot

    def _next(self, works: list[_Work]) -> _Work | None:
        candidates = [work for work in works if not work.done and self._has_paced_work(work)]
        return min(candidates, key=lambda work: self._slot(work.campaign), default=None)

    def _has_paced_work(self, work: _Work) -> bool:
        campaign = work.campaign
        if campaign.state == ASSESSING:
            return not campaign.discovery_done or campaign.count(PENDING) > 0
        if campaign.state == RUNNING:
            return campaign.count(ELIGIBLE) > 0
        return False

    def _paced_step(self, work: _Work, report: CampaignRunReport, until: float) -> None:
        campaign = work.campaign
        if campaign.state == ASSESSING and not campaign.discovery_done:
            self._discover(work, report)
            return
        queue = ASSESS if campaign.state == ASSESSING else START
        entry = self._take(work, queue, report, until)
        if entry is None:
            work.done = True
            return
        stored = self._store.member(work.campaign_id, entry.customer_id)
        if stored is None or stored.member.queue_row != entry.row:
            return  # a stale entry (its work was done): left for a later look, no call spent
        if queue == ASSESS:
            self._assess(work, entry, stored, report)
        else:
            self._request(work, entry, stored, report)

    def _take(self, work: _Work, queue: str, report: CampaignRunReport, until: float) -> QueueEntry | None:
        """The next entry of the queue, read ahead as many as the run's time allows at the pace."""
        while True:
            if work.buffer_queue != queue:
                work.buffer, work.buffer_queue, work.queue_dry = [], queue, False
            while work.buffer:
                entry = work.buffer.pop(0)
                if entry.customer_id not in work.skipped:
                    return entry
            if work.queue_dry and not (queue == ASSESS and self._expand_next(work, report)):
                return None
            seconds_left = max(0.0, until - time.monotonic())
            want = min(MAX_BUFFER, math.ceil(seconds_left * pace.rate(work.campaign) / 3600) + 1)
            if self._steps_left is not None:
                want = min(want, self._steps_left)
            entries = [e for e in self._store.queue(work.campaign_id, queue, want + len(work.skipped))]
            work.buffer = [e for e in entries if e.customer_id not in work.skipped]
            work.queue_dry = len(entries) < want + len(work.skipped)
            if not work.buffer and work.queue_dry and not (queue == ASSESS and self._expand_next(work, report)):
                return None

    def _expand_next(self, work: _Work, report: CampaignRunReport) -> bool:
        """Expand the next staged chunk into members; False when there is none."""
        campaign = work.campaign
        n = campaign.chunks_expanded
        if n >= campaign.chunks:
            return False
        ids = self._store.chunk(work.campaign_id, n) or []
        expansion = self._store.expand(work.campaign_id, n, ids, ASSESS)
        for _ in range(WRITE_ROUNDS):
            campaign = work.campaign
            duplicates = expansion.duplicates
            counts = dict(campaign.counts)
            counts[PENDING] = counts.get(PENDING, 0) - duplicates
            updated = campaign.evolve(
                chunks_expanded=n + 1,
                members=campaign.members - duplicates,
                duplicates=campaign.duplicates + duplicates,
                counts=counts,
                updated_at=self._clock(),
            )
            try:
                work.stored = self._store.finish_chunk(work.stored, updated, n)
                report.expanded_chunks += 1
                work.queue_dry = False
                return True
            except WriteConflict:
                self._reload(work)
        return False

    def _call_context(self, campaign: Campaign) -> CallContext:
        return CallContext.new(new_guid())

    def _throttled(self, work: _Work, error: UpstreamThrottled, report: CampaignRunReport) -> None:
        now = self._clock()
        retry_after = error.retry_after or 30
        report.throttled += 1
        report.calls += 1
        self._gate = max(self._gate or now, now + timedelta(seconds=retry_after))
        log.warning(
            "campaign.throttled campaign_id=%s retry_after=%s rate_before=%.1f",
            work.campaign_id,
            retry_after,
            pace.rate(work.campaign),
        )
        for _ in range(WRITE_ROUNDS):
            updated = work.campaign.evolve(pace=pace.after_throttle(work.campaign, now, retry_after), updated_at=now)
            try:
                work.stored = self._store.replace(updated, work.stored.etag)
                return
            except WriteConflict:
                self._reload(work)

    def _discover(self, work: _Work, report: CampaignRunReport) -> None:
        from shared.partner_center.customers import first_page

        campaign = work.campaign
        link = (
            NextLink.from_dict(campaign.discovery_next)
            if campaign.discovery_next
            else first_page(campaign.company_name_prefix)
        )
        now = self._clock()
        try:
            page = next(customer_pages(self._pc, self._call_context(campaign), resume=link))
        except UpstreamThrottled as error:
            self._throttled(work, error, report)
            return
        except UpgradeError as error:
            report.calls += 1
            log.warning("campaign.discovery_failed campaign_id=%s type=%s", work.campaign_id, error.slug)
            self._save_error(work, now, f"Listing the partner's customers failed: {error.detail}")
            work.done = True
            return
        report.calls += 1
        report.discovered_pages += 1
        ids = [customer.id for customer in page.customers]
        for _ in range(WRITE_ROUNDS):
            campaign = work.campaign
            counts = dict(campaign.counts)
            counts[PENDING] = counts.get(PENDING, 0) + len(ids)
            updated = campaign.evolve(
                discovery_next=page.next.as_dict() if page.next else None,
                discovery_done=page.next is None,
                discovery_pages=campaign.discovery_pages + 1,
                chunks=campaign.chunks + (1 if ids else 0),
                members=campaign.members + len(ids),
                counts=counts,
                pace=pace.after_call(campaign, now),
                updated_at=now,
                last_error=None,
            )
            try:
                if ids:
                    work.stored = self._store.stage_chunk(work.stored, updated, ids)
                else:
                    work.stored = self._store.replace(updated, work.stored.etag)
                return
            except WriteConflict:
                self._reload(work)

    def _save_error(self, work: _Work, now: datetime, message: str) -> None:
        for _ in range(WRITE_ROUNDS):
            updated = work.campaign.evolve(last_error=message, pace=pace.after_call(work.campaign, now), updated_at=now)
            try:
                work.stored = self._store.replace(updated, work.stored.etag)
                return
            except WriteConflict:
                self._reload(work)

    def _assess(self, work: _Work, entry: QueueEntry, stored: StoredMember, report: CampaignRunReport) -> None:
        campaign = work.campaign
        member = stored.member
        now = self._clock()
        target = UpgradeTarget(member.customer_id, campaign.product_family)
        try:
            eligibility = self._pc.eligibility(target.customer_id, target.product_family, self._call_context(campaign))
        except UpstreamThrottled as error:
            self._throttled(work, error, report)
            work.buffer.insert(0, entry)
            return
        except UpgradeError as error:
            report.calls += 1
            attempts = member.attempts + 1
            if attempts < MAX_ASSESS_ATTEMPTS and not isinstance(error, PartnerCenterRejected):
                work.skipped.add(member.customer_id)  # tried again in a later run
                again = member.evolve(attempts=attempts, last_error=error.detail, updated_at=now)
                self._paced_apply(work, [(MemberChange(again, stored.etag), PENDING, PENDING)], now)
                return
            failed = member.evolve(
                state=ASSESSMENT_FAILED,
                attempts=attempts,
                last_error=error.detail,
                assessed_at=now,
                finished_at=now,
                queue_row=None,
                updated_at=now,
            )
            report.assessed[ASSESSMENT_FAILED] += 1
            self._paced_apply(work, [(MemberChange(failed, stored.etag, [entry]), PENDING, ASSESSMENT_FAILED)], now)
            return
        report.calls += 1
        join = None
        if eligibility.upgrade_id and not eligibility.is_eligible:
            state = ALREADY_UPGRADED
        elif eligibility.is_eligible:
            state = ELIGIBLE
            join = queue_row(START, member.customer_id)
        else:
            state = INELIGIBLE
        assessed = member.evolve(
            state=state,
            reason=eligibility.reason,
            upgrade_id=eligibility.upgrade_id,
            attempts=member.attempts + 1,
            last_error=None,
            assessed_at=now,
            finished_at=None if state == ELIGIBLE else now,
            queue_row=join,
            updated_at=now,
        )
        report.assessed[state] += 1
        self._paced_apply(work, [(MemberChange(assessed, stored.etag, [entry], join), PENDING, state)], now)

    def _request(self, work: _Work, entry: QueueEntry, stored: StoredMember, report: CampaignRunReport) -> None:
        campaign = work.campaign
        member = stored.member
        now = self._clock()
        key = f"campaign:{campaign.campaign_id}:{member.customer_id}:{campaign.product_family}"
        try:
            accepted = self._intake.accept(
                UpgradeTarget(member.customer_id, campaign.product_family),
                new_guid(),
                idempotency_key_hash(key),
                queue=True,
                requested_by=campaign.requested_by,
            )
        except (Conflict, UpgradeError) as error:
            log.warning("campaign.request_not_accepted campaign_id=%s type=%s", campaign.campaign_id, error.slug)
            work.skipped.add(member.customer_id)
            return
        record: UpgradeRequestRecord = accepted.stored.record
        report.requested += 1
        if record.state in FINAL_STATES:  # a replay of a request that already ended
            done = member.evolve(
                state=record.state,
                request_id=record.request_id,
                upgrade_id=record.upgrade_id,
                requested_at=now,
                finished_at=record.finished_at or now,
                queue_row=None,
                updated_at=now,
            )
            self._paced_apply(work, [(MemberChange(done, stored.etag, [entry]), ELIGIBLE, record.state)], now)
            return
        row = queue_row(FOLLOW, member.customer_id, now)
        requested = member.evolve(
            state=REQUESTED, request_id=record.request_id, requested_at=now, queue_row=row, updated_at=now
        )
        self._paced_apply(work, [(MemberChange(requested, stored.etag, [entry], row), ELIGIBLE, REQUESTED)], now)

    def _paced_apply(self, work: _Work, batch: list[tuple[MemberChange, str, str]], now: datetime) -> None:
        """A paced step's transition with the campaign's pace after its call, in one transaction."""
        for _ in range(WRITE_ROUNDS):
            campaign = work.campaign
            for _change, before, after in batch:
                campaign = campaign.moved(before, after)
            campaign = campaign.evolve(pace=pace.after_call(work.campaign, now), updated_at=now)
            try:
                work.stored = self._store.apply(work.stored, campaign, [change for change, _, _ in batch])
                return
            except WriteConflict:
                if not self._reload(work):
                    log.warning("campaign.transition_conflict campaign_id=%s", work.campaign_id)
                    work.skipped.update(change.member.customer_id for change, _, _ in batch)
                    return


def _settled(campaign: Campaign, now: datetime) -> Campaign | None:
    """The campaign moved to the state its counts call for; None when it stays."""
    if campaign.state == CANCELLED and not campaign.discovery_done:
        return campaign.evolve(discovery_done=True, discovery_next=None, updated_at=now)  # list no more
    if not campaign.staged_everything:
        return None
    if campaign.state == ASSESSING and campaign.count(PENDING) == 0:
        state = RUNNING if campaign.auto_start else READY
        return campaign.evolve(state=state, updated_at=now)
    if campaign.state == READY and campaign.auto_start:
        return campaign.evolve(state=RUNNING, updated_at=now)
    if campaign.state == RUNNING and campaign.open_members == 0:
        return campaign.evolve(state=COMPLETE, finished_at=now, updated_at=now)
    if campaign.state == CANCELLED and campaign.open_members == 0 and campaign.finished_at is None:
        return campaign.evolve(finished_at=now, updated_at=now)
    return None
