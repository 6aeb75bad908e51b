"""Fake App Service / Azure Functions managed identity endpoint (``IDENTITY_ENDPOINT``).

azure-identity's ``ManagedIdentityCredential`` (and so ``DefaultAzureCredential``) delegates to
``msal.ManagedIdentityClient``, which, when IDENTITY_ENDPOINT and IDENTITY_HEADER are set,
sends ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...`` with the
``X-IDENTITY-HEADER`` secret, and expects ``expires_on`` as epoch seconds (a string is fine:
MSAL does ``int(payload["expires_on"])``). Errors come back as ``{"statusCode", "message"}``,
which MSAL turns into an ``invalid_scope`` error. This endpoint is plain HTTP, as on App Service.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from .error_bodies import managed_identity_error
from .wire import Request, Response

if TYPE_CHECKING:
    from .faults import FaultAction
    from .state import SandboxState

API_VERSION = "2019-08-01"
USER_ASSIGNED_PARAMS = ("client_id", "mi_res_id", "object_id", "principal_id")


def _error(status: int, message: str) -> Response:
    return Response.json(status, managed_identity_error(status, message))


def token(request: Request, state: SandboxState) -> Response:
    """``GET /msi/token?api-version=2019-08-01&resource=...``."""
    presented = request.headers.get("X-IDENTITY-HEADER")
    if presented is None:
        return _error(400, "The X-IDENTITY-HEADER header is required.")
    if not hmac.compare_digest(presented.encode(), state.identity_header.encode()):
        return _error(401, "The X-IDENTITY-HEADER header value is not valid.")
    if request.param("api-version") != API_VERSION:
        return _error(400, f"Unsupported api-version '{request.param('api-version')}'; use {API_VERSION}.")
    resource = request.param("resource")
    if not resource:
        return _error(400, "The 'resource' query parameter is required.")
    ids = state.identities
    requested = {name: request.param(name) for name in USER_ASSIGNED_PARAMS if request.param(name)}
    allowed = {ids.managed_identity_client_id.lower(), ids.managed_identity_object_id.lower()}
    if any(value.lower() not in allowed for value in requested.values() if value):
        return _error(400, "No managed identity was found for the specified identity parameters.")
    lifetime = int(state.managed_identity_token_lifetime)
    record = state.tokens.issue_access_token(
        issuer="managed_identity",
        resource=resource.rstrip("/"),
        scopes=(f"{resource.rstrip('/')}/.default",),
        client_id=ids.managed_identity_client_id,
        delegated=False,
        lifetime=lifetime,
    )
    body = {
        "access_token": record.token,
        "expires_on": str(int(record.expires_at)),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": ids.managed_identity_client_id,
    }
    return Response.json(200, body)


def fault_response(request: Request, action: FaultAction, state: SandboxState) -> Response:
    """An injected HTTP error in the managed identity endpoint's format."""
    message = str(action.params.get("description") or "The managed identity endpoint is temporarily unavailable.")
    response = _error(action.status, message)
    if action.retry_after:
        response.headers["Retry-After"] = action.retry_after
    return response
