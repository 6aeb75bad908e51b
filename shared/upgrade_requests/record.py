"""The durable upgrade request and its state machine.

    pending ──claim──▶ submitting ──create ok──▶ submitted ──poll: final──▶ complete | failed
       ▲                   │  │                      │
       └── retryable ──────┘  └── refused ──▶ rejected (not eligible, unknown customer, ...)
           error (attempts < max; else failed)

- `pending`: accepted and stored, not (successfully) sent yet; the timer submits it when
  `next_attempt_at` is due.
- `submitting`: claimed by one worker under a lease; the create call may be in flight. A lease
  that expires (worker crashed) makes it due again; the next worker first asks Partner Center
  whether the upgrade exists, then resends with the same stored `MS-RequestId`.
- `submitted`: Partner Center gave an upgrade id; the timer polls its status until final.
- `complete` / `failed` / `rejected` / `cancelled`: final. Only final requests release the
  customer's "one active request per customer and product family" lock. `cancelled` is set by an
  operator, only while no create can have been sent (see `shared.upgrade_requests.campaign`);
  `failed` (and `rejected`, forced) can be reopened by an operator's retry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

CALLBACK_PENDING = "pending"
CALLBACK_DELIVERED = "delivered"
CALLBACK_FAILED = "failed"

PENDING = "pending"
SUBMITTING = "submitting"
SUBMITTED = "submitted"
COMPLETE = "complete"
FAILED = "failed"
REJECTED = "rejected"
CANCELLED = "cancelled"

ACTIVE_STATES = frozenset({PENDING, SUBMITTING, SUBMITTED})
FINAL_STATES = frozenset({COMPLETE, FAILED, REJECTED, CANCELLED})
ALL_STATES = (PENDING, SUBMITTING, SUBMITTED, COMPLETE, FAILED, REJECTED, CANCELLED)


def utc_now() -> datetime:
    return datetime.now(UTC)


def body_fingerprint(customer_id: str, product_family: str) -> str:
    """What an Idempotency-Key is bound to: replaying the key with another body is an error."""
    return hashlib.sha256(f"{customer_id}|{product_family}".encode()).hexdigest()


USER = "user"
APPLICATION = "application"
AUTH_METHODS = ("entra", "function-key", "signed-webhook", "cli")


@dataclass(frozen=True)
class RequestedBy:
    """Who asked for a request, for the audit that follows every billing question.

    `kind`: `user` or `application`; `object_id`: the caller's Entra object id (`oid`);
    `app_id`: the client application (`azp`/`appid`); `display_name`: `preferred_username`/`upn`
    where the token has one (for the CLI: the operator); `auth_method`: how the caller proved it:
    `entra`, `function-key`, `signed-webhook` or `cli`. Fields a method cannot know are None.
    """

    kind: str
    auth_method: str
    object_id: str | None = None
    app_id: str | None = None
    display_name: str | None = None
    tenant_id: str | None = None

    @property
    def log_id(self) -> str:
        """What log lines name the caller by (`caller_oid=`): the object id, else how it came in."""
        if self.object_id:
            return self.object_id
        return f"{self.auth_method}:{self.display_name}" if self.display_name else self.auth_method

    def public_view(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "objectId": self.object_id,
            "appId": self.app_id,
            "displayName": self.display_name,
            "tenantId": self.tenant_id,
            "authMethod": self.auth_method,
        }

    @classmethod
    def from_public_view(cls, view: dict[str, Any]) -> RequestedBy:
        return cls(
            kind=str(view.get("kind") or ""),
            auth_method=str(view.get("authMethod") or ""),
            object_id=view.get("objectId"),
            app_id=view.get("appId"),
            display_name=view.get("displayName"),
            tenant_id=view.get("tenantId"),
        )


@dataclass(frozen=True)
class UpgradeRequestRecord:
    """One caller request to upgrade one customer, as stored."""

    request_id: str
    customer_id: str
    product_family: str
    correlation_id: str
    ms_request_id: str  # Partner Center's idempotency key for the create call, kept for every resend
    state: str
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    lease_until: datetime
    lease_owner: str = ""
    attempts: int = 0
    polls: int = 0
    idempotency_key_hash: str = ""
    queued: bool = False
    upgrade_id: str | None = None
    outcome: str | None = None
    upstream_status: str | None = None
    line_items: list[dict[str, Any]] = field(default_factory=list)
    error_details: dict[str, Any] | None = None
    last_error: str | None = None
    last_error_type: str | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    # Completion callback (see `callbacks`): where to POST the final record, and how that went.
    callback_url: str | None = None
    callback_id: str | None = None  # the Standard Webhooks `webhook-id`, the same on every retry
    callback_state: str | None = None  # pending | delivered | failed (None: no callback)
    callback_attempts: int = 0
    callback_next_at: datetime | None = None
    callback_last_error: str | None = None
    callback_delivered_at: datetime | None = None
    requested_by: RequestedBy | None = None  # None only on records stored before it existed
    # Set once a worker claimed the request for a create (it may have reached Partner Center):
    # from then on it cannot be cancelled, and a retry resolves through eligibility first.
    create_may_have_been_sent: bool = False
    reopened_from: str | None = None  # the final state an operator's retry reopened it from

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def evolve(self, **changes: Any) -> UpgradeRequestRecord:
        return replace(self, updated_at=utc_now(), **changes)

    def leased(self, owner: str, seconds: float, now: datetime | None = None) -> UpgradeRequestRecord:
        return self.evolve(lease_owner=owner, lease_until=(now or utc_now()) + timedelta(seconds=seconds))

    def public_view(self) -> dict[str, Any]:
        """The record as callers see it (camelCase; no lease internals, no key hash)."""
        return {
            "requestId": self.request_id,
            "status": self.state,
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "upgradeId": self.upgrade_id,
            "outcome": self.outcome,
            "upgradeStatus": self.upstream_status,
            "lineItems": self.line_items,
            "errorDetails": self.error_details,
            "correlationId": self.correlation_id,
            "attempts": self.attempts,
            "lastError": self.last_error,
            "lastErrorType": self.last_error_type,
            "queued": self.queued,
            "requestedBy": self.requested_by.public_view() if self.requested_by else None,
            "createMayHaveBeenSent": self.create_may_have_been_sent,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "submittedAt": _iso(self.submitted_at),
            "finishedAt": _iso(self.finished_at),
            "nextAttemptAt": _iso(self.next_attempt_at) if not self.is_final else None,
            "callback": None
            if not self.callback_url
            else {
                "url": self.callback_url,
                "state": self.callback_state,
                "attempts": self.callback_attempts,
                "lastError": self.callback_last_error,
                "deliveredAt": _iso(self.callback_delivered_at),
            },
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


def new_record(
    request_id: str,
    customer_id: str,
    product_family: str,
    correlation_id: str,
    ms_request_id: str,
    *,
    state: str,
    idempotency_key_hash: str = "",
    queued: bool = False,
    lease_owner: str = "",
    lease_seconds: float = 0,
    callback_url: str | None = None,
    requested_by: RequestedBy | None = None,
) -> UpgradeRequestRecord:
    now = utc_now()
    return UpgradeRequestRecord(
        request_id=request_id,
        customer_id=customer_id,
        product_family=product_family,
        correlation_id=correlation_id,
        ms_request_id=ms_request_id,
        state=state,
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
        lease_until=now + timedelta(seconds=lease_seconds),
        lease_owner=lease_owner,
        create_may_have_been_sent=state == SUBMITTING,
        idempotency_key_hash=idempotency_key_hash,
        queued=queued,
        requested_by=requested_by,
        **(callback_fields(callback_url, now) if callback_url else {}),
    )


def callback_fields(url: str, now: datetime) -> dict[str, Any]:
    """A freshly registered callback: pending, with its own stable webhook-id."""
    import uuid

    return {
        "callback_url": url,
        "callback_id": f"msg_{uuid.uuid4().hex}",
        "callback_state": CALLBACK_PENDING,
        "callback_attempts": 0,
        "callback_next_at": now,
        "callback_last_error": None,
        "callback_delivered_at": None,
    }


def no_callback() -> dict[str, Any]:
    return {
        name: None
        for name in (
            "callback_url",
            "callback_id",
            "callback_state",
            "callback_next_at",
            "callback_last_error",
            "callback_delivered_at",
        )
    } | {"callback_attempts": 0}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
