"""Callers sign in with Microsoft Entra ID (CALLER_AUTH=entra): bad tokens, roles, key rollover,
who asked, and fail-closed configuration.

Tokens come from the sandbox's Entra (RS256, keys at the real jwks_uri); the app validates them
with its own code path, fetching the keys over TLS as it would from login.microsoftonline.com.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from azure.data.tables import TableServiceClient
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from sandbox.caller_tokens import READ, SUBMIT, CallerTokenRequest, caller_claims, new_rsa_key
from shared.api import caller_auth, signing_keys
from shared.runtime import reset_runtime

from .conftest import Api, index_function_app, registered_functions

SKEW = 300


@pytest.fixture
def entra_env(app_env, sandbox, monkeypatch) -> dict[str, str]:
    """app_env with CALLER_AUTH=entra for the sandbox's tenant and audience; fresh key caches."""
    for name, value in sandbox.caller_env().items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    caller_auth.reset_authenticators()
    yield {**app_env, **sandbox.caller_env()}
    caller_auth.reset_authenticators()


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """Seconds added to the signing-key cache's clock (the rate limit and max age use it)."""
    offset = [0.0]
    real = signing_keys._monotonic
    monkeypatch.setattr(signing_keys, "_monotonic", lambda: real() + offset[0])
    return offset


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_for(sandbox, **fields: Any) -> dict[str, Any]:
    return caller_claims(CallerTokenRequest(**fields), sandbox.base_url, sandbox.tenant_id)


@functools.cache
def attacker_key() -> Any:
    """A key the sandbox never published (one per process: RSA key generation is CPU-heavy)."""
    return new_rsa_key()


def attacker_signed(claims: dict[str, Any], kid: str, extra_header: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, attacker_key(), algorithm="RS256", headers={"kid": kid, **(extra_header or {})})


@dataclass(frozen=True)
class Presented:
    headers: dict[str, str]
    params: dict[str, str]


def bearer(token: str) -> Presented:
    return Presented({"Authorization": f"Bearer {token}"}, {})


# Every way a caller can fail to authenticate: (id, builder(sandbox) -> what the request carries).
BAD_TOKENS: list[tuple[str, Callable[[Any], Presented]]] = [
    ("no-authorization-header", lambda sb: Presented({}, {})),
    ("basic-scheme", lambda sb: Presented({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, {})),
    ("bearer-without-token", lambda sb: Presented({"Authorization": "Bearer "}, {})),
    ("not-a-jwt", lambda sb: bearer("not-a-jwt")),
    ("expired-one-second-past-skew", lambda sb: bearer(sb.caller_token(expires_offset=-(SKEW + 1)))),
    ("nbf-future-beyond-skew", lambda sb: bearer(sb.caller_token(not_before_offset=SKEW + 5))),
    ("wrong-audience", lambda sb: bearer(sb.caller_token(audience="api://someone-elses-api"))),
    ("issuer-of-another-tenant", lambda sb: bearer(sb.caller_token(issuer_tenant_id=str(uuid.uuid4())))),
    ("tenant-not-allowed", lambda sb: bearer(sb.caller_token(tenant_id=str(uuid.uuid4())))),
    (
        "v1-issuer-of-another-tenant",
        lambda sb: bearer(sb.caller_token(version="1.0", issuer_tenant_id=str(uuid.uuid4()))),
    ),
    ("unknown-kid", lambda sb: bearer(attacker_signed(claims_for(sb), kid="never-published"))),
    ("forged-with-a-published-kid", lambda sb: bearer(attacker_signed(claims_for(sb), kid=sb.signing_key_ids[-1]))),
    (
        "embedded-jwk-header",
        lambda sb: bearer(_embedded_jwk_token(claims_for(sb))),
    ),
    (
        "alg-none",
        lambda sb: bearer(hand_made({"alg": "none", "typ": "JWT", "kid": sb.signing_key_ids[-1]}, claims_for(sb))),
    ),
    ("hs256-signed-with-the-public-key", lambda sb: bearer(_hs256_with_public_key(sb))),
    ("rs512-by-the-real-key", lambda sb: bearer(_signed_by_real_key(sb, claims_for(sb), "RS512"))),
    ("truncated", lambda sb: bearer(sb.caller_token()[:-12])),
    ("tampered-payload", lambda sb: bearer(_tampered(sb))),
    ("missing-oid", lambda sb: bearer(sb.caller_token(omit_claims=("oid",)))),
    ("missing-exp", lambda sb: bearer(sb.caller_token(omit_claims=("exp",)))),
    ("token-in-query-string", lambda sb: Presented({}, {"access_token": sb.caller_token()})),
    (
        "query-token-besides-a-valid-header",
        lambda sb: Presented({"Authorization": f"Bearer {sb.caller_token()}"}, {"access_token": sb.caller_token()}),
    ),
    (
        "identity-headers-instead-of-a-token",
        lambda sb: Presented(
            {
                "X-MS-CLIENT-PRINCIPAL": b64(json.dumps({"auth_typ": "aad", "claims": []}).encode()),
                "X-MS-CLIENT-PRINCIPAL-ID": str(uuid.uuid4()),
                "X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.com",
            },
            {},
        ),
    ),
]


def _signed_by_real_key(sandbox, claims: dict[str, Any], algorithm: str) -> str:
    key = sandbox.current_signing_key
    return jwt.encode(claims, key.private_key, algorithm=algorithm, headers={"kid": key.kid})


def _embedded_jwk_token(claims: dict[str, Any]) -> str:
    attacker = attacker_key()
    jwk = RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    return jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": "attacker", "jwk": jwk})


def _hs256_with_public_key(sandbox) -> str:
    """The classic key-confusion forgery: HMAC keyed with the RSA public key everyone can fetch."""
    key = sandbox.current_signing_key
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for(sandbox)).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _tampered(sandbox) -> str:
    """A Read-only token whose payload was edited to claim Submit too (signature left as is)."""
    header, _, signature = sandbox.caller_token(roles=(READ,)).split(".")
    claims = claims_for(sandbox, roles=(READ, SUBMIT))
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def request_table_exists(env: dict[str, str]) -> bool:
    service = TableServiceClient.from_connection_string(env["AzureWebJobsStorage"])
    return any(True for _ in service.query_tables(f"TableName eq '{env['UPGRADE_REQUESTS_TABLE']}'"))


def assert_untouched(sandbox, env: dict[str, str]) -> None:
    """A refused call read no secret, called no Partner Center, wrote (created) nothing."""
    assert sandbox.calls("key_vault") == []
    assert sandbox.calls("partner_center") == []
    assert not request_table_exists(env)


@pytest.mark.parametrize(("case", "build"), BAD_TOKENS, ids=[case for case, _ in BAD_TOKENS])
def test_bad_tokens_are_401_invalid_token_and_touch_nothing(api: Api, sandbox, entra_env, customer_id, case, build):
    presented = build(sandbox)
    reply = api.call(
        "submit_product_upgrade",
        "POST",
        "product-upgrades",
        json_body={"customerId": customer_id},
        headers=presented.headers,
        params=presented.params,
    )
    assert reply.status == 401, reply.body
    assert reply.content_type.startswith("application/problem+json")
    assert reply.headers["www-authenticate"].startswith('Bearer realm="product-upgrades", error="invalid_token"')
    assert reply.json()["type"] == "urn:product-upgrades:problem:invalid-token"
    assert_untouched(sandbox, entra_env)


def test_at_least_fifteen_distinct_bad_tokens():
    assert len({case for case, _ in BAD_TOKENS}) >= 15


def test_skew_boundaries_are_five_minutes(api: Api, sandbox, entra_env, customer_id):
    """Just inside the 5-minute skew is accepted, on both sides (the refusals are in BAD_TOKENS)."""
    api.bearer = sandbox.caller_token(expires_offset=-(SKEW - 5))
    assert api.eligibility(customer_id).status == 200
    api.bearer = sandbox.caller_token(not_before_offset=SKEW - 5)
    assert api.eligibility(customer_id).status == 200


@pytest.mark.parametrize("kind", ["user", "application"])
def test_v1_token_of_an_allowed_tenant_is_accepted(api: Api, sandbox, entra_env, customer_id, kind):
    app_id, object_id = str(uuid.uuid4()), str(uuid.uuid4())
    api.bearer = sandbox.caller_token(
        version="1.0", kind=kind, app_id=app_id, object_id=object_id, username="v1.user@contoso.com"
    )
    reply = api.upgrade(customer_id)
    assert reply.status == 202, reply.body
    requested_by = reply.json()["requestedBy"]
    assert requested_by["appId"] == app_id  # v1 names it `appid`
    assert requested_by["objectId"] == object_id
    assert requested_by["kind"] == kind
    if kind == "user":
        assert requested_by["displayName"] == "v1.user@contoso.com"  # v1: `upn`


def test_second_allowed_tenant_and_client_id_audience(api: Api, sandbox, entra_env, monkeypatch, customer_id):
    other_tenant, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    monkeypatch.setenv("CALLER_TENANT_IDS", f"{sandbox.tenant_id}, {other_tenant}")
    monkeypatch.setenv("CALLER_AUDIENCES", f"api://csp-upgrades,{client_id}")
    reset_runtime()
    api.bearer = sandbox.caller_token(audience=client_id)
    assert api.eligibility(customer_id).status == 200
    # The sandbox serves metadata for its own tenant only: another tenant's keys cannot be read,
    # so its token is refused as unverifiable (503), never accepted.
    api.bearer = sandbox.caller_token(tenant_id=other_tenant)
    assert api.eligibility(customer_id).status == 503


# --- roles ---

# Every HTTP route of function_app.py and the app role it needs. A new route must be added here.
ROUTE_ROLES: dict[str, str] = {
    "submit_product_upgrade": SUBMIT,
    "put_product_upgrade_callback": SUBMIT,
    "delete_product_upgrade_callback": SUBMIT,
    "get_product_upgrade_request": READ,
    "get_product_upgrade_status": READ,
    "check_product_upgrade_eligibility": READ,
    "list_product_upgrade_requests": READ,
    "get_product_upgrade_request_summary": READ,
    "cancel_product_upgrade_request": SUBMIT,
    "retry_product_upgrade_request": SUBMIT,
    "create_campaign": SUBMIT,
    "start_campaign": SUBMIT,
    "pause_campaign": SUBMIT,
    "resume_campaign": SUBMIT,
    "cancel_campaign": SUBMIT,
    "list_campaigns": READ,
    "get_campaign": READ,
    "list_campaign_members": READ,
    "get_campaign_report": READ,
}


def call_route(api: Api, name: str) -> Any:
    request_id = str(uuid.uuid4())
    calls: dict[str, Callable[[], Any]] = {
        "submit_product_upgrade": lambda: api.upgrade(str(uuid.uuid4())),
        "put_product_upgrade_callback": lambda: api.call(
            name,
            "PUT",
            f"product-upgrade-requests/{request_id}/callback",
            json_body={"url": "https://hooks.contoso.com/done"},
            route_params={"requestId": request_id},
        ),
        "delete_product_upgrade_callback": lambda: api.call(
            name, "DELETE", f"product-upgrade-requests/{request_id}/callback", route_params={"requestId": request_id}
        ),
        "get_product_upgrade_request": lambda: api.request_status(request_id),
        "get_product_upgrade_status": lambda: api.upgrade_status(str(uuid.uuid4()), str(uuid.uuid4())),
        "check_product_upgrade_eligibility": lambda: api.eligibility(str(uuid.uuid4())),
        "list_product_upgrade_requests": lambda: api.call(name, "GET", "product-upgrade-requests"),
        "get_product_upgrade_request_summary": lambda: api.call(name, "GET", "product-upgrade-requests/summary"),
        "cancel_product_upgrade_request": lambda: api.call(
            name, "POST", f"product-upgrade-requests/{request_id}/cancel", route_params={"requestId": request_id}
        ),
        "retry_product_upgrade_request": lambda: api.call(
            name, "POST", f"product-upgrade-requests/{request_id}/retry", route_params={"requestId": request_id}
        ),
    }
    campaign_id = str(uuid.uuid4())
    for action in ("start", "pause", "resume", "cancel"):
        calls[f"{action}_campaign"] = lambda action=action: api.call(
            f"{action}_campaign", "POST", f"campaigns/{campaign_id}/{action}", route_params={"campaignId": campaign_id}
        )
    calls["create_campaign"] = lambda: api.call(
        name, "POST", "campaigns", json_body={"name": "n", "customers": [str(uuid.uuid4())]}
    )
    calls["list_campaigns"] = lambda: api.call(name, "GET", "campaigns")
    for route, suffix in (
        ("get_campaign", ""),
        ("list_campaign_members", "/members"),
        ("get_campaign_report", "/report"),
    ):
        calls[route] = lambda suffix=suffix: api.call(
            name, "GET", f"campaigns/{campaign_id}{suffix}", route_params={"campaignId": campaign_id}
        )
    return calls[name]()


def http_function_names() -> set[str]:
    return {
        name
        for name, function in registered_functions().items()
        if function.get_trigger().get_dict_repr()["type"] == "httpTrigger"
    }


def test_every_route_of_function_app_has_a_role_in_the_matrix():
    assert http_function_names() == set(ROUTE_ROLES)


@pytest.mark.parametrize("name", sorted(ROUTE_ROLES))
def test_every_route_refuses_a_caller_without_a_token_and_without_a_role(api: Api, sandbox, entra_env, name):
    """Holds for any route wired through @requires: a route that forgot it would answer here."""
    assert call_route(api, name).status == 401
    api.bearer = sandbox.caller_token(roles=())
    reply = call_route(api, name)
    assert reply.status == 403
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]
    assert f'scope="{ROUTE_ROLES[name]}"' in reply.headers["www-authenticate"]
    assert reply.json()["requiredRole"] == ROUTE_ROLES[name]
    assert_untouched(sandbox, entra_env)


ROLE_SETS = {"submit-only": (SUBMIT,), "read-only": (READ,), "both": (SUBMIT, READ), "other-role": ("Directory.Read",)}


@pytest.mark.parametrize("kind", ["user", "application"])
@pytest.mark.parametrize("held", sorted(ROLE_SETS))
@pytest.mark.parametrize("name", sorted(ROUTE_ROLES))
def test_role_matrix(api: Api, sandbox, entra_env, name, held, kind):
    api.bearer = sandbox.caller_token(kind=kind, roles=ROLE_SETS[held])
    reply = call_route(api, name)
    if ROUTE_ROLES[name] in ROLE_SETS[held]:
        assert reply.status not in (401, 403), reply.body
    else:
        assert reply.status == 403, reply.body
        assert sandbox.calls("partner_center") == [] and sandbox.calls("key_vault") == []


# --- keys ---


def test_key_rollover_without_a_restart(api: Api, sandbox, entra_env, clock, customer_id):
    api.bearer = sandbox.caller_token()
    assert api.eligibility(customer_id).status == 200
    fetches = len(sandbox.calls("entra", "jwks"))
    assert fetches == 1

    # Entra publishes a new key next to the old one and signs with it: the unknown kid makes the
    # app read the key set again (once), and both old and new tokens pass.
    old_token = api.bearer
    sandbox.rotate_signing_keys()
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    api.bearer = sandbox.caller_token()
    assert api.eligibility(customer_id).status == 200
    api.bearer = old_token
    assert api.eligibility(customer_id).status == 200
    assert len(sandbox.calls("entra", "jwks")) == fetches + 1

    # The old key is withdrawn: once the set is re-read, tokens it signed are refused.
    sandbox.rotate_signing_keys(retire_old=True)
    clock[0] += signing_keys.MAX_AGE_SECONDS + 1
    api.bearer = sandbox.caller_token()
    assert api.eligibility(customer_id).status == 200
    api.bearer = old_token
    assert api.eligibility(customer_id).status == 401


def test_unknown_kid_flood_refreshes_the_keys_at_most_once_a_minute(api: Api, sandbox, entra_env, clock):
    api.bearer = sandbox.caller_token()
    assert api.eligibility(str(uuid.uuid4())).status == 200  # keys loaded
    before = len(sandbox.calls("entra", "jwks"))
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    for _ in range(30):
        token = attacker_signed(claims_for(sandbox), kid=f"made-up-{uuid.uuid4().hex}")
        reply = api.call(
            "check_product_upgrade_eligibility",
            "POST",
            "product-upgrades/eligibility",
            json_body={"customerId": str(uuid.uuid4())},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status == 401
    assert len(sandbox.calls("entra", "jwks")) == before + 1
    # A real rollover inside that minute waits for the next allowed refresh, then passes.
    sandbox.rotate_signing_keys()
    api.bearer = sandbox.caller_token()
    assert api.eligibility(str(uuid.uuid4())).status == 401
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    assert api.eligibility(str(uuid.uuid4())).status == 200
    assert len(sandbox.calls("entra", "jwks")) == before + 2


def test_signing_keys_unreachable_is_503_and_touches_nothing(api: Api, sandbox, entra_env, customer_id):
    sandbox.faults.add("entra.jwks", "status", count=5, status=500)
    api.bearer = sandbox.caller_token()
    reply = api.upgrade(customer_id)
    assert reply.status == 503
    assert reply.json()["type"] == "urn:product-upgrades:problem:signing-keys-unavailable"
    assert_untouched(sandbox, entra_env)


def test_no_key_fetch_for_a_tenant_that_is_not_allowed(api: Api, sandbox, entra_env):
    api.bearer = sandbox.caller_token(tenant_id=str(uuid.uuid4()))
    assert api.eligibility(str(uuid.uuid4())).status == 401
    assert sandbox.calls("entra") == []


# --- who asked ---


def test_requested_by_is_stored_returned_and_on_every_log_line(api: Api, sandbox, entra_env, caplog, customer_id):
    object_id, app_id = str(uuid.uuid4()), str(uuid.uuid4())
    api.bearer = sandbox.caller_token(object_id=object_id, app_id=app_id, username="jane@contosopartner.com")
    assert api.eligibility(customer_id).status == 200  # keys loaded: lines before sign-in cannot name a caller
    caplog.clear()
    reply = api.upgrade(customer_id)
    assert reply.status == 202
    expected = {
        "kind": "user",
        "objectId": object_id,
        "appId": app_id,
        "displayName": "jane@contosopartner.com",
        "tenantId": sandbox.tenant_id,
        "authMethod": "entra",
    }
    assert reply.json()["requestedBy"] == expected
    # The request's own lines (the sandbox's servers log on their threads: another "process").
    lines = [record for record in caplog.get_records("call") if record.thread == threading.get_ident()]
    assert any(record.getMessage().startswith("request.accepted") for record in lines)
    missing = [record.getMessage() for record in lines if f"caller_oid={object_id}" not in record.getMessage()]
    assert not missing, missing[:3]

    # Stored: another caller (Read only) sees who asked.
    api.bearer = sandbox.caller_token(roles=(READ,))
    stored = api.request_status(reply.json()["requestId"])
    assert stored.json()["requestedBy"] == expected

    # An idempotent replay by someone else keeps the one who first asked.
    api.bearer = sandbox.caller_token(kind="application")
    assert api.upgrade(customer_id).json()["requestedBy"] == expected


def test_application_caller_is_recorded_as_application(api: Api, sandbox, entra_env, customer_id):
    app_id = str(uuid.uuid4())
    api.bearer = sandbox.caller_token(kind="application", app_id=app_id, roles=(SUBMIT,))
    requested_by = api.upgrade(customer_id).json()["requestedBy"]
    assert requested_by["kind"] == "application"
    assert requested_by["appId"] == app_id
    assert requested_by["displayName"] == "Sandbox caller app"


def test_identity_headers_never_change_who_asked_or_what_is_allowed(api: Api, sandbox, entra_env, customer_id):
    principal = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": SUBMIT}]}
    spoof = {
        "X-MS-CLIENT-PRINCIPAL": b64(json.dumps(principal).encode()),
        "X-MS-CLIENT-PRINCIPAL-ID": str(uuid.uuid4()),
        "X-MS-CLIENT-PRINCIPAL-NAME": "ceo@contoso.com",
        "X-MS-TOKEN-AAD-ACCESS-TOKEN": "spoofed",
    }
    api.bearer = sandbox.caller_token(roles=(READ,))
    assert api.upgrade(customer_id, headers=spoof).status == 403
    object_id = str(uuid.uuid4())
    api.bearer = sandbox.caller_token(object_id=object_id)
    requested_by = api.upgrade(customer_id, headers=spoof).json()["requestedBy"]
    assert requested_by["objectId"] == object_id
    assert requested_by["displayName"] != "ceo@contoso.com"


def test_problem_lines_carry_the_caller_too(api: Api, sandbox, entra_env, caplog):
    object_id = str(uuid.uuid4())
    api.bearer = sandbox.caller_token(object_id=object_id)
    caplog.clear()
    assert api.request_status(str(uuid.uuid4())).status == 404
    problem = [r.getMessage() for r in caplog.get_records("call") if r.getMessage().startswith("http.problem")]
    assert problem and f"caller_oid={object_id}" in problem[0]
    # ...and lines after the request do not.
    logging.getLogger("shared.test").warning("after the request")
    assert "caller_oid" not in caplog.get_records("call")[-1].getMessage()


def test_function_key_mode_records_the_function_key(api: Api, sandbox, app_env, customer_id):
    reply = api.upgrade(customer_id)  # app_env: CALLER_AUTH=function-key, the host checked the key
    assert reply.status == 202
    assert reply.json()["requestedBy"]["authMethod"] == "function-key"
    assert reply.json()["requestedBy"]["kind"] == "application"


# --- fail closed ---


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"CALLER_AUTH": None}, "CALLER_AUTH is required"),
        ({"CALLER_AUTH": ""}, "CALLER_AUTH is required"),
        ({"CALLER_AUTH": "none"}, "CALLER_AUTH must be one of"),
        ({"CALLER_AUTH": "anonymous"}, "CALLER_AUTH must be one of"),
        ({"CALLER_AUTH": "entra", "CALLER_AUDIENCES": None}, "CALLER_AUDIENCES is required"),
        ({"CALLER_AUTH": "entra", "CALLER_AUDIENCES": " , "}, "CALLER_AUDIENCES lists no audience"),
        ({"CALLER_AUTH": "entra", "CALLER_TENANT_IDS": "contoso.onmicrosoft.com"}, "tenant GUIDs"),
        ({"CALLER_AUTH": "entra", "AZURE_AUTHORITY_HOST": "http://login.example"}, "AZURE_AUTHORITY_HOST"),
    ],
    ids=["missing", "empty", "none", "anonymous", "no-audiences", "blank-audiences", "tenant-domain", "http-authority"],
)
def test_bad_caller_configuration_fails_closed_on_every_route(
    api: Api, sandbox, entra_env, monkeypatch, settings, needle
):
    for name, value in settings.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    reset_runtime()
    api.bearer = sandbox.caller_token()  # a perfectly good token changes nothing
    for name in sorted(ROUTE_ROLES):
        reply = call_route(api, name)
        assert reply.status == 500, (name, reply.body)
        assert reply.json()["type"] == "urn:product-upgrades:problem:configuration-error"
        assert needle in reply.json()["detail"]
    assert_untouched(sandbox, entra_env)


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (None, "ANONYMOUS"),
        ("bogus", "ANONYMOUS"),
        ("entra", "ANONYMOUS"),
        ("ENTRA", "ANONYMOUS"),
        ("function-key", "FUNCTION"),
        (" Function-Key ", "FUNCTION"),
    ],
)
def test_host_auth_level_follows_caller_auth_and_indexing_never_fails(value, level):
    functions = index_function_app(value)
    levels = {
        name: str(getattr(function.get_trigger().get_dict_repr()["authLevel"], "name", "?"))
        for name, function in functions.items()
        if function.get_trigger().get_dict_repr()["type"] == "httpTrigger"
    }
    assert set(levels) == set(ROUTE_ROLES)
    assert set(levels.values()) == {level}, levels


def test_sandbox_metadata_and_keys_are_at_the_real_paths(sandbox):
    import requests

    session = requests.Session()
    session.trust_env = False  # an ambient REQUESTS_CA_BUNDLE would override verify
    session.verify = sandbox.ca_bundle_path
    metadata = session.get(signing_keys.metadata_url(sandbox.base_url, sandbox.tenant_id), timeout=10).json()
    assert metadata["jwks_uri"] == f"{sandbox.base_url}/{sandbox.tenant_id}/discovery/v2.0/keys"
    assert metadata["issuer"] == f"{sandbox.base_url}/{sandbox.tenant_id}/v2.0"
    keys = session.get(metadata["jwks_uri"], timeout=10).json()["keys"]
    assert {key["kid"] for key in keys} == set(sandbox.signing_key_ids)
    assert all(key["kty"] == "RSA" and key["use"] == "sig" and "d" not in key for key in keys)
    token = sandbox.caller_token(roles=(READ,), lifetime=120)
    header = jwt.get_unverified_header(token)
    public = jwt.PyJWK(next(key for key in keys if key["kid"] == header["kid"]))
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="api://csp-upgrades")
    assert claims["roles"] == [READ]
    assert claims["tid"] == sandbox.tenant_id
    assert claims["exp"] - time.time() <= 120


def test_timer_lines_of_a_queued_request_name_who_asked(api: Api, sandbox, entra_env, caplog, customer_id):
    from shared.api.timer_trigger import process_pending

    object_id = str(uuid.uuid4())
    api.bearer = sandbox.caller_token(object_id=object_id)
    reply = api.upgrade(customer_id, headers={"Prefer": "respond-async"})
    assert reply.status == 202 and reply.json()["status"] == "pending"
    caplog.clear()
    process_pending()  # the timer: another thread, no HTTP caller bound
    request_id = reply.json()["requestId"]
    lines = [r.getMessage() for r in caplog.get_records("call") if f"request_id={request_id}" in r.getMessage()]
    assert any(line.startswith("request.advanced") for line in lines), lines
    assert all(f"caller_oid={object_id}" in line for line in lines), lines
    assert sandbox.submissions(customer_id) == 1


def test_client_credentials_from_the_sandbox_token_endpoint(api: Api, sandbox, entra_env, customer_id):
    """What the HTTP action's "Active Directory OAuth" (or a webhook sender) does, with MSAL:
    a client-credentials token for the API's Application ID URI, carrying the app's assigned roles."""
    import msal

    client = msal.ConfidentialClientApplication(
        sandbox.app_id,
        client_credential=sandbox.app_secret,
        authority=sandbox.authority,
        instance_discovery=False,
    )
    sandbox.assign_caller_roles(sandbox.app_id, [READ])
    token = client.acquire_token_for_client(scopes=["api://csp-upgrades/.default"])["access_token"]
    api.bearer = token
    assert api.eligibility(customer_id).status == 200
    assert api.upgrade(customer_id).status == 403  # Read only: cannot submit

    sandbox.assign_caller_roles(sandbox.app_id, [SUBMIT, READ])
    api.bearer = msal.ConfidentialClientApplication(
        sandbox.app_id, client_credential=sandbox.app_secret, authority=sandbox.authority, instance_discovery=False
    ).acquire_token_for_client(scopes=["api://csp-upgrades/.default"])["access_token"]
    requested_by = api.upgrade(customer_id).json()["requestedBy"]
    assert requested_by["kind"] == "application"
    assert requested_by["appId"] == sandbox.app_id
    assert requested_by["authMethod"] == "entra"


# --- issue 18: one registration's audience; issue 22: tests that pin the key cache and checks ---


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether `check` holds within `seconds` (a refresh in the background ends on its own time)."""
    ends = time.monotonic() + seconds
    while not check():
        if time.monotonic() >= ends:
            return False
        time.sleep(0.05)
    return True


def test_an_application_id_uri_audience_counts_only_in_the_registrations_own_tenant(
    api: Api, sandbox, entra_env, monkeypatch, customer_id
):
    """An Application ID URI (`api://...`) is unique only inside one tenant: a look-alike app
    registered in another allowed tenant with the same URI gets tokens with that `aud`. Such a
    token is refused; the client id (a GUID, unique across tenants) is accepted from any allowed
    tenant. The registration's tenant is the first of CALLER_TENANT_IDS."""
    home, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    monkeypatch.setenv("CALLER_TENANT_IDS", f"{home},{sandbox.tenant_id}")  # the sandbox is the other tenant
    monkeypatch.setenv("CALLER_AUDIENCES", f"api://csp-upgrades,{client_id}")
    reset_runtime()
    api.bearer = sandbox.caller_token(audience="api://csp-upgrades")  # the look-alike's token
    reply = api.eligibility(customer_id)
    assert reply.status == 401, reply.body
    assert "another audience" in reply.json()["detail"]
    api.bearer = sandbox.caller_token(audience=client_id)  # our registration, by its client id
    assert api.eligibility(customer_id).status == 200


def test_a_withdrawn_key_is_refused_once_the_set_is_older_than_its_max_age(api: Api, sandbox, entra_env, clock):
    """Only the max-age refresh can notice a withdrawn key that is still known: no unknown kid here."""
    old_token = sandbox.caller_token()
    api.bearer = old_token
    assert api.eligibility(str(uuid.uuid4())).status == 200
    sandbox.rotate_signing_keys(retire_old=True)
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    assert api.eligibility(str(uuid.uuid4())).status == 200  # younger than the max age: still held
    clock[0] += signing_keys.MAX_AGE_SECONDS
    assert eventually(lambda: api.eligibility(str(uuid.uuid4())).status == 401)


def test_a_failed_periodic_refresh_is_retried_after_a_minute_not_after_the_max_age(api: Api, sandbox, entra_env, clock):
    old_token = sandbox.caller_token()
    api.bearer = old_token
    assert api.eligibility(str(uuid.uuid4())).status == 200
    sandbox.rotate_signing_keys(retire_old=True)
    sandbox.faults.add("entra.jwks", "status", status=500)  # the periodic refresh fails
    jwks = len(sandbox.calls("entra", "jwks"))
    clock[0] += signing_keys.MAX_AGE_SECONDS + 1
    assert eventually(lambda: api.eligibility(str(uuid.uuid4())).status == 200 and not sandbox.faults.pending())
    assert sandbox.wait_for_calls(jwks + 1, "entra", "jwks")
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1  # a minute later, Entra answers again
    assert eventually(lambda: api.eligibility(str(uuid.uuid4())).status == 401)


def test_an_entra_outage_is_asked_once_a_minute_not_on_every_request(api: Api, sandbox, entra_env, clock):
    sandbox.faults.add("entra.jwks", "status", count=100, status=500)
    api.bearer = sandbox.caller_token()
    for _ in range(5):
        assert api.eligibility(str(uuid.uuid4())).status == 503
    assert len(sandbox.calls("entra", "jwks")) == 1
    clock[0] += signing_keys.MIN_REFRESH_SECONDS + 1
    assert api.eligibility(str(uuid.uuid4())).status == 503
    assert len(sandbox.calls("entra", "jwks")) == 2


class PlainHttpKeys:
    """A plain-http server publishing the sandbox's real key set (what a tampered metadata
    document could point to)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = json.dumps(jwks).encode()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_key_set_at_a_plain_http_jwks_uri_is_never_read(api: Api, sandbox, entra_env):
    keys = PlainHttpKeys({"keys": [sandbox.current_signing_key.public_jwk()]})
    try:
        metadata = {"issuer": f"{sandbox.base_url}/{sandbox.tenant_id}/v2.0", "jwks_uri": keys.url}
        sandbox.faults.add("entra.openid_configuration", "status", status=200, body=metadata)
        api.bearer = sandbox.caller_token()
        reply = api.eligibility(str(uuid.uuid4()))
    finally:
        keys.close()
    assert reply.status == 503, reply.body
    assert reply.json()["type"].endswith("signing-keys-unavailable")
    assert keys.requests == 0


def test_an_encryption_key_is_not_a_signing_key(api: Api, sandbox, entra_env):
    published = {**sandbox.current_signing_key.public_jwk(), "use": "enc"}
    sandbox.faults.add("entra.jwks", "status", status=200, body={"keys": [published]})
    api.bearer = sandbox.caller_token()
    reply = api.eligibility(str(uuid.uuid4()))
    assert reply.status == 401, reply.body
    assert "current Microsoft Entra ID key" in reply.json()["detail"]


def test_a_token_not_signed_rs256_is_refused_by_name_before_any_key_is_read(api: Api, sandbox, entra_env):
    api.bearer = _signed_by_real_key(sandbox, claims_for(sandbox), "RS512")
    reply = api.eligibility(str(uuid.uuid4()))
    assert reply.status == 401
    assert reply.json()["detail"] == "Only RS256-signed tokens are accepted"
    assert sandbox.calls("entra") == []


def test_an_unknown_caller_auth_mode_fails_closed_at_the_authentication_layer(sandbox, monkeypatch):
    """The settings loader never lets an unknown mode through; if it ever did, `authenticate`
    must still refuse, not treat "not entra" as a function key."""
    import azure.functions as func

    from shared.errors import ConfigurationError
    from shared.settings import CallerSettings

    odd = CallerSettings(mode="none", audiences=(), tenant_ids=(), authority_host=sandbox.base_url)
    monkeypatch.setattr(caller_auth, "get_caller_settings", lambda: odd)
    request = func.HttpRequest(method="GET", url="https://app/api/x", headers={}, body=b"")
    with pytest.raises(ConfigurationError):
        caller_auth.authenticate(request, caller_auth.Role.READ)
