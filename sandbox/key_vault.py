"""Fake Azure Key Vault secrets API, including its challenge-based authentication.

The real ``SecretClient`` first sends each request *without* a token (and without a body),
expects ``401`` with ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
resource="<resource>"``, asks its credential for ``<resource>/.default``, then resends.

Why the odd challenge resource ``https://0.0.1:PORT``: the SDK's
``azure/keyvault/secrets/_shared/challenge_auth_policy.py::_validate_challenge_resource``
refuses a challenge unless the vault's netloc (host *and* port) ends with ``"." + the resource's
netloc`` (e.g. ``myvault.vault.azure.net`` ends with ``.vault.azure.net``). For a vault at
``127.0.0.1:PORT`` the resource ``https://0.0.1:PORT`` passes that check, so production code
needs no ``verify_challenge_resource=False``. The managed identity endpoint is then asked for
resource ``https://0.0.1:PORT`` and that is the audience this vault accepts (plus the public
``https://vault.azure.net``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .error_bodies import key_vault_error
from .state import KEY_VAULT_PUBLIC_RESOURCE, SandboxState
from .wire import Request, Response

if TYPE_CHECKING:
    from .faults import FaultAction
    from .vault_store import SecretVersion

SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


def challenge_resource(port: int) -> str:
    """The resource the vault at ``127.0.0.1:port`` names in its challenge (see module doc)."""
    return f"https://0.0.1:{port}"


def _headers(request: Request) -> dict[str, str]:
    headers = {"x-ms-keyvault-service-version": "1.9.0.0", "x-ms-keyvault-region": "sandbox"}
    client_request_id = request.headers.get("x-ms-client-request-id")
    if client_request_id:
        headers["x-ms-request-id"] = client_request_id
        headers["x-ms-client-request-id"] = client_request_id
    return headers


def _error(request: Request, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> Response:
    return Response.json(status, key_vault_error(code, message), {**_headers(request), **(extra or {})})


def _unauthorized(request: Request, state: SandboxState, message: str) -> Response:
    challenge = (
        f'Bearer authorization="{state.base_url}/{state.identities.tenant_id}", resource="{state.key_vault_resource}"'
    )
    return _error(request, 401, "Unauthorized", message, {"WWW-Authenticate": challenge})


def _precheck(request: Request, state: SandboxState, name: str) -> Response | None:
    """api-version, then authentication, then the secret name: the order Key Vault uses."""
    if not request.param("api-version"):
        return _error(
            request,
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    token = request.bearer_token()
    if token is None:
        return _unauthorized(request, state, "AKV10000: Request is missing a Bearer or PoP token.")
    record = state.tokens.access_token(token)
    if record is None or record.issuer != "managed_identity":
        return _unauthorized(
            request,
            state,
            "AKV10032: Invalid issuer. The token was not issued by the sandbox managed identity endpoint.",
        )
    if not record.is_for(state.key_vault_resource, KEY_VAULT_PUBLIC_RESOURCE):
        return _unauthorized(
            request,
            state,
            f"AKV10022: Invalid audience. Expected {state.key_vault_resource}, found: {record.resource}.",
        )
    if record.expired():
        return _unauthorized(request, state, "AKV10036: Token has expired.")
    if not SECRET_NAME.match(name):
        return _error(request, 400, "BadParameter", f"The request URI contains an invalid name: {name}")
    return None


def bundle(state: SandboxState, secret: SecretVersion) -> dict[str, Any]:
    """The Key Vault SecretBundle JSON for one version."""
    payload: dict[str, Any] = {
        "value": secret.value,
        "id": f"{state.base_url}/secrets/{secret.name}/{secret.version}",
        "attributes": {
            "enabled": secret.enabled,
            "created": secret.created,
            "updated": secret.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": dict(secret.tags),
    }
    if secret.content_type:
        payload["contentType"] = secret.content_type
    return payload


def get_secret(request: Request, state: SandboxState, name: str, version: str = "") -> Response:
    """``GET /secrets/{name}[/{version}]``."""
    problem = _precheck(request, state, name)
    if problem:
        return problem
    secret = state.secrets.get(name, version or None)
    if secret is None:
        label = f"{name}/{version}" if version else name
        return _error(
            request,
            404,
            "SecretNotFound",
            f"A secret with (name/id) {label} was not found in this key vault. If you recently deleted this secret "
            "you may be able to recover it using the correct recovery command. For help resolving this issue, "
            "please see https://go.microsoft.com/fwlink/?linkid=2125182",
        )
    if not secret.enabled:
        return _error(request, 403, "Forbidden", "Operation get is not allowed on a disabled secret.")
    return Response.json(200, bundle(state, secret), _headers(request))


def set_secret(request: Request, state: SandboxState, name: str) -> Response:
    """``PUT /secrets/{name}`` with ``{"value", "contentType"?, "tags"?, "attributes"?}``."""
    problem = _precheck(request, state, name)
    if problem:
        return problem
    try:
        payload = request.json()
    except ValueError:
        return _error(request, 400, "BadParameter", "The request body is not valid JSON.")
    if not isinstance(payload, dict) or not isinstance(payload.get("value"), str):
        return _error(request, 400, "BadParameter", "Property 'value' is required and must be a string.")
    attributes = payload.get("attributes") or {}
    tags = payload.get("tags") or {}
    secret = state.secrets.set(
        name,
        payload["value"],
        content_type=payload.get("contentType"),
        tags={str(key): str(value) for key, value in tags.items()} if isinstance(tags, dict) else {},
        enabled=bool(attributes.get("enabled", True)) if isinstance(attributes, dict) else True,
    )
    return Response.json(200, bundle(state, secret), _headers(request))


def fault_response(request: Request, action: FaultAction, state: SandboxState) -> Response:
    """An injected HTTP error in Key Vault's format."""
    status = action.status
    code = str(action.params.get("code") or ("Throttled" if status == 429 else "ServiceUnavailable"))
    message = str(action.params.get("description") or "The service is temporarily unavailable.")
    extra = {"Retry-After": action.retry_after} if action.retry_after else None
    return _error(request, status, code, message, extra)
