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

from shared.upgrade_requests.record import CALLBACK_DELIVERED, CALLBACK_FAILED, UpgradeRequestRecord, utc_now
from shared.webhooks.callback_urls import CallbackUrlRefused, check_callback_url

if TYPE_CHECKING:
    import requests

    from shared.partner_center.key_vault_secrets import SecretStore

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 10
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

    def __init__(self, secrets: SecretStore, policy: CallbackPolicy, session: requests.Session | None = None) -> None:
        self._secrets = secrets
        self.policy = policy
        self._session = session

    def deliver(self, record: UpgradeRequestRecord) -> UpgradeRequestRecord:
        """Try once; the record with the callback's new state (delivered, retry later, failed)."""
        from standardwebhooks.webhooks import Webhook

        attempts = record.callback_attempts + 1
        body = event_body(record)
        try:
            check_callback_url(record.callback_url, allow_private_networks=self.policy.allow_private_networks)
            signer = Webhook(self._secrets.get(self.policy.signing_secret_name))
            now = utc_now()
            headers = {
                "Content-Type": "application/json",
                "webhook-id": str(record.callback_id),
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(str(record.callback_id), now, body),
            }
            response = self._http().post(
                str(record.callback_url),
                data=body.encode(),
                headers=headers,
                timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
                allow_redirects=False,
            )
            outcome = None if 200 <= response.status_code < 300 else f"receiver answered HTTP {response.status_code}"
        except CallbackUrlRefused as refused:
            return self._finish(record, attempts, CALLBACK_FAILED, refused.detail)  # never retried
        except Exception as error:  # network errors, bad secret: retried with backoff
            outcome = f"delivery failed ({type(error).__name__})"
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

    def _http(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session


def _now_iso() -> str:
    return utc_now().isoformat().replace("+00:00", "Z")
