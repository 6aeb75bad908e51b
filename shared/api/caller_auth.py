"""Who is calling, and may they: Microsoft Entra ID bearer tokens and one app role per route.

`CALLER_AUTH=entra`: the bearer token (from the `Authorization` header only, never a query
string) must be an RS256 JWT signed by a key of the tenant's OpenID metadata, issued by the v2
(`{authority}/{tid}/v2.0`) or v1 (`https://sts.windows.net/{tid}/`) issuer of a tenant in
`CALLER_TENANT_IDS`, for an audience in `CALLER_AUDIENCES`, within 5 minutes of skew of
`exp`/`nbf`. PyJWT checks signature and claims; the checks before it (alg, tenant) only decide
what to fetch and refuse early. Failures: 401 + `WWW-Authenticate: Bearer error="invalid_token"`;
a valid token without the route's app role: 403 + `error="insufficient_scope"` (RFC 6750).
`CALLER_AUTH=function-key`: the Functions host already checked the key; the caller is recorded
as `function-key`. Anything else fails closed: every route answers the configuration problem.

A route declares its role with `@requires(Role.READ)` (under `@handled`); the check runs before
the handler, so a refused caller causes no settings read beyond these, no storage or Key Vault
client, and no Partner Center call. Identity headers a caller could send (`X-MS-CLIENT-PRINCIPAL`
and the like) are never read. The token itself is never logged.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.correlation import bind_caller_to_log_lines
from shared.errors import ConfigurationError, InsufficientRole, InvalidCallerToken
from shared.runtime import get_caller_settings
from shared.settings import ENTRA, FUNCTION_KEY, CallerSettings, caller_auth_mode
from shared.upgrade_requests.record import APPLICATION, USER, RequestedBy

if TYPE_CHECKING:  # PyJWT (with cryptography) and requests load on the first Entra call, not at import
    import requests

log = logging.getLogger(__name__)

CLOCK_SKEW_SECONDS = 300
MAX_TOKEN_LENGTH = 16 * 1024
REALM = "product-upgrades"
V1_ISSUER = "https://sts.windows.net/{tid}/"
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$", re.ASCII)


class Role(StrEnum):
    """The API's app roles (the app registration defines them; infra/ creates it)."""

    SUBMIT = "ProductUpgrades.Submit"
    READ = "ProductUpgrades.Read"


@dataclass(frozen=True)
class Caller:
    requested_by: RequestedBy
    roles: frozenset[str]


Handler = Callable[[func.HttpRequest, str], func.HttpResponse]

_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def host_auth_level() -> func.AuthLevel:
    """The auth level the Functions host enforces, fixed when `function_app` is indexed: FUNCTION
    (a function key) only with `CALLER_AUTH=function-key`; otherwise ANONYMOUS at the host, and
    the app checks the bearer token (entra) or refuses everything (missing/unknown: fail closed)."""
    return func.AuthLevel.FUNCTION if caller_auth_mode() == FUNCTION_KEY else func.AuthLevel.ANONYMOUS


def requires(role: Role) -> Callable[[Handler], Handler]:
    """Declare the app role a route needs; the caller is authenticated before the handler runs
    and is then available as `current_caller()` (and on every log line as `caller_oid=`)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def wrapper(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
            caller = authenticate(req, role)
            bind_caller_to_log_lines(caller.requested_by.log_id)
            token = _current.set(caller)
            try:
                return handler(req, correlation_id)
            finally:
                _current.reset(token)

        return wrapper

    return decorate


def current_caller() -> Caller:
    """The caller of the request being handled (inside a `@requires` route)."""
    caller = _current.get()
    if caller is None:
        raise RuntimeError("current_caller() outside a @requires route")
    return caller


def authenticate(req: func.HttpRequest, role: Role) -> Caller:
    """The authenticated caller holding `role`; InvalidCallerToken / InsufficientRole otherwise,
    ConfigurationError when CALLER_AUTH and its settings are not usable (fail closed)."""
    settings = get_caller_settings()
    if settings.mode == FUNCTION_KEY:
        return Caller(RequestedBy(kind=APPLICATION, auth_method=FUNCTION_KEY), frozenset(Role))
    if settings.mode != ENTRA:  # the settings loader refuses this already: fail closed here too
        raise ConfigurationError(f"CALLER_AUTH must be one of {ENTRA}, {FUNCTION_KEY}")
    caller = authenticator_for(settings).caller(req)
    if role.value not in caller.roles:
        log.warning(
            "caller_auth.refused status=403 role=%s caller_oid=%s app_id=%s",
            role.value,
            caller.requested_by.object_id,
            caller.requested_by.app_id,
        )
        error = InsufficientRole(
            f"This operation needs the app role {role.value}; the token carries "
            + (", ".join(sorted(caller.roles)) or "no app role"),
            extensions={"requiredRole": role.value},
        )
        error.headers["WWW-Authenticate"] = _challenge("insufficient_scope", error.detail, scope=role.value)
        raise error
    return caller


def _challenge(error: str, description: str, scope: str | None = None) -> str:
    safe = re.sub(r'[^\x20-\x7e]|["\\]', "'", description)
    challenge = f'Bearer realm="{REALM}", error="{error}", error_description="{safe}"'
    return challenge + (f', scope="{scope}"' if scope else "")


def _refuse(detail: str) -> InvalidCallerToken:
    log.warning("caller_auth.refused status=401 reason=%s", detail)
    error = InvalidCallerToken(detail)
    error.headers["WWW-Authenticate"] = _challenge("invalid_token", detail)
    return error


class CallerAuthenticator:
    """Validates bearer tokens for one `CallerSettings`; holds each tenant's signing keys."""

    def __init__(self, settings: CallerSettings, session: requests.Session | None = None) -> None:
        from shared.api.signing_keys import SigningKeys, metadata_url
        from shared.deadlines import SIGNING_KEYS_SECONDS, deadline_session

        self.settings = settings
        # Timeouts and the watchdog from the deadline machinery: a slow or trickling Entra is cut.
        self._session = session or deadline_session(SIGNING_KEYS_SECONDS)
        self.keys = {
            tenant: SigningKeys(metadata_url(settings.authority_host, tenant), self._session)
            for tenant in settings.tenant_ids
        }

    def caller(self, req: func.HttpRequest) -> Caller:
        import jwt

        token = self._bearer_token(req)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _refuse("The bearer token is not a well-formed JWT") from None
        if header.get("alg") != "RS256":
            raise _refuse("Only RS256-signed tokens are accepted")
        tenant = str(unverified.get("tid") or "").lower()
        if tenant not in self.keys:
            raise _refuse("The token's tenant is not allowed to call this API")
        kid = header.get("kid")
        key = self.keys[tenant].key(kid) if isinstance(kid, str) and kid else None
        if key is None:
            raise _refuse("The token is not signed by a current Microsoft Entra ID key")
        issuers = [f"{self.settings.authority_host}/{tenant}/v2.0", V1_ISSUER.format(tid=tenant)]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=list(self.settings.audiences_for(tenant)),
                issuer=issuers,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud", "tid", "oid"]},
            )
        except jwt.ExpiredSignatureError:
            raise _refuse("The token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _refuse("The token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _refuse("The token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _refuse("The token's issuer is not an allowed tenant") from None
        except jwt.PyJWTError as error:
            raise _refuse(f"The token is not valid ({type(error).__name__})") from None
        return _caller_from(claims)

    @staticmethod
    def _bearer_token(req: func.HttpRequest) -> str:
        if "access_token" in req.params:
            raise _refuse("Send the token in the Authorization header, never in the query string")
        scheme, _, token = (req.headers.get("authorization") or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _refuse("An Authorization: Bearer token is required")
        if len(token) > MAX_TOKEN_LENGTH or not _JWT_SHAPE.match(token):
            raise _refuse("The bearer token is not a well-formed JWT")
        return token


def _caller_from(claims: dict[str, Any]) -> Caller:
    roles = claims.get("roles")
    granted = frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset()
    # App-only tokens carry no delegated scopes (`scp`); Entra also marks them `idtyp: app`.
    is_app = claims.get("idtyp") == "app" or "scp" not in claims
    if is_app:
        display = claims.get("app_displayname")
    else:
        display = claims.get("preferred_username") or claims.get("upn") or claims.get("unique_name")
    app_id = claims.get("azp") or claims.get("appid")
    requested_by = RequestedBy(
        kind=APPLICATION if is_app else USER,
        auth_method=ENTRA,
        object_id=str(claims["oid"]),
        app_id=str(app_id) if app_id else None,
        display_name=str(display) if display else None,
        tenant_id=str(claims["tid"]),
    )
    return Caller(requested_by, granted)


_authenticators: dict[CallerSettings, CallerAuthenticator] = {}
_lock = threading.Lock()


def authenticator_for(settings: CallerSettings) -> CallerAuthenticator:
    """One authenticator (and key cache) per process and settings."""
    with _lock:
        found = _authenticators.get(settings)
        if found is None:
            found = _authenticators[settings] = CallerAuthenticator(settings)
        return found


def reset_authenticators() -> None:
    """Forget every authenticator and its cached keys (tests; a restart does the same)."""
    with _lock:
        _authenticators.clear()
