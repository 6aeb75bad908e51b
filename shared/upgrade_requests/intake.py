"""Accepting an upgrade request: stored before anything is sent, and never twice.

Order of writes (each an atomic insert-if-absent or an ETag-guarded replace):

1. `Idempotency-Key` (if sent): insert key -> new request id, bound to the body's fingerprint.
   Key already there: same body -> the request it names (replay); other body -> 422.
   A key names only a request its own POST created, and lives as long as that request.
2. Active lock for customer + product family AND the record, in one entity-group transaction
   (they share the customer's partition, see `store`): the record as `submitting` under a lease
   when it will be submitted now (the lease is the claim: the timer will not touch it until the
   lease ends), or `pending` when queued. Lock already held by an active request -> that request
   is the answer (replay), so concurrent callers without a key still get one upgrade. A lock left
   pointing at a final or missing request is stale: removed.

A key without its record is an intake in progress, or one that crashed between steps 1 and 2.
While it is younger than `takeover_after_seconds` (longer than any intake may take: the answer's
deadline and a margin), a replay looks again a few times (the record normally follows within
milliseconds), then answers 409 + Retry-After, having written nothing. Older, a replay takes
the key over for a NEW request id (ETag-guarded), never the old id: a slow first intake that wakes
up later can then only write its own id, and it checks the key after writing and withdraws a record
the key no longer names (an outside review showed that reusing the old id let a slow intake bring
back a request an operator had cancelled meanwhile, or store it without its lock).
When the customer already has an active request, that request is the answer and the POST's key is
deleted (it created nothing): a replay is answered by the lock again while that request is active.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from shared.errors import Conflict, IdempotencyKeyReused, InvalidRequest
from shared.identifiers import new_guid
from shared.upgrade_requests.record import PENDING, SUBMITTING, RequestedBy, body_fingerprint, new_record, utc_now
from shared.upgrade_requests.store import Pointer, RequestStore, Stored, WriteConflict, new_request_id
from shared.validation import UpgradeTarget

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_WRITE_ROUNDS = 10
STALE_LOCK_SECONDS = 60  # a lock with no record for this long was left by a crashed intake


@dataclass(frozen=True)
class Accepted:
    stored: Stored
    replayed: bool


def idempotency_key_hash(key: str | None) -> str:
    """sha256 of the caller's key ('' when none); the raw key is never stored or logged."""
    if key is None:
        return ""
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
            extensions={"header": "Idempotency-Key"},
        )
    return hashlib.sha256(key.encode()).hexdigest()


class Intake:
    def __init__(
        self, store: RequestStore, owner: str, lease_seconds: int, takeover_after_seconds: float = 160
    ) -> None:
        self._store = store
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._takeover_after = timedelta(seconds=takeover_after_seconds)
        # An intake this slow re-reads its key after writing: well before anyone may take it over.
        self._recheck_after = takeover_after_seconds / 4

    def accept(
        self,
        target: UpgradeTarget,
        correlation_id: str,
        key_hash: str,
        *,
        queue: bool,
        callback_url: str | None = None,
        requested_by: RequestedBy | None = None,
    ) -> Accepted:
        fingerprint = body_fingerprint(target.customer_id, target.product_family)
        request_id = new_request_id(target.customer_id)
        started = time.monotonic()
        for _ in range(MAX_WRITE_ROUNDS):
            if key_hash:
                named = self._claim_key(key_hash, request_id, fingerprint)
                if named is not None and named.request_id != request_id:
                    replay = self._store.get(named.request_id)
                    if replay is not None:
                        return Accepted(replay, replayed=True)
                    if not self._take_over(key_hash, named, request_id):
                        continue  # the key changed meanwhile: read it again
            record = new_record(
                request_id,
                target.customer_id,
                target.product_family,
                correlation_id,
                ms_request_id=new_guid(),
                state=PENDING if queue else SUBMITTING,
                idempotency_key_hash=key_hash,
                queued=queue,
                lease_owner="" if queue else self._owner,
                lease_seconds=0 if queue else self._lease_seconds,
                callback_url=callback_url,
                requested_by=requested_by,
            )
            try:
                stored = self._store.create_with_lock(record)
            except WriteConflict as conflict:
                if str(conflict) == "record":  # our id exists: only our own earlier write can be it
                    current = self._store.get(request_id)
                    if current is None:
                        continue
                    return Accepted(current, replayed=True)
                active = self._lock_holder(target, request_id, key_hash)
                if active is not None:
                    return Accepted(active, replayed=True)
                continue  # a stale lock was removed or a race lost: go round again
            if key_hash and time.monotonic() - started >= self._recheck_after:
                withdrawn = self._withdraw_if_key_moved(key_hash, stored)
                if withdrawn is not None:
                    return withdrawn
            log.info(
                "request.accepted request_id=%s state=%s customer_id=%s product_family=%s correlation_id=%s "
                "queued=%s requested_by_kind=%s requested_by_oid=%s requested_by_app=%s auth_method=%s",
                request_id,
                record.state,
                target.customer_id,
                target.product_family,
                correlation_id,
                queue,
                requested_by.kind if requested_by else None,
                requested_by.object_id if requested_by else None,
                requested_by.app_id if requested_by else None,
                requested_by.auth_method if requested_by else None,
            )
            return Accepted(stored, replayed=False)
        raise Conflict(
            "Another request for this customer and product family is being accepted right now; retry shortly",
            retry_after=1,
        )

    def _claim_key(self, key_hash: str, request_id: str, fingerprint: str) -> Pointer | None:
        """Insert the key for `request_id`; None when inserted, else the pointer found (same body)."""
        for _ in range(MAX_WRITE_ROUNDS):
            try:
                self._store.create_key(key_hash, request_id, fingerprint)
                return None
            except WriteConflict:
                pointer = self._store.key(key_hash)
            if pointer is None:  # deleted between our insert and read (retention): insert it again
                continue
            if pointer.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different customer or product family",
                    extensions={"requestId": pointer.request_id},
                )
            return pointer
        raise Conflict("This Idempotency-Key kept changing; retry shortly", retry_after=1)

    def _take_over(self, key_hash: str, pointer: Pointer, request_id: str) -> bool:
        """A key without its record: young, its intake may still be writing (False: look again);
        old, it crashed: the key now names our new id (True). False too if the key changed."""
        if utc_now() - pointer.written_at < self._takeover_after:
            time.sleep(0.2)  # its intake is between the key and the record: look again (409 in the end)
            return False
        try:
            self._store.repoint_key(key_hash, request_id, pointer)
        except WriteConflict:
            return False
        log.warning("request.key_taken_over abandoned_request_id=%s request_id=%s", pointer.request_id, request_id)
        return True

    def _withdraw_if_key_moved(self, key_hash: str, stored: Stored) -> Accepted | None:
        """A slow intake whose key was taken over meanwhile withdraws the record it just wrote (the
        key's new request is the answer); if it cannot (already claimed), its record stands."""
        pointer = self._store.key(key_hash)
        if pointer is not None and pointer.request_id == stored.record.request_id:
            return None
        if not self._store.withdraw(stored):
            return None
        answer = self._store.get(pointer.request_id) if pointer is not None else None
        if answer is None:
            raise Conflict("This Idempotency-Key's request changed while it was accepted; retry", retry_after=1)
        return Accepted(answer, replayed=True)

    def _lock_holder(self, target: UpgradeTarget, request_id: str, key_hash: str) -> Stored | None:
        """The lock exists. The active request that holds it (the answer), or None: try again (it
        was stale and is removed, or it changed)."""
        pointer = self._store.active(target.customer_id, target.product_family)
        if pointer is None or pointer.request_id == request_id:
            return None
        holder = self._store.get(pointer.request_id)
        if holder is not None and not holder.record.is_final:
            if key_hash:  # our key created nothing: it goes (a replay is answered by the lock again)
                self._store.delete_key(key_hash, request_id)
            return holder
        if holder is None and utc_now() - pointer.written_at < timedelta(seconds=STALE_LOCK_SECONDS):
            time.sleep(0.2)  # its intake is between writing the lock and the record: look again
            return None
        # The holder is final (its release did not happen) or never got a record: the lock is stale.
        with contextlib.suppress(WriteConflict):  # someone else changed it: just look again
            self._store.delete_stale_active(target.customer_id, target.product_family, pointer)
        return None
