"""Tokens the sandbox has issued, so the resource servers can check what they are handed.

Key Vault and Partner Center accept only tokens this sandbox minted, for their own audience and
still unexpired; that is what makes a test fail when the app sends a Key Vault token to Partner
Center, reuses an expired token, or uses an app-only token where App+User is required.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AccessTokenRecord:
    """What an opaque access token stands for."""

    token: str
    issuer: str  # "entra" or "managed_identity"
    resource: str  # audience, e.g. "https://api.partnercenter.microsoft.com"
    scopes: tuple[str, ...]
    client_id: str
    delegated: bool  # True for App+User (refresh-token grant), False for app-only
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def is_for(self, *resources: str) -> bool:
        """True if the audience is one of ``resources`` (case and trailing slash ignored)."""
        mine = self.resource.rstrip("/").lower()
        return any(mine == resource.rstrip("/").lower() for resource in resources)


@dataclass(frozen=True)
class RefreshTokenRecord:
    token: str
    client_id: str
    issued_at: float
    revoked: bool = False
    parent: str | None = None  # the refresh token this one was rotated from (None: a consent)


def new_access_token() -> str:
    return secrets.token_urlsafe(48)


def new_refresh_token() -> str:
    # Real Entra refresh tokens are opaque and start with "0.A"; mimic that so log scrubbers
    # and length checks see something realistic.
    return "0.A" + secrets.token_urlsafe(96)


class TokenStore:
    """Thread-safe registry of issued access and refresh tokens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._access: dict[str, AccessTokenRecord] = {}
        self._refresh: dict[str, RefreshTokenRecord] = {}
        self._refresh_order: list[str] = []

    # --- access tokens ---

    def issue_access_token(
        self,
        *,
        issuer: str,
        resource: str,
        scopes: tuple[str, ...],
        client_id: str,
        delegated: bool,
        lifetime: float,
    ) -> AccessTokenRecord:
        record = AccessTokenRecord(
            token=new_access_token(),
            issuer=issuer,
            resource=resource,
            scopes=scopes,
            client_id=client_id,
            delegated=delegated,
            expires_at=time.time() + lifetime,
        )
        with self._lock:
            self._access[record.token] = record
        return record

    def access_token(self, token: str | None) -> AccessTokenRecord | None:
        if not token:
            return None
        with self._lock:
            return self._access.get(token)

    def expire_access_tokens(self, *, delegated_only: bool = False) -> None:
        """Make issued access tokens expired (to test the refresh path); optionally only the
        delegated (App+User) ones, leaving managed identity tokens valid as Azure would."""
        with self._lock:
            for token, record in self._access.items():
                if record.delegated or not delegated_only:
                    self._access[token] = replace(record, expires_at=0.0)

    def access_tokens(self) -> list[str]:
        """Every access token ever issued (for leak scans)."""
        with self._lock:
            return list(self._access)

    # --- refresh tokens ---

    def add_refresh_token(self, token: str, client_id: str, parent: str | None = None) -> RefreshTokenRecord:
        record = RefreshTokenRecord(token=token, client_id=client_id, issued_at=time.time(), parent=parent)
        with self._lock:
            self._refresh[token] = record
            self._refresh_order.append(token)
        return record

    def issue_refresh_token(self, client_id: str, parent: str | None = None) -> str:
        return self.add_refresh_token(new_refresh_token(), client_id, parent).token

    def refresh_token(self, token: str | None) -> RefreshTokenRecord | None:
        if not token:
            return None
        with self._lock:
            return self._refresh.get(token)

    def revoke_refresh_tokens(self, keep_chain_of: str | None = None) -> None:
        """Every refresh token issued so far becomes invalid (consent withdrawn / expired), except,
        with ``keep_chain_of``, that token and the tokens rotated from it (a newer consent's chain)."""
        with self._lock:
            for token, record in self._refresh.items():
                if keep_chain_of is None or not self._descends_from(token, keep_chain_of):
                    self._refresh[token] = replace(record, revoked=True)

    def _descends_from(self, token: str | None, ancestor: str) -> bool:
        while token is not None:
            if token == ancestor:
                return True
            record = self._refresh.get(token)
            token = record.parent if record else None
        return False

    def is_valid_refresh_token(self, token: str | None) -> bool:
        record = self.refresh_token(token)
        return record is not None and not record.revoked

    def refresh_tokens(self) -> list[str]:
        """Every refresh token ever issued, oldest first (revoked ones included)."""
        with self._lock:
            return list(self._refresh_order)
