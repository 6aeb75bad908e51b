"""Fake Microsoft Entra ID: OIDC discovery and the token endpoint (v2 and v1).

MSAL is used unmodified against it, so the wire format follows real Entra closely: MSAL needs
discovery (``authorization_endpoint``, ``token_endpoint``), and to build an *account* (which
``acquire_token_silent`` needs) it needs ``client_info`` and an ``id_token`` in the token
response. MSAL decodes but does not verify the id_token, so it is an unsigned JWT.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from .error_bodies import entra_error
from .state import PARTNER_CENTER_RESOURCE, SandboxState
from .wire import Request, Response

if TYPE_CHECKING:
    from .faults import FaultAction

OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
GRAPH_RESOURCE = "https://graph.microsoft.com"
_NO_CACHE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _correlation_id(request: Request) -> str | None:
    return request.headers.get("client-request-id")


def _headers(request: Request) -> dict[str, str]:
    headers = dict(_NO_CACHE)
    correlation = _correlation_id(request)
    if correlation:
        headers["client-request-id"] = correlation
    return headers


def _error(request: Request, status: int, error: str, description: str, code: int) -> Response:
    body = entra_error(error, description, [code], _correlation_id(request))
    return Response.json(status, body, _headers(request))


def _known_tenant(state: SandboxState, tenant: str) -> bool:
    """The tenant GUID or its domain name, as Entra accepts both in the authority."""
    return tenant.lower() in (state.identities.tenant_id.lower(), state.identities.tenant_domain.lower())


def _unknown_tenant(request: Request, tenant: str) -> Response:
    return _error(
        request,
        400,
        "invalid_tenant",
        f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud.",
        90002,
    )


def openid_configuration(request: Request, state: SandboxState, tenant: str) -> Response:
    """``GET /{tenant}/v2.0/.well-known/openid-configuration``."""
    if not _known_tenant(state, tenant):
        return _unknown_tenant(request, tenant)
    base = f"{state.base_url}/{state.identities.tenant_id}"
    document = {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{state.base_url}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }
    return Response.json(200, document, _headers(request))


def jwks(request: Request, state: SandboxState, tenant: str) -> Response:
    """``GET /{tenant}/discovery/v2.0/keys``: the keys that sign caller tokens (``caller_tokens``),
    current and not yet retired. (MSAL's id_tokens stay unsigned: MSAL never verifies them.)"""
    if not _known_tenant(state, tenant):
        return _unknown_tenant(request, tenant)
    return Response.json(200, state.signing_keys.jwks(), _headers(request))


def _id_token(state: SandboxState, client_id: str, lifetime: int) -> str:
    now = int(time.time())
    ids = state.identities
    claims = {
        "aud": client_id,
        "iss": f"{state.base_url}/{ids.tenant_id}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "name": ids.display_name,
        "oid": ids.user_object_id,
        "preferred_username": ids.username,
        "sub": _b64url(f"{ids.user_object_id}:{client_id}".encode())[:43],
        "tid": ids.tenant_id,
        "uti": _b64url(json.dumps(now).encode()),
        "ver": "2.0",
    }
    header = {"typ": "JWT", "alg": "none"}
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}."


def _client_info(state: SandboxState) -> str:
    info = {"uid": state.identities.user_object_id, "utid": state.identities.tenant_id}
    return _b64url(json.dumps(info).encode())


def _client_credentials_from(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """Client id/secret from the form (client_secret_post) or HTTP Basic (client_secret_basic)."""
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            basic_id, _, basic_secret = base64.b64decode(encoded).decode("utf-8").partition(":")
        except ValueError:
            return client_id, client_secret
        client_id, client_secret = client_id or basic_id, client_secret or basic_secret
    return client_id, client_secret


def _supported_grant_client(request: Request, state: SandboxState, form: dict[str, str]) -> Response | str:
    """Both token endpoints: a grant type we speak, then a known client with the right secret."""
    grant_type = form.get("grant_type")
    if grant_type not in ("refresh_token", "client_credentials"):
        return _error(
            request,
            400,
            "unsupported_grant_type",
            f"AADSTS70003: The app requested an unsupported grant type '{grant_type}'.",
            70003,
        )
    return _check_client(request, state, form)


def _check_client(request: Request, state: SandboxState, form: dict[str, str]) -> Response | str:
    """The authenticated client id, or the Entra error for a wrong app id / secret."""
    client_id, client_secret = _client_credentials_from(request, form)
    ids = state.identities
    if not client_id:
        return _error(
            request,
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
            900144,
        )
    if client_id.lower() != ids.app_id.lower():
        return _error(
            request,
            400,
            "unauthorized_client",
            f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory "
            f"'{ids.tenant_id}'. This can happen if the application has not been installed by the administrator "
            "of the tenant or consented to by any user in the tenant.",
            700016,
        )
    if not client_secret:
        return _error(
            request,
            401,
            "invalid_client",
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
            7000218,
        )
    if client_secret != ids.app_secret:
        return _error(
            request,
            401,
            "invalid_client",
            f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app '{ids.app_id}'.",
            7000215,
        )
    return ids.app_id


def _resource_of(scope: str) -> str:
    """``https://api.partnercenter.microsoft.com/user_impersonation`` -> the resource URI."""
    if "/" not in scope:
        return GRAPH_RESOURCE  # bare scopes such as "User.Read" mean Microsoft Graph
    return scope.rsplit("/", 1)[0]


def _granted_scope(scope: str) -> str:
    """What Entra reports as granted: ``.default`` expands to the consented delegated permission.

    For Partner Center the only delegated permission is ``user_impersonation``. Real Entra does
    this expansion too, which matters for MSAL: it caches the token under the *granted* scopes.
    """
    resource = _resource_of(scope)
    if scope.endswith("/.default") and resource.lower() == PARTNER_CENTER_RESOURCE:
        return f"{resource}/user_impersonation"
    return scope


def _parse_v2_scope(request: Request, form: dict[str, str]) -> Response | tuple[str, list[str], set[str]]:
    """(resource, resource scopes, OIDC scopes) from a v2 ``scope`` field, or an error."""
    requested = form.get("scope", "").split()
    if not requested:
        return _error(
            request,
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
            900144,
        )
    oidc = {scope for scope in requested if scope.lower() in OIDC_SCOPES}
    resource_scopes = [scope for scope in requested if scope.lower() not in OIDC_SCOPES]
    if not resource_scopes:
        resource_scopes = [f"{GRAPH_RESOURCE}/User.Read"]  # what Entra does for OIDC-only requests
    resources = {_resource_of(scope).lower() for scope in resource_scopes}
    if len(resources) > 1:
        return _error(
            request,
            400,
            "invalid_scope",
            "AADSTS28000: Provided value for the input parameter scope is not valid because it contains more than "
            "one resource. Scope " + " ".join(requested) + " is not valid.",
            28000,
        )
    return _resource_of(resource_scopes[0]), resource_scopes, oidc


def _invalid_grant(request: Request) -> Response:
    return _error(
        request,
        400,
        "invalid_grant",
        "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime(time.time() - 91 * 86400))} and was inactive "
        "for 90.00:00:00.",
        700082,
    )


def _redeem_refresh_token(
    request: Request, state: SandboxState, form: dict[str, str], client_id: str
) -> Response | str:
    """Validate the presented refresh token; return the one to hand back (rotated or not)."""
    presented = form.get("refresh_token")
    if not presented:
        return _error(
            request,
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'refresh_token'.",
            900144,
        )
    record = state.tokens.refresh_token(presented)
    if record is None or record.revoked:
        return _invalid_grant(request)
    if record.client_id.lower() != client_id.lower():
        return _error(
            request,
            400,
            "invalid_grant",
            "AADSTS70000: Provided grant is invalid or malformed. The refresh token was issued to a different client.",
            70000,
        )
    # Entra hands out a new refresh token on every use and does not revoke the old one.
    return state.tokens.issue_refresh_token(client_id, parent=presented) if state.rotate_refresh_token else presented


def token_v2(request: Request, state: SandboxState, tenant: str) -> Response:
    """``POST /{tenant}/oauth2/v2.0/token``: refresh_token and client_credentials grants."""
    if not _known_tenant(state, tenant):
        return _unknown_tenant(request, tenant)
    form = request.form()
    grant_type = form.get("grant_type")
    if not grant_type:
        return _error(
            request,
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
            900144,
        )
    client = _supported_grant_client(request, state, form)
    if isinstance(client, Response):
        return client
    parsed = _parse_v2_scope(request, form)
    if isinstance(parsed, Response):
        return parsed
    resource, resource_scopes, oidc = parsed
    lifetime = int(state.access_token_lifetime)

    if grant_type == "client_credentials":
        if len(resource_scopes) != 1 or not resource_scopes[0].endswith("/.default"):
            return _error(
                request,
                400,
                "invalid_scope",
                f"AADSTS1002012: The provided value for scope {form.get('scope')} is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
                1002012,
            )
        if resource in state.caller_audiences:
            return _caller_app_token(request, state, client, resource, lifetime)
        record = state.tokens.issue_access_token(
            issuer="entra",
            resource=resource,
            scopes=tuple(resource_scopes),
            client_id=client,
            delegated=False,
            lifetime=lifetime,
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": record.token,
        }
        return Response.json(200, body, _headers(request))

    refresh_token = _redeem_refresh_token(request, state, form, client)
    if isinstance(refresh_token, Response):
        return refresh_token
    granted = [_granted_scope(scope) for scope in resource_scopes]
    record = state.tokens.issue_access_token(
        issuer="entra",
        resource=resource,
        scopes=tuple(granted),
        client_id=client,
        delegated=True,
        lifetime=lifetime,
    )
    body = {
        "token_type": "Bearer",
        "scope": " ".join(granted),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": record.token,
        "refresh_token": refresh_token,
    }
    if "openid" in {scope.lower() for scope in oidc}:
        body["id_token"] = _id_token(state, client, lifetime)
    if form.get("client_info") == "1":
        body["client_info"] = _client_info(state)
    return Response.json(200, body, _headers(request))


def _caller_app_token(request: Request, state: SandboxState, client: str, audience: str, lifetime: int) -> Response:
    """Client credentials for the API itself (what the HTTP action's "Active Directory OAuth" and a
    webhook sender do): a signed JWT with the app roles assigned to this client."""
    from .caller_tokens import CallerTokenRequest, caller_claims, sign

    wanted = CallerTokenRequest(
        kind="application",
        roles=state.caller_app_roles.get(client.lower(), ()),
        audience=audience,
        app_id=client,
        object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-service-principal:{client.lower()}")),
        lifetime=lifetime,
    )
    token = sign(caller_claims(wanted, state.base_url, state.identities.tenant_id), state.signing_keys.current)
    state.caller_tokens.append(token)
    body = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
    return Response.json(200, body, _headers(request))


def token_v1(request: Request, state: SandboxState, tenant: str) -> Response:
    """``POST /{tenant}/oauth2/token``: the AAD v1 form the Partner Center docs use (``resource=``)."""
    if not _known_tenant(state, tenant):
        return _unknown_tenant(request, tenant)
    form = request.form()
    grant_type = form.get("grant_type")
    client = _supported_grant_client(request, state, form)
    if isinstance(client, Response):
        return client
    resource = form.get("resource")
    if not resource:
        return _error(
            request,
            400,
            "invalid_request",
            "AADSTS50001: The application must specify a resource ('resource' parameter).",
            50001,
        )
    resource = resource.rstrip("/")
    lifetime = int(state.access_token_lifetime)
    delegated = grant_type == "refresh_token"
    refresh_token: str | None = None
    if delegated:
        redeemed = _redeem_refresh_token(request, state, form, client)
        if isinstance(redeemed, Response):
            return redeemed
        refresh_token = redeemed
    scope = "user_impersonation" if delegated else ""
    record = state.tokens.issue_access_token(
        issuer="entra",
        resource=resource,
        scopes=(f"{resource}/{scope or '.default'}",),
        client_id=client,
        delegated=delegated,
        lifetime=lifetime,
    )
    now = int(time.time())
    body = {
        "token_type": "Bearer",
        "expires_in": str(lifetime),
        "ext_expires_in": str(lifetime),
        "expires_on": str(now + lifetime),
        "not_before": str(now),
        "resource": resource,
        "access_token": record.token,
    }
    if delegated:
        body.update(scope=scope, refresh_token=refresh_token or "", id_token=_id_token(state, client, lifetime))
    return Response.json(200, body, _headers(request))


def fault_response(request: Request, action: FaultAction, state: SandboxState) -> Response:
    """An injected HTTP error in Entra's format (5xx/429 as Entra's transient errors)."""
    status = action.status
    error = str(action.params.get("error") or ("temporarily_unavailable" if status >= 429 else "invalid_request"))
    code = int(action.params.get("code", 90033 if status >= 500 else 50196))
    default_description = f"AADSTS{code}: A transient error has occurred. Please try again."
    description = str(action.params.get("description") or default_description)
    response = _error(request, status, error, description, code)
    if action.retry_after:
        response.headers["Retry-After"] = action.retry_after
    return response
