"""Idempotency keys and customer locks: small entities that point at one request.

A key lives exactly as long as its request: retention deletes it first, then the request (so a
key never outlives its request by more than a crash, and a replay after retention is a new
request). A lock lives while its request is active; a final request's move releases it together
with the active copy (`moves`), and an intake removes one left by a crash (`delete_stale_active`).
"""

from __future__ import annotations

from shared.upgrade_requests.store.entities import Pointer, pointer_entity
from shared.upgrade_requests.store.layout import key_pk, lock_pk, lock_row
from shared.upgrade_requests.store.table import TableOps, WriteConflict


class Pointers(TableOps):
    def key(self, key_hash: str) -> Pointer | None:
        return self._pointer(key_pk(key_hash), key_hash)

    def create_key(self, key_hash: str, request_id: str, fingerprint: str) -> None:
        self._insert(pointer_entity(key_pk(key_hash), key_hash, request_id, fingerprint))

    def repoint_key(self, key_hash: str, request_id: str, pointer: Pointer) -> None:
        self._update(pointer_entity(key_pk(key_hash), key_hash, request_id, pointer.fingerprint), pointer.etag)

    def delete_key(self, key_hash: str, request_id: str) -> None:
        """Delete the key if (and only if) it names `request_id` (retention)."""
        pointer = self.key(key_hash)
        if pointer is not None and pointer.request_id == request_id:
            self._delete(key_pk(key_hash), key_hash, pointer.etag)

    def active(self, customer_id: str, product_family: str) -> Pointer | None:
        return self._pointer(lock_pk(customer_id), lock_row(customer_id, product_family))

    def create_active(self, customer_id: str, product_family: str, request_id: str) -> None:
        self._insert(pointer_entity(lock_pk(customer_id), lock_row(customer_id, product_family), request_id, ""))

    def delete_stale_active(self, customer_id: str, product_family: str, pointer: Pointer) -> None:
        """Remove a lock that points at a request that is final or missing (ETag-guarded)."""
        if not self._delete(lock_pk(customer_id), lock_row(customer_id, product_family), pointer.etag):
            raise WriteConflict("active lock changed")
