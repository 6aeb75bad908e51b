"""Error payloads in each real service's own format.

Client code branches on these shapes (MSAL reads ``error``; azure-core reads Key Vault's
``error.code``; the app reads Partner Center's ``code``/``description``), so the sandbox must
produce each service's format, not a generic one.
"""

from __future__ import annotations

import time
from typing import Any

from .wire import new_guid


def entra_error(error: str, description: str, codes: list[int], correlation_id: str | None = None) -> dict[str, Any]:
    """Microsoft Entra ID (AAD) OAuth2 error, as returned by ``/oauth2/v2.0/token``."""
    trace_id = new_guid()
    correlation_id = correlation_id or new_guid()
    timestamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return {
        "error": error,
        "error_description": f"{description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}"
        f"\r\nTimestamp: {timestamp}",
        "error_codes": codes,
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={codes[0]}" if codes else "",
    }


def key_vault_error(code: str, message: str) -> dict[str, Any]:
    """Azure Key Vault error: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


def partner_center_error(code: int, description: str) -> dict[str, Any]:
    """Partner Center error (error-codes doc): code, description, data, source.

    The doc types ``code`` as string but observed payloads carry numbers; clients should accept
    both, and the sandbox sends numbers.
    """
    return {"code": code, "description": description, "data": [], "source": "PartnerFD"}


def throttled_error(retry_after: str | None) -> dict[str, Any]:
    """Partner Center's 429 body, which uses ``statusCode``/``message`` instead of code/description."""
    seconds = retry_after or "1"
    return {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {seconds} seconds."}


def managed_identity_error(status: int, message: str) -> dict[str, Any]:
    """App Service managed identity endpoint error."""
    return {"statusCode": status, "message": message, "correlationId": new_guid()}
