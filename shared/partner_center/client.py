"""Partner Center's three product-upgrade operations over one pooled HTTPS session.

Paths live here and nowhere else. Status uses the developer guide's
`POST /v1/productUpgrades/{id}/status`, which is also the form Partner Center's throttling page
lists; the generated REST reference shows a second form without `/status` (see README).

Retry policy (urllib3 `Retry`, mounted once on the session):
- 429 and 503 are retried, honouring `Retry-After`; a Retry-After longer than the inline budget
  is not waited for: the answer goes back to the caller as "throttled" with that Retry-After.
- Connection failures before the request is sent are retried: nothing reached Partner Center.
- Read timeouts, resets after sending and other 5xx are NOT retried here. For the create call
  they are ambiguous (the upgrade may exist) and raise `AmbiguousCreate`, which the upgrade
  service resolves without firing a blind second create. So does a 2xx without a usable
  `Location`: Partner Center accepted something, but we cannot tell which upgrade.
Every retry of one call resends the same headers, so the same `MS-RequestId`: Partner Center
uses it for idempotency.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from shared.correlation import CallContext
from shared.deadlines import CONNECT_SECONDS, deadline_session, expired, read_environment_once
from shared.errors import (
    CredentialsUnavailable,
    CustomerAccessDenied,
    DeadlineExceeded,
    NotEligible,
    PartnerCenterRejected,
    UpgradeError,
    UpstreamConflict,
    UpstreamError,
    UpstreamNotFound,
    UpstreamThrottled,
)
from shared.identifiers import GUID_PATTERN

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import requests

log = logging.getLogger(__name__)

CREATE_PATH = "/v1/productUpgrades"
ELIGIBILITY_PATH = "/v1/productUpgrades/eligibility"
STATUS_PATH = "/v1/productUpgrades/{upgrade_id}/status"

APPLICATION_NAME = "csp-product-upgrade-function"
CONNECT_TIMEOUT_SECONDS = CONNECT_SECONDS  # every connect timeout is set in shared.deadlines
MAX_STATUS_RETRIES = 2
MAX_CONNECT_RETRIES = 1
BACKOFF_FACTOR = 0.5
BACKOFF_MAX_SECONDS = 4.0
DEFAULT_RETRY_AFTER_SECONDS = 30  # when a 429/503 names no Retry-After

_LOCATION_PATH = re.compile(rf"/productUpgrades/({GUID_PATTERN})/?$", re.IGNORECASE | re.ASCII)

# Partner Center error codes (error-codes page) that mean "this customer cannot be upgraded".
NOT_ELIGIBLE_CODES = frozenset({"900105", "900107", "900108", "900119", "900120", "900130"})
# ... and those that mean "an upgrade for this customer already exists" (in progress or done).
UPGRADE_EXISTS_CODES = frozenset({"900109", "900110", "900111", "900112", "900113", "900114"})


class AmbiguousCreate(Exception):
    """The create call may have reached Partner Center, but no answer came back."""


@dataclass(frozen=True)
class Eligibility:
    customer_id: str
    product_family: str
    is_eligible: bool
    upgrade_id: str | None
    reason: str | None

    def public_view(self) -> dict[str, object]:
        """As callers see it (camelCase, Partner Center's field names)."""
        return {
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "isEligible": self.is_eligible,
            "upgradeId": self.upgrade_id,
            "reason": self.reason,
        }


def parse_upgrade_id(location: str | None, base_url: str) -> str:
    """The upgrade GUID from a create response's `Location`, relative or absolute, strictly."""
    if not location:
        raise UpstreamError("Partner Center accepted the upgrade but sent no Location header")
    absolute = urljoin(base_url.rstrip("/") + "/v1/", location.strip())
    match = _LOCATION_PATH.search(urlsplit(absolute).path)
    if not match:
        raise UpstreamError("Partner Center's Location header does not name a product upgrade GUID")
    return match.group(1).lower()


class PartnerCenterClient:
    """Calls Partner Center with App+User tokens, one pooled session, bounded retries."""

    def __init__(
        self,
        endpoint: str,
        access_token: Callable[..., str],
        *,
        read_timeout_seconds: float,
        max_retry_after_seconds: int,
        session: requests.Session | None = None,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._access_token = access_token
        self._timeout = (CONNECT_TIMEOUT_SECONDS, read_timeout_seconds)
        self._max_retry_after = max_retry_after_seconds
        self._session = session or build_session(max_retry_after_seconds, self.worst_case_seconds, self._endpoint)

    @property
    def endpoint(self) -> str:
        """The Partner Center root URL every path is sent to (no trailing slash)."""
        return self._endpoint

    @property
    def worst_case_seconds(self) -> float:
        """Longest one call can take with every retry spent: each answered attempt waits the full
        read timeout, each failed connect the connect timeout, each retry the longest wait we
        accept inline. Kept well under Power Automate's 120 s synchronous limit."""
        connect, read = self._timeout
        answered_attempts = 1 + MAX_STATUS_RETRIES
        waits = MAX_STATUS_RETRIES * max(self._max_retry_after, BACKOFF_MAX_SECONDS)
        return answered_attempts * (connect + read) + MAX_CONNECT_RETRIES * connect + waits

    def create_upgrade(self, customer_id: str, product_family: str, context: CallContext) -> str:
        """Start the upgrade; the new upgrade id (raises AmbiguousCreate when the outcome is unknown)."""
        import requests

        try:
            response = self._post(CREATE_PATH, customer_id, product_family, context)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
            raise UpstreamError(f"Partner Center is unreachable ({type(error).__name__})") from None
        except requests.RequestException as error:
            if _never_sent(error):
                raise UpstreamError(f"Partner Center is unreachable ({type(error).__name__})") from None
            raise AmbiguousCreate(type(error).__name__) from None
        if response.status_code in (200, 201, 202):
            try:
                return parse_upgrade_id(response.headers.get("Location"), self._endpoint)
            except UpstreamError as error:
                # Accepted, but we cannot tell which upgrade: as unresolved as a lost answer.
                raise AmbiguousCreate(error.detail) from None
        if response.status_code in (500, 502, 504):
            raise AmbiguousCreate(f"HTTP {response.status_code}")
        raise _error_from(response, context)

    def eligibility(self, customer_id: str, product_family: str, context: CallContext) -> Eligibility:
        body = self._query(ELIGIBILITY_PATH, customer_id, product_family, context)
        upgrade_id = body.get("upgradeId")
        reason = body.get("reason")
        return Eligibility(
            customer_id=str(body.get("customerId") or customer_id),
            product_family=str(body.get("productFamily") or product_family),
            is_eligible=body.get("isEligible") is True,
            upgrade_id=str(upgrade_id).lower() if upgrade_id else None,
            reason=str(reason) if reason else None,
        )

    def upgrade_status(
        self, upgrade_id: str, customer_id: str, product_family: str, context: CallContext
    ) -> dict[str, Any]:
        """Partner Center's ProductUpgradesStatus resource, as it sent it."""
        return self._query(STATUS_PATH.format(upgrade_id=upgrade_id), customer_id, product_family, context)

    def get_json(self, path: str, context: CallContext, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET `path` (from the endpoint's root, query included) as a JSON object, with the same
        token, 401 renewal, retries, deadlines, tracing headers and error mapping as the product
        upgrade calls. `headers`: extra headers the resource asks for (a `links.next` entry's
        `MS-ContinuationToken`); ours (Authorization, MS-RequestId, ...) are never overridden."""
        import requests

        try:
            response = self._send(path, None, context, self._token(), method="GET", extra_headers=headers)
            if response.status_code == 401:
                log.warning("partner_center.unauthorized_retrying correlation_id=%s", context.correlation_id)
                token = self._token(force_refresh=True)
                response = self._send(path, None, context, token, method="GET", extra_headers=headers)
        except requests.RequestException as error:
            raise UpstreamError(f"Partner Center did not answer ({type(error).__name__})") from None
        return self._json_object(response, context)

    def _query(self, path: str, customer_id: str, product_family: str, context: CallContext) -> dict[str, Any]:
        import requests

        try:
            response = self._post(path, customer_id, product_family, context)
        except requests.RequestException as error:
            raise UpstreamError(f"Partner Center did not answer ({type(error).__name__})") from None
        return self._json_object(response, context)

    def _json_object(self, response: requests.Response, context: CallContext) -> dict[str, Any]:
        if response.status_code != 200:
            raise _error_from(response, context)
        try:
            body = response.json()
        except ValueError:
            raise UpstreamError("Partner Center answered with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise UpstreamError("Partner Center answered with an unexpected JSON shape")
        return body

    def _post(self, path: str, customer_id: str, product_family: str, context: CallContext) -> requests.Response:
        """POST with auth; on 401 renew the token once and resend (401 means nothing was done)."""
        body = json.dumps({"customerId": customer_id, "productFamily": product_family})
        response = self._send(path, body, context, self._token())
        if response.status_code == 401:
            log.warning("partner_center.unauthorized_retrying correlation_id=%s", context.correlation_id)
            response = self._send(path, body, context, self._token(force_refresh=True))
        return response

    def _token(self, *, force_refresh: bool = False) -> str:
        """The App+User token; a token that could not be had because the answer's deadline ran out
        is `DeadlineExceeded` (try again later), not a credentials problem for an operator."""
        try:
            return self._access_token(force_refresh=True) if force_refresh else self._access_token()
        except CredentialsUnavailable:
            if expired():
                raise DeadlineExceeded("No App+User token could be had within the deadline") from None
            raise

    def _send(
        self,
        path: str,
        body: str | None,
        context: CallContext,
        token: str,
        *,
        method: str = "POST",
        extra_headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        headers = {
            **(extra_headers or {}),
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "MS-Contract-Version": "v1",
            "MS-CorrelationId": context.correlation_id,
            "MS-RequestId": context.request_id,
            "MS-PartnerCenter-Application": APPLICATION_NAME,
            "X-Locale": "en-US",
        }
        if body is None:
            del headers["Content-Type"]
        started = time.monotonic()
        send = self._session.get if method == "GET" else self._session.post
        response = send(self._endpoint + path, data=body, headers=headers, timeout=self._timeout)
        log.info(
            "partner_center.call path=%s status=%s duration_ms=%d correlation_id=%s request_id=%s",
            _path_template(urlsplit(path).path),
            response.status_code,
            (time.monotonic() - started) * 1000,
            context.correlation_id,
            context.request_id,
        )
        return response


def build_session(max_retry_after_seconds: int, worst_case_seconds: float, endpoint: str) -> requests.Session:
    """A pooled session with the retry policy described in the module docstring; each call (all
    its retries included) is held to `worst_case_seconds` and the answer's deadline. Proxy and CA
    settings are read once, for `endpoint` (`shared.deadlines.read_environment_once`)."""
    from shared.partner_center.retry_policy import InlineRetry

    retry = InlineRetry(
        total=None,
        connect=MAX_CONNECT_RETRIES,
        read=0,
        other=0,
        status=MAX_STATUS_RETRIES,
        redirect=0,
        status_forcelist=frozenset({429, 503}),
        allowed_methods=None,  # POST too: 429/503 mean "not processed", and MS-RequestId dedups
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=BACKOFF_MAX_SECONDS,
        respect_retry_after_header=True,
        retry_after_max=max_retry_after_seconds,
        raise_on_status=False,
    )
    session = deadline_session(worst_case_seconds, retry=retry)
    read_environment_once(session, endpoint)
    return session


def _never_sent(error: Exception) -> bool:
    """True when the failure happened while connecting, so Partner Center saw nothing."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _path_template(path: str) -> str:
    return re.sub(GUID_PATTERN, "{id}", path)


def _error_from(response: requests.Response, context: CallContext) -> UpgradeError:
    """Map a Partner Center error answer to our hierarchy, keeping its code for the operator."""
    code, description = _error_body(response)
    extensions: dict[str, int | str] = {"partnerCenterStatus": response.status_code}
    if code:
        extensions["partnerCenterErrorCode"] = code
    detail = f"Partner Center answered HTTP {response.status_code}" + (f" (code {code})" if code else "")
    if description:
        detail += f": {description}"
    status = response.status_code
    if status in (429, 503):
        retry_after = _retry_after_seconds(response)
        return UpstreamThrottled(
            detail + " — throttled or unavailable beyond the inline retry budget",
            retry_after=retry_after,
            extensions=extensions,
        )
    if code in NOT_ELIGIBLE_CODES:
        return NotEligible(detail, extensions=extensions)
    if code in UPGRADE_EXISTS_CODES or status == 409:
        return UpstreamConflict(detail, extensions=extensions)
    if status == 403:
        return CustomerAccessDenied(detail, extensions=extensions)
    if status == 404:
        return UpstreamNotFound(detail, extensions=extensions)
    if status == 401:
        return UpstreamError(detail + " — the App+User token was refused twice", extensions=extensions)
    if 400 <= status < 500:
        return PartnerCenterRejected(detail, extensions=extensions)
    return UpstreamError(detail, extensions=extensions)


def _error_body(response: requests.Response) -> tuple[str | None, str | None]:
    """(code, description) from either error shape: {code, description} or 429's {statusCode, message}."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    description = body.get("description") or body.get("message")
    code_text = str(code) if code is not None else None
    text = str(description)[:500] if description else None
    return code_text, text


def _retry_after_seconds(response: requests.Response) -> int:
    """Retry-After as whole seconds (delta or HTTP date); a default when absent or unreadable."""
    from urllib3.exceptions import InvalidHeader
    from urllib3.util.retry import Retry

    value = response.headers.get("Retry-After")
    if not value:
        return DEFAULT_RETRY_AFTER_SECONDS
    try:
        return max(1, math.ceil(Retry().parse_retry_after(value)))
    except InvalidHeader:
        return DEFAULT_RETRY_AFTER_SECONDS
