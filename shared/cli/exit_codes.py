"""Exit codes, documented in the README: scripts branch on them."""

from __future__ import annotations

from shared.errors import (
    ConfigurationError,
    CredentialsUnavailable,
    InvalidRequest,
    ReconsentRequired,
    StorageUnavailable,
    UpgradeError,
)
from shared.upgrade_requests.record import COMPLETE, FAILED, PENDING, REJECTED, SUBMITTED, SUBMITTING

OK = 0  # submitted, complete, eligible, run finished
UNEXPECTED = 1  # a bug or an unexpected failure (logged with a stack trace)
USAGE = 2  # bad arguments or input (argparse uses 2 as well)
REFUSED = 3  # rejected, not eligible, failed
NOT_YET = 4  # accepted but not submitted yet (throttled, outcome being resolved)
OPERATOR = 5  # an operator must act: settings, credentials, re-consent, storage unreachable

BY_STATE = {SUBMITTED: OK, COMPLETE: OK, PENDING: NOT_YET, SUBMITTING: NOT_YET, REJECTED: REFUSED, FAILED: REFUSED}
SEVERITY = (OPERATOR, UNEXPECTED, USAGE, REFUSED, NOT_YET, OK)  # a batch exits with the first present


def for_state(state: str) -> int:
    return BY_STATE.get(state, UNEXPECTED)


def for_error(error: UpgradeError) -> int:
    if isinstance(error, ConfigurationError | CredentialsUnavailable | ReconsentRequired | StorageUnavailable):
        return OPERATOR
    if isinstance(error, InvalidRequest):
        return USAGE
    if error.status < 500:
        return REFUSED
    return NOT_YET if error.retry_after is not None else UNEXPECTED


def worst(codes: list[int]) -> int:
    present = set(codes)
    return next((code for code in SEVERITY if code in present), OK)
