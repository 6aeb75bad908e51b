"""Signed access tokens for the app's own callers, as Entra issues them for an API with app roles.

Unlike the opaque tokens Key Vault and Partner Center get (`tokens.py`), a caller token is what
the function app validates itself: an RS256 JWT whose `kid` names a key published at the
tenant's `jwks_uri`, with `aud`, `iss`, `tid`, `oid`, `roles`, `exp`/`nbf` as Entra writes them
(v2: `iss = {authority}/{tid}/v2.0`, `azp`, `preferred_username`; v1: `iss =
https://sts.windows.net/{tid}/`, `appid`, `upn`). The key ring rotates like Entra's: a new key
is published and used, the old one stays listed until retired.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEFAULT_AUDIENCE = "api://csp-upgrades"
SUBMIT = "ProductUpgrades.Submit"
READ = "ProductUpgrades.Read"
BOTH_ROLES = (SUBMIT, READ)


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


@dataclass
class KeyRing:
    """Published signing keys; `current` signs new tokens."""

    keys: list[SigningKey] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys.append(SigningKey(_kid(), new_rsa_key()))

    @property
    def current(self) -> SigningKey:
        with self.lock:
            return self.keys[-1]

    def rotate(self, *, retire_old: bool = False) -> str:
        """Publish a new key and sign with it from now on; with `retire_old`, drop the others."""
        key = SigningKey(_kid(), new_rsa_key())
        with self.lock:
            self.keys = [key] if retire_old else [*self.keys, key]
        return key.kid

    def jwks(self) -> dict[str, Any]:
        with self.lock:
            return {"keys": [key.public_jwk() for key in self.keys]}


def _kid() -> str:
    return secrets.token_urlsafe(20)


@dataclass(frozen=True)
class CallerTokenRequest:
    """What a caller token says. Defaults: a user holding both roles, for `DEFAULT_AUDIENCE`."""

    kind: str = "user"  # "user" (delegated, has scp) or "application" (app-only)
    roles: tuple[str, ...] = BOTH_ROLES
    audience: str = DEFAULT_AUDIENCE
    tenant_id: str | None = None  # default: the sandbox tenant
    issuer_tenant_id: str | None = None  # default: tenant_id (differs only to forge a mismatch)
    version: str = "2.0"
    lifetime: int = 3600
    not_before_offset: int = 0  # seconds from now
    expires_offset: int | None = None  # seconds from now; overrides lifetime
    object_id: str | None = None
    app_id: str | None = None
    username: str | None = None
    extra_claims: dict[str, Any] = field(default_factory=dict)
    omit_claims: tuple[str, ...] = ()


def caller_claims(request: CallerTokenRequest, authority_host: str, default_tenant: str) -> dict[str, Any]:
    now = int(time.time())
    tenant = request.tenant_id or default_tenant
    issuer_tenant = request.issuer_tenant_id or tenant
    app_id = request.app_id or str(uuid.uuid4())
    object_id = request.object_id or str(uuid.uuid4())
    v1 = request.version == "1.0"
    claims: dict[str, Any] = {
        "aud": request.audience,
        "iss": f"https://sts.windows.net/{issuer_tenant}/" if v1 else f"{authority_host}/{issuer_tenant}/v2.0",
        "iat": now,
        "nbf": now + request.not_before_offset,
        "exp": now + (request.expires_offset if request.expires_offset is not None else request.lifetime),
        "oid": object_id,
        "sub": object_id,
        "tid": tenant,
        "ver": request.version,
        "uti": secrets.token_urlsafe(16),
        "roles": list(request.roles),
        "appid" if v1 else "azp": app_id,
    }
    if request.kind == "user":
        claims["scp"] = "user_impersonation"
        claims["name"] = "Sandbox Caller"
        claims["upn" if v1 else "preferred_username"] = request.username or "caller@contosopartner.onmicrosoft.com"
    else:
        claims["idtyp"] = "app"
        claims["app_displayname"] = "Sandbox caller app"
    if not request.roles:
        del claims["roles"]  # Entra omits the claim when no role is assigned
    claims.update(request.extra_claims)
    for name in request.omit_claims:
        claims.pop(name, None)
    return claims


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"})
