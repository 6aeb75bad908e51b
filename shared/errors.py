"""The one error hierarchy of the app.

Every failure an operator or a caller can see is one of these classes. Each carries the HTTP
status and a stable problem type, so the HTTP layer renders any of them as RFC 9457
``application/problem+json`` without knowing where it came from, and the CLI and the timer can
tell "fix your input" from "try later" from "an operator must act" by class alone.

Messages here are shown to callers: they never contain a secret, a token or a stack trace.
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_PREFIX = "urn:product-upgrades:problem:"


class UpgradeError(Exception):
    """Base class: something went wrong that has a clear, safe explanation."""

    status: int = 500
    slug: str = "internal"
    title: str = "The request could not be completed"

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.extensions: dict[str, Any] = dict(extensions or {})
        self.headers: dict[str, str] = {}  # extra response headers (WWW-Authenticate on 401/403)

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug


# --- Caller mistakes (4xx): nothing was sent to Partner Center, nothing was stored. ---


class InvalidRequest(UpgradeError):
    status = 400
    slug = "invalid-request"
    title = "The request is not valid"


class PayloadTooLarge(InvalidRequest):
    status = 413
    slug = "payload-too-large"
    title = "The request body is too large"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    slug = "unsupported-media-type"
    title = "The request body must be JSON"


class NotFound(UpgradeError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(UpgradeError):
    status = 409
    slug = "conflict"
    title = "The request conflicts with the current state"


class CannotCancel(Conflict):
    slug = "cannot-cancel"
    title = "The request can no longer be cancelled"


class CannotRetry(Conflict):
    slug = "cannot-retry"
    title = "The request cannot be retried in its current state"


class CampaignConflict(Conflict):
    slug = "campaign-conflict"
    title = "The campaign is not in a state that allows this"


class IdempotencyKeyReused(Conflict):
    status = 422
    slug = "idempotency-key-reused"
    title = "The Idempotency-Key was already used for a different request"


class Unauthorized(UpgradeError):
    status = 401
    slug = "unauthorized"
    title = "The request is not authenticated"


class InvalidCallerToken(Unauthorized):
    """The caller's bearer token is missing, expired, forged or not meant for this API (RFC 6750)."""

    slug = "invalid-token"
    title = "A valid Microsoft Entra ID bearer token is required"


class InsufficientRole(UpgradeError):
    """The token is valid but lacks the app role this operation needs (RFC 6750 insufficient_scope)."""

    status = 403
    slug = "insufficient-scope"
    title = "The caller lacks the app role this operation needs"


class SigningKeysUnavailable(UpgradeError):
    """Entra's signing keys could not be read, so no token can be checked: refused, not trusted."""

    status = 503
    slug = "signing-keys-unavailable"
    title = "Caller tokens cannot be checked right now; retry later"


# --- Partner Center said no to a well-formed request (4xx chosen deliberately). ---


class PartnerCenterRejected(UpgradeError):
    """Partner Center refused the request; its error code travels in the problem body."""

    status = 422
    slug = "partner-center-rejected"
    title = "Partner Center rejected the request"


class NotEligible(PartnerCenterRejected):
    status = 422
    slug = "not-eligible"
    title = "The customer is not eligible for this product upgrade"


class CustomerAccessDenied(PartnerCenterRejected):
    status = 403
    slug = "customer-access-denied"
    title = "Partner Center denied access to this customer"


class UpstreamNotFound(PartnerCenterRejected):
    status = 404
    slug = "upstream-not-found"
    title = "Partner Center does not know this customer or upgrade"


class UpstreamConflict(PartnerCenterRejected):
    status = 409
    slug = "upstream-conflict"
    title = "Partner Center reports a conflicting upgrade"


# --- Upstream trouble (5xx): try again later, or an operator must act. ---


class UpstreamError(UpgradeError):
    status = 502
    slug = "upstream-error"
    title = "Partner Center did not give a usable answer"


class UpstreamThrottled(UpstreamError):
    """Partner Center is throttling or unavailable beyond the inline retry budget."""

    status = 503
    slug = "upstream-throttled"
    title = "Partner Center is busy; retry later"


class DeadlineExceeded(UpstreamError):
    """The answer's deadline (`HTTP_DEADLINE_SECONDS`, or the timer's budget) left no time for
    this call; what is stored stays stored, and the caller is told when to look again."""

    status = 503
    slug = "deadline-exceeded"
    title = "The answer's deadline ran out before this step; retry later"

    def __init__(self, detail: str, *, retry_after: int | None = 30, extensions: dict[str, Any] | None = None) -> None:
        super().__init__(detail, retry_after=retry_after, extensions=extensions)


class SubmissionOutcomeUnknown(UpstreamError):
    """The create call may or may not have reached Partner Center and it could not be resolved.

    Resubmitting blindly could double the upgrade, so this is its own class: callers are told
    to check eligibility or status, never to simply retry.
    """

    status = 502
    slug = "submission-outcome-unknown"
    title = "It is not known whether Partner Center accepted the upgrade"


class StorageUnavailable(UpgradeError):
    """The request store (Azure Table Storage, Azurite locally) could not be read or written.

    Its own class so a storage outage is never titled as a Partner Center problem: nothing was
    sent to Partner Center, and an operator looks at storage (`AzureWebJobsStorage`, the app's
    table role, Azurite when run locally).
    """

    status = 503
    slug = "storage-unavailable"
    title = "The request store (Azure Table Storage) is unavailable"


class StorageLayoutMismatch(UpgradeError):
    """The request table was written by another layout of the store: reading it as this one would
    see no records (404s, and a second create for a customer whose first may have landed), so
    nothing is read or written until an operator migrates it (`python -m shared.cli migrate`)."""

    status = 503
    slug = "storage-layout"
    title = "The request table was written by another version of the app"


class ReconsentRequired(UpgradeError):
    """The refresh token was refused (expired, revoked, or consent withdrawn)."""

    status = 502
    slug = "reconsent-required"
    title = "The Partner Center refresh token is no longer valid: an operator must re-consent"


class CredentialsUnavailable(UpgradeError):
    """Key Vault or the app registration could not provide usable credentials."""

    status = 502
    slug = "credentials-unavailable"
    title = "The partner app credentials could not be obtained"


class ConfigurationError(UpgradeError):
    """The app's settings are missing or invalid; the message names each setting."""

    status = 500
    slug = "configuration-error"
    title = "The function app is misconfigured"


def error_class_for(slug: str | None) -> type[UpgradeError]:
    """The class whose `slug` this is (stored records keep the slug, not the exception)."""
    pending: list[type[UpgradeError]] = [UpgradeError]
    while pending:
        cls = pending.pop()
        if cls.slug == slug:
            return cls
        pending.extend(cls.__subclasses__())
    return UpgradeError
