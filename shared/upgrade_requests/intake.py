"""Accepting an upgrade request: stored before anything is sent, and never twice.

Order of writes (each an atomic insert-if-absent or an ETag-guarded replace):

1. `Idempotency-Key` (if sent): insert key -> new request id, bound to the body's fingerprint.
   Key already there: same body -> the request it names (replay); other body -> 422.
2. Active lock for customer + product family AND the record, in one entity-group transaction
   (they share the customer's partition, see `store`): the record as `submitting` under a lease
   when it will be submitted now (the lease is the claim: the timer will not touch it until the
   lease ends), or `pending` when queued. Lock already held by an active request -> that request
   is the answer (replay), so concurrent callers without a key still get one upgrade. A lock left
   pointing at a final or missing request is stale: removed.

A crash between steps 1 and 2 leaves a key pointing at a request id with no record yet; the next
attempt with the same key resumes with that id instead of duplicating.
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
from shared.upgrade_requests.store import RequestStore, Stored, WriteConflict, new_request_id
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
    def __init__(self, store: RequestStore, owner: str, lease_seconds: int) -> None:
        self._store = store
        self._owner = owner
        self._lease_seconds = lease_seconds

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
        for _ in range(MAX_WRITE_ROUNDS):
            if key_hash:
                existing_id = self._claim_key(key_hash, request_id, fingerprint)
                if existing_id != request_id:
                    replay = self._store.get(existing_id)
                    if replay is not None:
                        return Accepted(replay, replayed=True)
                    request_id = existing_id  # a crash left the key without its record: resume
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
                if str(conflict) == "record":
                    current = self._store.get(request_id)
                    if current is None:
                        continue
                    return Accepted(current, replayed=True)
                active = self._lock_holder(target, request_id, key_hash)
                if isinstance(active, Stored):
                    return Accepted(active, replayed=True)
                if active is False:
                    continue  # a stale lock was removed or a race lost: go round again
                try:  # the lock already names our request id (an older intake's): the record alone
                    stored = self._store.create(record)
                except WriteConflict:
                    current = self._store.get(request_id)
                    if current is None:
                        continue
                    return Accepted(current, replayed=True)
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

    def _claim_key(self, key_hash: str, request_id: str, fingerprint: str) -> str:
        """The request id the key names after this call (ours if we inserted it)."""
        try:
            self._store.create_key(key_hash, request_id, fingerprint)
            return request_id
        except WriteConflict:
            pointer = self._store.key(key_hash)
        if pointer is None:  # deleted between our insert and read: let the next round insert it
            return request_id
        if pointer.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different customer or product family",
                extensions={"requestId": pointer.request_id},
            )
        return pointer.request_id

    def _lock_holder(self, target: UpgradeTarget, request_id: str, key_hash: str) -> Stored | bool:
        """The lock exists. True: it names our request id. A Stored: the active request that holds
        it. False: try again (it was stale and is removed, or it changed)."""
        pointer = self._store.active(target.customer_id, target.product_family)
        if pointer is None:
            return False
        if pointer.request_id == request_id:
            return True
        holder = self._store.get(pointer.request_id)
        if holder is not None and not holder.record.is_final:
            if key_hash:  # our key now names the request that will actually run
                key = self._store.key(key_hash)
                if key is not None and key.request_id == request_id:
                    try:
                        self._store.repoint_key(key_hash, holder.record.request_id, key)
                    except WriteConflict:
                        return False
            return holder
        if holder is None and utc_now() - pointer.written_at < timedelta(seconds=STALE_LOCK_SECONDS):
            time.sleep(0.2)  # its intake is between writing the lock and the record: look again
            return False
        # The holder is final (its release did not happen) or never got a record: the lock is stale.
        with contextlib.suppress(WriteConflict):  # someone else changed it: just look again
            self._store.delete_stale_active(target.customer_id, target.product_family, pointer)
        return False
