"""Completion callbacks: the final record POSTed to the caller's URL, signed, retried, recorded.

Format: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`), signed with the `whsec_...` secret from Key Vault via
the `standardwebhooks` reference library, so receivers can verify with any Standard Webhooks
library. `webhook-id` is fixed per request: a redelivery after a lost acknowledgement carries the
same id, so a receiver that deduplicates on it never sees the same completion twice as new.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.deadlines import CALLBACK_SECONDS, CONNECT_SECONDS, bounded, call_seconds, deadline_session
from shared.errors import DeadlineExceeded, UpgradeError
from shared.upgrade_requests.record import CALLBACK_DELIVERED, CALLBACK_FAILED, UpgradeRequestRecord, utc_now
from shared.webhooks.callback_urls import CallbackHostUnresolved, CallbackTarget, CallbackUrlRefused, callback_target

if TYPE_CHECKING:
    from shared.partner_center.key_vault_secrets import SecretStore

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024  # the receiver's answer body is read this far and dropped
NO_ANSWER = "no answer from the receiver (connection refused, reset, timed out or TLS failed)"
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600
EVENT_TYPES = {
    "complete": "product-upgrade.completed",
    "failed": "product-upgrade.failed",
    "rejected": "product-upgrade.rejected",
}


@dataclass(frozen=True)
class CallbackPolicy:
    signing_secret_name: str
    allow_private_networks: bool
    max_attempts: int


def callback_retry_delay(attempts: int) -> int:
    """Seconds before the next delivery after `attempts` failed ones: 30, 60, 120 ... capped at an hour."""
    return int(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)))


def event_body(record: UpgradeRequestRecord) -> str:
    return json.dumps(
        {
            "type": EVENT_TYPES.get(record.state, "product-upgrade.updated"),
            "timestamp": _now_iso(),
            "data": record.public_view(),
        },
        separators=(",", ":"),
    )


class CallbackSender:
    """Delivers one callback and says what to record; never raises for a receiver's failure."""

    def __init__(self, secrets: SecretStore, policy: CallbackPolicy) -> None:
        self._secrets = secrets
        self.policy = policy

    def deliver(self, record: UpgradeRequestRecord) -> UpgradeRequestRecord:
        """Try once; the record with the callback's new state (delivered, retry later, failed)."""
        from standardwebhooks.webhooks import Webhook

        attempts = record.callback_attempts + 1
        body = event_body(record)
        try:
            target = callback_target(record.callback_url, allow_private_networks=self.policy.allow_private_networks)
            signer = Webhook(self._secrets.get(self.policy.signing_secret_name))
            now = utc_now()
            headers = {
                "Content-Type": "application/json",
                "webhook-id": str(record.callback_id),
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(str(record.callback_id), now, body),
            }
            status = self._post(target, body.encode(), headers)
            outcome = None if 200 <= status < 300 else f"receiver answered HTTP {status}"
        except CallbackHostUnresolved:  # DNS may answer next time: retried like any failure
            outcome = "the callback host did not resolve"
        except CallbackUrlRefused as refused:
            return self._finish(record, attempts, CALLBACK_FAILED, refused.detail)  # refused by rule: final
        except DeadlineExceeded:
            outcome = "no time left for the delivery within the answer's deadline"
        except UpgradeError as error:  # the signing secret could not be read: an operator's problem
            outcome = f"not sent: {error.detail}"
        except Exception as error:  # network errors: retried with backoff
            # One text for every network failure (refused, reset, TLS, timeout): the error a caller
            # can read back must not tell one unreachable port from another.
            log.info("callback.no_answer request_id=%s error=%s", record.request_id, type(error).__name__)
            outcome = NO_ANSWER
        if outcome is None:
            log.info("callback.delivered request_id=%s attempts=%s", record.request_id, attempts)
            return record.evolve(
                callback_state=CALLBACK_DELIVERED,
                callback_attempts=attempts,
                callback_delivered_at=utc_now(),
                callback_last_error=None,
                callback_next_at=None,
            )
        if attempts >= self.policy.max_attempts:
            return self._finish(record, attempts, CALLBACK_FAILED, f"gave up after {attempts} attempts: {outcome}")
        delay = callback_retry_delay(attempts)
        log.warning("callback.retry_later request_id=%s attempts=%s reason=%s", record.request_id, attempts, outcome)
        return record.evolve(
            callback_attempts=attempts,
            callback_last_error=outcome,
            callback_next_at=utc_now() + timedelta(seconds=delay),
        )

    def _finish(self, record: UpgradeRequestRecord, attempts: int, state: str, reason: str) -> UpgradeRequestRecord:
        log.error("callback.failed request_id=%s attempts=%s reason=%s", record.request_id, attempts, reason)
        return record.evolve(
            callback_state=state, callback_attempts=attempts, callback_last_error=reason, callback_next_at=None
        )

    def _post(self, target: CallbackTarget, body: bytes, headers: dict[str, str]) -> int:
        """POST to the checked address (Host, SNI and certificate for the name), within one total
        deadline for connect + TLS + send + answer; read at most `MAX_ANSWER_BYTES` of the answer.
        No proxy, .netrc or CA bundle from the environment (`trust_env=False`), no redirects."""
        seconds = call_seconds(CALLBACK_SECONDS)
        pool_kwargs: dict[str, Any] = {}
        if target.scheme == "https":
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        # A session per delivery: its pool is bound to this one checked address and host name.
        session = deadline_session(CALLBACK_SECONDS, **pool_kwargs)
        session.trust_env = False
        try:
            with bounded(seconds):
                response = session.post(
                    target.pinned_url,
                    data=body,
                    headers={**headers, "Host": target.host_header},
                    timeout=(min(CONNECT_SECONDS, seconds), seconds),
                    allow_redirects=False,
                    stream=True,
                )
                try:
                    response.raw.read(MAX_ANSWER_BYTES, decode_content=False)
                finally:
                    response.close()
                return int(response.status_code)
        finally:
            session.close()


def _now_iso() -> str:
    return utc_now().isoformat().replace("+00:00", "Z")
