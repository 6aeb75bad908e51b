"""Exit codes, one table true for every command (README.md shows `TABLE`; a test keeps them equal)."""

from __future__ import annotations

from shared.errors import (
    ConfigurationError,
    CredentialsUnavailable,
    InvalidRequest,
    ReconsentRequired,
    StorageLayoutMismatch,
    StorageUnavailable,
    UpgradeError,
)
from shared.upgrade_requests.record import COMPLETE, FAILED, PENDING, REJECTED, SUBMITTED, SUBMITTING

OK = 0
UNEXPECTED = 1
USAGE = 2
REFUSED = 3
NOT_YET = 4
OPERATOR = 5
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

TABLE: tuple[tuple[int, str], ...] = (
    (OK, "done: submitted, complete, eligible, timer run finished"),
    (UNEXPECTED, "unexpected failure, or Partner Center gave no usable answer (details on stderr)"),
    (USAGE, "bad arguments or input: not a GUID, unknown option, value out of range, unreadable file"),
    (
        REFUSED,
        "the answer is no: rejected, failed, not eligible (an upgrade already in place included), "
        "unknown --request-id or --upgrade-id",
    ),
    (NOT_YET, "accepted but not submitted yet: queued, throttled, outcome being resolved"),
    (
        OPERATOR,
        "an operator must act: settings, credentials, re-consent, storage unreachable "
        "or of another layout (run migrate), stale .localrun/env",
    ),
    (INTERRUPTED, "interrupted (Ctrl-C); a batch first writes its results file, rows not reached marked `not-reached`"),
)


def table_text() -> str:
    """The table for `--help`."""
    return (
        "exit codes (every command; a batch exits with the most severe of its rows: 5, 1, 2, 3, 4, 0):\n"
        + "\n".join(f"  {code}  {meaning}" for code, meaning in TABLE)
    )


BY_STATE = {SUBMITTED: OK, COMPLETE: OK, PENDING: NOT_YET, SUBMITTING: NOT_YET, REJECTED: REFUSED, FAILED: REFUSED}
SEVERITY = (OPERATOR, UNEXPECTED, USAGE, REFUSED, NOT_YET, OK)  # a batch exits with the first present


def for_state(state: str) -> int:
    return BY_STATE.get(state, UNEXPECTED)


def for_error(error: UpgradeError) -> int:
    if isinstance(
        error,
        ConfigurationError | CredentialsUnavailable | ReconsentRequired | StorageUnavailable | StorageLayoutMismatch,
    ):
        return OPERATOR
    if isinstance(error, InvalidRequest):
        return USAGE
    if error.status < 500:
        return REFUSED
    return NOT_YET if error.retry_after is not None else UNEXPECTED


def worst(codes: list[int]) -> int:
    present = set(codes)
    return next((code for code in SEVERITY if code in present), OK)
