"""Entra's token signing keys for one tenant, as its OpenID metadata lists them.

`{authority host}/{tenant}/v2.0/.well-known/openid-configuration` names the `jwks_uri`; the key
set there is parsed by PyJWT (`PyJWK`). Keys are cached. A refresh is due when the set is older
than `max_age_seconds` (so a key Entra withdrew stops being accepted), when an unknown `kid`
shows up (Entra rolled its keys), or when the last refresh failed; but at most one refresh starts
per `min_refresh_seconds`, whatever the reason and whether it succeeded or not, so a flood of
tokens with made-up `kid`s, or an Entra outage, costs Entra one request a minute.

Waits (issue 18): the cache's lock guards only its fields and is never held across the network.
A refresh runs on its own thread under its own deadline (`REFRESH_SECONDS`, each read held to
`SIGNING_KEYS_SECONDS` by a `deadline_session`: timeouts and the watchdog, so a trickling
endpoint is cut too), one at a time (single flight). A caller whose `kid` is known never waits
for it: an aged set is refreshed in the background while its keys keep serving. A caller that
needs the refresh (cold cache, unknown `kid`) waits for it no longer than its own answer's
deadline allows (`DeadlineExceeded` then).
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

from shared.deadlines import DEADLINE_RETRY_AFTER_SECONDS, SIGNING_KEYS_SECONDS, deadline, wait_seconds
from shared.errors import DeadlineExceeded, SigningKeysUnavailable

log = logging.getLogger(__name__)

MIN_REFRESH_SECONDS = 60.0  # at most one refresh per minute per tenant (unknown kids, failures)
MAX_AGE_SECONDS = 6 * 3600.0
REFRESH_SECONDS = 2 * SIGNING_KEYS_SECONDS + 1.0  # one refresh: the metadata and the key set


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
        self._loaded_at: float | None = None  # when the keys held were read
        self._attempted_at: float | None = None  # when the last refresh started, success or not
        self._failed = False
        self._flight: threading.Event | None = None  # set when the refresh in flight ends
        self._lock = threading.Lock()  # guards the fields above; never held across the network
        self.fetches = 0  # refreshes started so far (for tests and the benchmark)

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, or None; `SigningKeysUnavailable` when no key could be read, and
        `DeadlineExceeded` when a needed refresh did not end within the answer's deadline."""
        with self._lock:
            known = self._keys.get(kid)
            flight = self._flight
            if flight is None and self._due(kid, self._clock()):
                flight = self._start()
        if known is not None:
            return known  # a known kid never waits on the network
        if flight is not None:
            self._wait_for(flight)
        with self._lock:
            if not self._keys and self._failed:
                raise SigningKeysUnavailable("Microsoft Entra ID signing keys could not be read")
            return self._keys.get(kid)

    def _due(self, kid: str, now: float) -> bool:
        """Whether a refresh should start now (called under the lock, none in flight)."""
        if self._attempted_at is None:
            return True
        if now - self._attempted_at < self._min_refresh:
            return False  # throttled: one refresh per interval, whatever the reason
        if self._loaded_at is None or now - self._loaded_at >= self._max_age:
            return True  # aged out, or the last refresh failed: retry now, not after max age
        if kid not in self._keys:
            log.info("caller_auth.signing_keys_refresh reason=unknown_kid")
            return True
        return False

    def _start(self) -> threading.Event:
        """Start the one refresh (under the lock): stamped now, even if it fails."""
        started = self._clock()
        self._attempted_at = started
        self.fetches += 1
        flight = self._flight = threading.Event()
        threading.Thread(target=self._refresh, args=(flight, started), name="signing-keys", daemon=True).start()
        return flight

    @staticmethod
    def _wait_for(flight: threading.Event) -> None:
        left = wait_seconds()
        if not flight.wait(REFRESH_SECONDS if left is None else left):
            raise DeadlineExceeded(
                "Microsoft Entra ID signing keys were not read within the answer's deadline",
                retry_after=DEADLINE_RETRY_AFTER_SECONDS,
            )

    def _refresh(self, flight: threading.Event, started: float) -> None:
        listed: list[Any] | None = None
        try:
            with deadline(REFRESH_SECONDS, reserve_share=0.0):
                listed = self._download()
        except Exception as error:  # network, watchdog, deadline, bad documents: keep what we had
            log.warning("caller_auth.signing_keys_unavailable reason=%s", type(error).__name__)
        with self._lock:
            if listed is None:
                self._failed = True
            else:
                self._failed = False
                self._keys = _usable_keys(listed)
                self._loaded_at = started
                log.info("caller_auth.signing_keys_loaded count=%s", len(self._keys))
            self._flight = None
        flight.set()

    def _download(self) -> list[Any]:
        jwks_uri = self._get_json(self._metadata).get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
            raise ValueError("OpenID metadata has no https jwks_uri")
        listed = self._get_json(jwks_uri).get("keys")
        if not isinstance(listed, list):
            raise ValueError("the key set has no keys list")
        return listed

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self._session.get(url, timeout=SIGNING_KEYS_SECONDS)
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
