"""The tables that steer behaviour, each pinned entry by entry (no sandbox, no storage).

Expected values are written out here as literals, never imported from the code under test: a test
that reads its expectation from the table it checks cannot fail when the table is wrong.
"""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
import requests
from urllib3.exceptions import MaxRetryError
from urllib3.response import HTTPResponse

import shared
from shared import errors
from shared.correlation import CallContext
from shared.partner_center import client as pc_client
from shared.partner_center.client import _error_from, build_session
from shared.partner_center.exactly_once import final_state
from shared.partner_center.retry_policy import InlineRetry
from shared.upgrade_requests.processor import ProcessingPolicy
from shared.webhooks.callbacks import callback_retry_delay

CONTEXT = CallContext("5d0a7c1e-0b4b-4d4e-8f5a-2b7c9e1d3f60", "c1a2b3c4-d5e6-4f70-8a9b-0c1d2e3f4a5b")


def pc_answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> requests.Response:
    """A Partner Center answer as it comes off the wire (what `requests` hands the client)."""
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = b"" if body is None else json.dumps(body).encode()
    return response


# --- Partner Center error code -> error class ------------------------------------------------

# Partner Center's product-upgrade error codes, as the error-codes page groups them.
NOT_ELIGIBLE = {"900105", "900107", "900108", "900119", "900120", "900130"}
UPGRADE_EXISTS = {"900109", "900110", "900111", "900112", "900113", "900114"}


def test_the_code_tables_list_exactly_the_documented_codes():
    assert set(pc_client.NOT_ELIGIBLE_CODES) == NOT_ELIGIBLE
    assert set(pc_client.UPGRADE_EXISTS_CODES) == UPGRADE_EXISTS


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
@pytest.mark.parametrize("code", sorted(NOT_ELIGIBLE))
def test_every_not_eligible_code_is_not_eligible_whatever_the_status(code, status):
    error = _error_from(pc_answer(status, {"code": int(code), "description": "no"}), CONTEXT)
    assert type(error) is errors.NotEligible
    assert (error.status, error.slug) == (422, "not-eligible")
    assert error.extensions == {"partnerCenterStatus": status, "partnerCenterErrorCode": code}


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
@pytest.mark.parametrize("code", sorted(UPGRADE_EXISTS))
def test_every_upgrade_exists_code_is_a_conflict_whatever_the_status(code, status):
    error = _error_from(pc_answer(status, {"code": code, "description": "exists"}), CONTEXT)
    assert type(error) is errors.UpstreamConflict
    assert (error.status, error.slug) == (409, "upstream-conflict")


# Unknown codes (and no code) fall back on the HTTP status, as client.py's docstring says.
FALLBACK_BY_STATUS = [
    (400, errors.PartnerCenterRejected, 422),
    (401, errors.UpstreamError, 502),  # refused twice: the token renewal did not help
    (403, errors.CustomerAccessDenied, 403),
    (404, errors.UpstreamNotFound, 404),
    (409, errors.UpstreamConflict, 409),
    (410, errors.PartnerCenterRejected, 422),
    (422, errors.PartnerCenterRejected, 422),
    (500, errors.UpstreamError, 502),
    (501, errors.UpstreamError, 502),
    (502, errors.UpstreamError, 502),
    (504, errors.UpstreamError, 502),
]


@pytest.mark.parametrize("body", [{"code": 123456, "description": "new"}, {"message": "no code"}, None, [1, 2]])
@pytest.mark.parametrize(("status", "cls", "our_status"), FALLBACK_BY_STATUS)
def test_unknown_codes_fall_back_on_the_http_status(status, cls, our_status, body):
    error = _error_from(pc_answer(status, body), CONTEXT)
    assert type(error) is cls
    assert error.status == our_status
    assert error.extensions["partnerCenterStatus"] == status


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("code", ["900108", "900109", "600001", None])
def test_throttling_wins_over_any_code(status, code):
    body = {"statusCode": status, "message": "slow down"} if code is None else {"code": code}
    error = _error_from(pc_answer(status, body, {"Retry-After": "17"}), CONTEXT)
    assert type(error) is errors.UpstreamThrottled
    assert (error.status, error.retry_after) == (503, 17)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 30), ("", 30), ("0", 1), ("1", 1), ("2.5", 30), ("57", 57), ("soon", 30), ("-5", 30)],
)
def test_retry_after_of_a_throttled_answer(header, seconds):
    headers = {} if header is None else {"Retry-After": header}
    assert _error_from(pc_answer(429, None, headers), CONTEXT).retry_after == seconds


def test_the_error_detail_names_status_code_and_description():
    error = _error_from(pc_answer(400, {"code": 900108, "description": "No Azure subscriptions"}), CONTEXT)
    assert error.detail == "Partner Center answered HTTP 400 (code 900108): No Azure subscriptions"


# --- final_state -------------------------------------------------------------------------------

FINAL_STATES = [
    ("Completed", "complete"),
    ("completed", "complete"),
    ("COMPLETE", "complete"),
    ("Succeeded", "complete"),
    (" success ", "complete"),
    ("Failed", "failed"),
    ("failure", "failed"),
    ("Cancelled", "failed"),
    ("canceled", "failed"),
    ("Error", "failed"),
    (None, None),
    ("", None),
    ("   ", None),
    ("InProgress", None),
    ("inProgress", None),
    ("Running", None),
    ("NotStarted", None),
    ("Pending", None),
    ("CompletedWithErrors", None),  # not a documented value: keep polling, never guess
    ("fail", None),
    ("done", None),
]


@pytest.mark.parametrize(("upstream", "expected"), FINAL_STATES)
def test_final_state(upstream, expected):
    assert final_state(upstream) == expected


# --- retry and backoff schedules -------------------------------------------------------------


def test_processing_backoff_doubles_from_a_minute_up_to_an_hour():
    policy = ProcessingPolicy()
    schedule = [policy.backoff(attempts) for attempts in range(0, 10)]
    assert schedule == [60.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0, 3600.0]
    assert policy.backoff(100) == 3600.0


def test_processing_backoff_follows_its_policy():
    policy = ProcessingPolicy(backoff_base_seconds=5, backoff_max_seconds=30)
    assert [policy.backoff(attempts) for attempts in range(1, 7)] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


def test_processing_policy_defaults():
    policy = ProcessingPolicy()
    assert (policy.max_attempts, policy.lease_seconds, policy.poll_interval_seconds) == (8, 300, 120)


def test_callback_retry_delays_double_from_30_seconds_up_to_an_hour():
    delays = [callback_retry_delay(attempts) for attempts in range(1, 11)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_partner_center_session_retries_what_it_should():
    retry = (
        build_session(7, 60.0, "https://api.partnercenter.microsoft.com")
        .get_adapter("https://partner.microsoft.com")
        .max_retries
    )
    assert type(retry) is InlineRetry
    assert (retry.total, retry.connect, retry.read, retry.other, retry.status, retry.redirect) == (
        None,
        1,
        0,
        0,
        2,
        0,
    )
    assert set(retry.status_forcelist) == {429, 503}
    assert retry.allowed_methods is None  # POST included
    assert retry.respect_retry_after_header is True
    assert retry.retry_after_max == 7
    assert retry.raise_on_status is False


def answer(status: int, retry_after: str | None = None) -> HTTPResponse:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return HTTPResponse(body=b"", status=status, headers=headers, preload_content=True)


def test_partner_center_backoff_schedule_without_retry_after():
    retry = (
        build_session(2, 60.0, "https://api.partnercenter.microsoft.com")
        .get_adapter("https://partner.microsoft.com")
        .max_retries.new(status=6)
    )
    waits = []
    for _ in range(6):
        retry = retry.increment(method="POST", url="/v1/productUpgrades", response=answer(503))
        waits.append(retry.get_backoff_time())
    assert waits == [0, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_default_session_gives_up_after_two_status_retries():
    retry = (
        build_session(2, 60.0, "https://api.partnercenter.microsoft.com")
        .get_adapter("https://partner.microsoft.com")
        .max_retries
    )
    retry = retry.increment(method="POST", url="/", response=answer(429))
    retry = retry.increment(method="POST", url="/", response=answer(429))
    with pytest.raises(MaxRetryError):
        retry.increment(method="POST", url="/", response=answer(429))


@pytest.mark.parametrize(
    ("retry_after", "waits"),
    [("0", True), ("1", True), ("4", True), ("5", True), (" 5 ", True), ("6", False), ("57", False)],
)
def test_inline_retry_waits_up_to_its_maximum_and_not_a_second_more(retry_after, waits):
    retry = InlineRetry(status=2, status_forcelist={429}, retry_after_max=5, allowed_methods=None)
    if waits:
        after = retry.increment(method="POST", url="/", response=answer(429, retry_after))
        assert after.get_retry_after(answer(429, retry_after)) == int(retry_after)
    else:
        with pytest.raises(MaxRetryError):
            retry.increment(method="POST", url="/", response=answer(429, retry_after))


def test_inline_retry_gives_up_past_the_maximum_given_as_an_http_date():
    retry = InlineRetry(status=2, status_forcelist={429}, retry_after_max=5, allowed_methods=None)
    with pytest.raises(MaxRetryError):
        retry.increment(method="POST", url="/", response=answer(429, "Fri, 31 Dec 2099 23:59:59 GMT"))


def test_inline_retry_leaves_an_unreadable_retry_after_to_the_normal_policy():
    retry = InlineRetry(status=2, status_forcelist={429}, retry_after_max=5, allowed_methods=None)
    assert retry.increment(method="POST", url="/", response=answer(429, "whenever")).status == 1


# --- error_class_for: every slug a record can store ------------------------------------------

# slug -> (class name, HTTP status). Every UpgradeError subclass in shared/ must be listed here.
SLUGS = {
    "internal": ("UpgradeError", 500),
    "invalid-request": ("InvalidRequest", 400),
    "payload-too-large": ("PayloadTooLarge", 413),
    "unsupported-media-type": ("UnsupportedMediaType", 415),
    "not-found": ("NotFound", 404),
    "conflict": ("Conflict", 409),
    "cannot-cancel": ("CannotCancel", 409),
    "cannot-retry": ("CannotRetry", 409),
    "campaign-conflict": ("CampaignConflict", 409),
    "idempotency-key-reused": ("IdempotencyKeyReused", 422),
    "unauthorized": ("Unauthorized", 401),
    "invalid-token": ("InvalidCallerToken", 401),
    "insufficient-scope": ("InsufficientRole", 403),
    "signing-keys-unavailable": ("SigningKeysUnavailable", 503),
    "partner-center-rejected": ("PartnerCenterRejected", 422),
    "not-eligible": ("NotEligible", 422),
    "customer-access-denied": ("CustomerAccessDenied", 403),
    "upstream-not-found": ("UpstreamNotFound", 404),
    "upstream-conflict": ("UpstreamConflict", 409),
    "upstream-error": ("UpstreamError", 502),
    "upstream-throttled": ("UpstreamThrottled", 503),
    "submission-outcome-unknown": ("SubmissionOutcomeUnknown", 502),
    "reconsent-required": ("ReconsentRequired", 502),
    "credentials-unavailable": ("CredentialsUnavailable", 502),
    "configuration-error": ("ConfigurationError", 500),
    "callback-url-refused": ("CallbackUrlRefused", 400),
    "callback-host-unresolved": ("CallbackHostUnresolved", 400),
    "deadline-exceeded": ("DeadlineExceeded", 503),
    "storage-unavailable": ("StorageUnavailable", 503),
    "storage-layout": ("StorageLayoutMismatch", 503),
}


def every_error_class() -> list[type[errors.UpgradeError]]:
    for module in pkgutil.walk_packages(shared.__path__, "shared."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, pending = [], [errors.UpgradeError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_a_unique_listed_slug():
    classes = every_error_class()
    assert {cls.slug: (cls.__name__, cls.status) for cls in classes} == SLUGS
    assert len(classes) == len(SLUGS)  # no two classes share a slug


@pytest.mark.parametrize("slug", sorted(SLUGS))
def test_error_class_for_round_trips_every_slug(slug):
    every_error_class()
    cls = errors.error_class_for(slug)
    assert (cls.__name__, cls.status) == SLUGS[slug]
    assert cls.slug == slug
    assert cls("x").problem_type == "urn:product-upgrades:problem:" + slug


@pytest.mark.parametrize("slug", [None, "", "upgrade-failed", "Not-Eligible", "not_eligible", "nope"])
def test_unknown_slugs_fall_back_to_the_base_class(slug):
    cls = errors.error_class_for(slug)
    assert cls is errors.UpgradeError
    assert (cls.status, cls.slug) == (500, "internal")
