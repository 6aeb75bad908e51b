"""Entra's token signing keys for one tenant, as its OpenID metadata lists them.

`{authority host}/{tenant}/v2.0/.well-known/openid-configuration` names the `jwks_uri`; the key
set there is parsed by PyJWT (`PyJWK`). Keys are cached; an unknown `kid` (Entra rolled its keys)
triggers a refresh, but at most one per `min_refresh_seconds`, so a flood of tokens with made-up
`kid`s costs Entra one request, not one per token. The whole set is also refreshed after
`max_age_seconds` even when every `kid` is known, so a key Entra withdrew stops being accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests

from shared.errors import SigningKeysUnavailable

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 5
MIN_REFRESH_SECONDS = 60.0  # unknown kids: at most one refresh per minute per tenant
MAX_AGE_SECONDS = 6 * 3600.0


def _monotonic() -> float:
    """The cache's clock (a module function, so a test can move it without touching `time`)."""
    return time.monotonic()


def metadata_url(authority_host: str, tenant_id: str) -> str:
    return f"{authority_host.rstrip('/')}/{tenant_id}/v2.0/.well-known/openid-configuration"


class SigningKeys:
    """The signing keys of one tenant: `key(kid)` is the `PyJWK` or None."""

    def __init__(
        self,
        metadata: str,
        session: requests.Session,
        *,
        min_refresh_seconds: float = MIN_REFRESH_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._metadata = metadata
        self._session = session
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._clock = clock or _monotonic
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed = False
        self._lock = threading.Lock()
        self.fetches = 0  # key set downloads so far (for tests and the benchmark)

    def key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self._max_age:
                self._refresh(now)
            elif kid not in self._keys and now - self._fetched_at >= self._min_refresh:
                log.info("caller_auth.signing_keys_refresh reason=unknown_kid")
                self._refresh(now)
            if not self._keys and self._failed:
                raise SigningKeysUnavailable("Microsoft Entra ID signing keys could not be read")
            return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        self._fetched_at = now  # also on failure: a broken Entra is not asked on every request
        self.fetches += 1
        try:
            jwks_uri = self._get_json(self._metadata).get("jwks_uri")
            if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
                raise ValueError("OpenID metadata has no https jwks_uri")
            listed = self._get_json(jwks_uri).get("keys")
            if not isinstance(listed, list):
                raise ValueError("the key set has no keys list")
        except (requests.RequestException, ValueError) as error:
            log.warning("caller_auth.signing_keys_unavailable reason=%s", type(error).__name__)
            self._failed = True
            return  # keep the keys we had, if any
        self._failed = False
        self._keys = _usable_keys(listed)
        log.info("caller_auth.signing_keys_loaded count=%s", len(self._keys))

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self._session.get(url, timeout=FETCH_TIMEOUT_SECONDS)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document


def _usable_keys(listed: list[Any]) -> dict[str, jwt.PyJWK]:
    """RSA signing keys with a kid; anything else in the set (encryption keys, other types) is skipped."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in listed:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm="RS256")
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return keys
