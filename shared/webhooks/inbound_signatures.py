"""Signed inbound webhooks (on with `INBOUND_SIGNATURES_REQUIRED=true`).

A webhook sender signs `POST /api/product-upgrades` the Standard Webhooks way with the shared
`whsec_...` secret from Key Vault. Verification uses the `standardwebhooks` reference library:
all three headers present, a `v1` HMAC-SHA256 signature over `{id}.{timestamp}.{raw body}`
compared in constant time, and a timestamp within ±5 minutes (the library's tolerance), which
bounds replays; inside that window the `webhook-id` is the request's idempotency key, so a
replayed delivery returns the original request instead of creating another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import Unauthorized

if TYPE_CHECKING:
    from shared.partner_center.key_vault_secrets import SecretStore

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verify_inbound(headers: Mapping[str, str], body: bytes, secrets: SecretStore, secret_name: str) -> str:
    """The verified `webhook-id`; `Unauthorized` (401) for anything missing, stale or forged."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    values = {name: headers.get(name) or "" for name in SIGNATURE_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise Unauthorized(f"Signed webhook required: missing header(s) {', '.join(missing)}")
    try:
        Webhook(secrets.get(secret_name)).verify(body, values, json_parse=False)
    except WebhookVerificationError as error:
        reason = str(error)
        if "timestamp" in reason.lower():
            raise Unauthorized(f"Webhook timestamp outside the 5-minute tolerance ({reason})") from None
        raise Unauthorized("Webhook signature does not match") from None
    except (ValueError, TypeError, UnicodeDecodeError):  # malformed signature list, base64, or body
        raise Unauthorized("Webhook signature does not match") from None
    return values["webhook-id"]
