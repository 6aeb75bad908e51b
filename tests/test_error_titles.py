"""Every problem type names the component that failed: its status, slug and title agree with
each other and with where it is raised (a storage outage is never titled as Partner Center's)."""

from __future__ import annotations

import pytest

from sandbox.azurite import free_port
from shared import errors
from shared.runtime import reset_runtime
from shared.webhooks.callback_urls import CallbackHostUnresolved, CallbackUrlRefused

# class -> (status, slug, words its title must contain, words it must not)
EXPECTED: dict[type[errors.UpgradeError], tuple[int, str, tuple[str, ...], tuple[str, ...]]] = {
    errors.UpgradeError: (500, "internal", ("could not be completed",), ("Partner Center",)),
    errors.InvalidRequest: (400, "invalid-request", ("request",), ("Partner Center",)),
    errors.PayloadTooLarge: (413, "payload-too-large", ("too large",), ("Partner Center",)),
    errors.UnsupportedMediaType: (415, "unsupported-media-type", ("JSON",), ("Partner Center",)),
    CallbackUrlRefused: (400, "callback-url-refused", ("callback URL",), ("Partner Center",)),
    CallbackHostUnresolved: (400, "callback-host-unresolved", ("callback URL", "resolve"), ("Partner Center",)),
    errors.DeadlineExceeded: (503, "deadline-exceeded", ("deadline",), ("Partner Center", "storage")),
    errors.NotFound: (404, "not-found", ("Not found",), ("Partner Center",)),
    errors.Conflict: (409, "conflict", ("conflicts",), ("Partner Center",)),
    errors.CannotCancel: (409, "cannot-cancel", ("cancelled",), ()),
    errors.CannotRetry: (409, "cannot-retry", ("retried",), ()),
    errors.CampaignConflict: (409, "campaign-conflict", ("campaign",), ("Partner Center",)),
    errors.IdempotencyKeyReused: (422, "idempotency-key-reused", ("Idempotency-Key",), ("Partner Center",)),
    errors.Unauthorized: (401, "unauthorized", ("authenticated",), ("Partner Center",)),
    errors.InvalidCallerToken: (401, "invalid-token", ("Entra ID", "token"), ("Partner Center",)),
    errors.InsufficientRole: (403, "insufficient-scope", ("app role",), ("Partner Center",)),
    errors.SigningKeysUnavailable: (503, "signing-keys-unavailable", ("tokens",), ("Partner Center", "storage")),
    errors.PartnerCenterRejected: (422, "partner-center-rejected", ("Partner Center",), ()),
    errors.NotEligible: (422, "not-eligible", ("not eligible",), ()),
    errors.CustomerAccessDenied: (403, "customer-access-denied", ("Partner Center", "access"), ()),
    errors.UpstreamNotFound: (404, "upstream-not-found", ("Partner Center",), ()),
    errors.UpstreamConflict: (409, "upstream-conflict", ("Partner Center",), ()),
    errors.UpstreamError: (502, "upstream-error", ("Partner Center",), ("storage",)),
    errors.UpstreamThrottled: (503, "upstream-throttled", ("Partner Center",), ("storage",)),
    errors.SubmissionOutcomeUnknown: (502, "submission-outcome-unknown", ("Partner Center",), ()),
    errors.StorageUnavailable: (503, "storage-unavailable", ("storage",), ("Partner Center",)),
    errors.StorageLayoutMismatch: (503, "storage-layout", ("table", "version"), ("Partner Center",)),
    errors.ReconsentRequired: (502, "reconsent-required", ("refresh token", "re-consent"), ()),
    errors.CredentialsUnavailable: (502, "credentials-unavailable", ("credentials",), ()),
    errors.ConfigurationError: (500, "configuration-error", ("misconfigured",), ("Partner Center",)),
}


def all_error_classes() -> set[type[errors.UpgradeError]]:
    import function_app  # noqa: F401 - imports every module, so every subclass is registered

    found, pending = set(), [errors.UpgradeError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_an_expected_pair():
    assert all_error_classes() == set(EXPECTED), "a new error class needs its row here"


@pytest.mark.parametrize("cls", sorted(EXPECTED, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_type_and_title_name_the_component(cls):
    status, slug, must, must_not = EXPECTED[cls]
    error = cls("detail")
    assert (error.status, error.slug) == (status, slug)
    assert error.problem_type == f"urn:product-upgrades:problem:{slug}"
    assert errors.error_class_for(slug) is cls
    for word in must:
        assert word.lower() in cls.title.lower(), (cls.__name__, cls.title)
    for word in must_not:
        assert word.lower() not in cls.title.lower(), (cls.__name__, cls.title)


def test_storage_down_is_a_storage_problem_not_a_partner_center_one(api, sandbox, monkeypatch, customer_id):
    """The first-hour report: Azurite not running answered 502 "Partner Center did not give a usable answer"."""
    dead = free_port()
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"TableEndpoint=http://127.0.0.1:{dead}/devstoreaccount1;",
    )
    reset_runtime()
    reply = api.upgrade(customer_id)
    problem = reply.json()
    assert reply.status == 503, problem
    assert problem["type"] == "urn:product-upgrades:problem:storage-unavailable"
    assert "Partner Center" not in problem["title"]
    assert "storage" in problem["title"].lower()
    assert "storage is unreachable" in problem["detail"]
    assert reply.headers["retry-after"]
    assert sandbox.calls("partner_center") == []
