"""The sandbox speaks the real protocols: the real SDKs work against it unmodified.

Each test starts its own sandbox (about 15 ms) so scenario state, faults and revocations never
leak between tests. MSAL, azure-identity and azure-keyvault-secrets are driven exactly as the app
drives them, pointed at the sandbox only through ``sb.env()``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msal
import pytest
import requests

from sandbox import Sandbox

if TYPE_CHECKING:
    from collections.abc import Iterator

PC_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def env(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Apply the sandbox's app settings the way the Functions host would (environment variables)."""
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = sb.env()
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


def session_for(sandbox: Sandbox) -> requests.Session:
    """A session trusting the sandbox CA. trust_env is off because requests lets an ambient
    REQUESTS_CA_BUNDLE override ``session.verify`` (this machine sets one)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = sandbox.ca_bundle_path
    return session


@pytest.fixture
def http(sb: Sandbox) -> Iterator[requests.Session]:
    with session_for(sb) as session:
        yield session


def msal_app(sb: Sandbox, secret: str | None = None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sb.app_id,
        client_credential=secret or sb.app_secret,
        authority=f"{sb.base_url}/{sb.tenant_id}",
        instance_discovery=False,
        token_cache=msal.TokenCache(),
    )


def token_for(http: requests.Session, sb: Sandbox, scope: str = PC_SCOPE, refresh_token: str | None = None) -> str:
    """A Partner Center App+User token by a raw refresh-token grant."""
    response = http.post(
        f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "client_id": sb.app_id,
            "client_secret": sb.app_secret,
            "refresh_token": refresh_token or sb.refresh_token,
            "scope": f"{scope} offline_access openid profile",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class PartnerCenter:
    """Minimal Partner Center caller for the tests (the app has its own client)."""

    def __init__(self, http: requests.Session, sb: Sandbox, token: str | None = None) -> None:
        self.http, self.sb = http, sb
        self.token = token if token is not None else token_for(http, sb)

    def post(
        self, path: str, body: Any, request_id: str | None = None, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {
            "Accept": "application/json",
            "MS-CorrelationId": str(uuid.uuid4()),
            "MS-RequestId": request_id or str(uuid.uuid4()),
        }
        bearer = self.token if token is None else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.http.post(self.sb.base_url + path, data=payload, headers=headers, **kwargs)

    def create(self, customer_id: str, request_id: str | None = None, **kwargs: Any) -> requests.Response:
        body = {"customerId": customer_id, "productFamily": "Azure"}
        return self.post("/v1/productUpgrades", body, request_id, **kwargs)

    def eligibility(self, customer_id: str) -> requests.Response:
        return self.post("/v1/productUpgrades/eligibility", {"customerId": customer_id, "productFamily": "azure"})

    def status(self, upgrade_id: str, customer_id: str, suffix: str = "/status") -> requests.Response:
        body = {"customerId": customer_id, "productFamily": "Azure"}
        return self.post(f"/v1/productUpgrades/{upgrade_id}{suffix}", body)


@pytest.fixture
def pc(http: requests.Session, sb: Sandbox) -> PartnerCenter:
    return PartnerCenter(http, sb)


def new_customer() -> str:
    return str(uuid.uuid4())


def upgrade_id_from(response: requests.Response) -> str:
    return response.headers["Location"].rsplit("/", 1)[1]


# --- lifecycle --------------------------------------------------------------------------------


def test_starts_fast_binds_loopback_and_stops_cleanly() -> None:
    started = time.perf_counter()
    sandbox = Sandbox().start()
    assert time.perf_counter() - started < 0.5
    assert sandbox.base_url.startswith("https://127.0.0.1:")
    assert sandbox.identity_endpoint.startswith("http://127.0.0.1:")
    assert Path(sandbox.ca_bundle_path).read_text().startswith("-----BEGIN CERTIFICATE-----")
    ca_path = sandbox.ca_bundle_path
    with requests.Session() as session:  # a keep-alive connection must not delay stop()
        assert session.get(f"{sandbox.base_url}/_sandbox/health", verify=ca_path).status_code == 200
        stopping = time.perf_counter()
        sandbox.stop()
        assert time.perf_counter() - stopping < 1.0
        with pytest.raises(requests.ConnectionError):
            session.get(f"{sandbox.base_url}/_sandbox/health", verify=False, timeout=2)
    assert not Path(ca_path).exists()
    assert not sandbox.running


def test_env_points_every_sdk_at_the_sandbox(sb: Sandbox) -> None:
    assert sb.env() == {
        "KEY_VAULT_URL": sb.base_url,
        "PARTNER_TENANT_ID": sb.tenant_id,
        "PARTNER_CENTER_ENDPOINT": sb.base_url,
        "AZURE_AUTHORITY_HOST": sb.base_url,
        "IDENTITY_ENDPOINT": sb.identity_endpoint,
        "IDENTITY_HEADER": sb.identity_header,
        "REQUESTS_CA_BUNDLE": sb.ca_bundle_path,
        "SSL_CERT_FILE": sb.ca_bundle_path,
    }


def test_constructor_arguments_are_used() -> None:
    tenant, app = str(uuid.uuid4()), str(uuid.uuid4())
    sandbox = Sandbox(tenant_id=tenant, app_id=app, app_secret="s3cret", refresh_token="0.Aseed")
    assert (sandbox.tenant_id, sandbox.app_id, sandbox.app_secret, sandbox.refresh_token) == (
        tenant,
        app,
        "s3cret",
        "0.Aseed",
    )
    assert sandbox.issued_refresh_tokens == ["0.Aseed"]


# --- Entra ID with MSAL -----------------------------------------------------------------------


def test_openid_configuration_has_what_msal_reads(sb: Sandbox, http: requests.Session) -> None:
    document = http.get(f"{sb.base_url}/{sb.tenant_id}/v2.0/.well-known/openid-configuration").json()
    base = f"{sb.base_url}/{sb.tenant_id}"
    assert document["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert document["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert document["issuer"] == f"{base}/v2.0"
    assert document["jwks_uri"] == f"{base}/discovery/v2.0/keys"
    unknown = http.get(f"{sb.base_url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_tenant"


def test_msal_refresh_token_grant_creates_an_account_and_silent_uses_the_cache(sb: Sandbox, env: dict) -> None:
    app = msal_app(sb)
    result = app.acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3600
    assert result["id_token_claims"]["aud"] == sb.app_id
    assert result["id_token_claims"]["tid"] == sb.tenant_id
    accounts = app.get_accounts()
    assert len(accounts) == 1
    assert accounts[0]["username"] == sb.username
    assert accounts[0]["home_account_id"] == f"{sb.user_object_id}.{sb.tenant_id}"

    silent = app.acquire_token_silent([PC_SCOPE], account=accounts[0])
    assert silent["access_token"] == result["access_token"]
    assert silent["token_source"] == "cache"
    token_calls = sb.calls("entra", "token")
    assert len(token_calls) == 1
    form = token_calls[0].form()
    assert form["grant_type"] == "refresh_token"
    assert form["scope"].split() == [PC_SCOPE, "offline_access", "openid", "profile"]
    assert form["client_info"] == "1"
    assert token_calls[0].headers["CLIENT-REQUEST-ID"]  # case-insensitive lookup
    assert [call.operation for call in sb.calls("entra")] == ["openid_configuration", "token"]


def test_authority_may_name_the_tenant_by_domain(sb: Sandbox, env: dict) -> None:
    app = msal.ConfidentialClientApplication(
        sb.app_id,
        client_credential=sb.app_secret,
        authority=f"{sb.base_url}/contosopartner.onmicrosoft.com",
        instance_discovery=False,
    )
    assert "access_token" in app.acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert app.acquire_token_silent([PC_SCOPE], account=app.get_accounts()[0])["token_source"] == "cache"
    assert sb.calls("entra", "token")[0].path == f"/{sb.tenant_id}/oauth2/v2.0/token"


def test_rotated_refresh_tokens_are_new_and_old_ones_stay_valid(sb: Sandbox, env: dict) -> None:
    first = msal_app(sb).acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert first["refresh_token"] != sb.refresh_token
    assert sb.issued_refresh_tokens == [sb.refresh_token, first["refresh_token"]]
    again = msal_app(sb).acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert "access_token" in again, again
    sb.rotate_refresh_token = False
    same = msal_app(sb).acquire_token_by_refresh_token(first["refresh_token"], scopes=[PC_SCOPE])
    assert same["refresh_token"] == first["refresh_token"]


def test_expired_access_token_is_renewed_from_the_cached_refresh_token(sb: Sandbox, env: dict) -> None:
    sb.access_token_lifetime = 120  # MSAL treats tokens within 5 minutes of expiry as expired
    app = msal_app(sb)
    first = app.acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    renewed = app.acquire_token_silent([PC_SCOPE], account=app.get_accounts()[0])
    assert renewed["access_token"] != first["access_token"]
    assert renewed["token_source"] == "identity_provider"
    second_grant = sb.calls("entra", "token")[1]
    assert f"refresh_token={first['refresh_token']}" in second_grant.body.decode()


def test_default_scope_is_reported_as_the_granted_permission(sb: Sandbox, env: dict) -> None:
    result = msal_app(sb).acquire_token_by_refresh_token(
        sb.refresh_token, scopes=["https://api.partnercenter.microsoft.com/.default"]
    )
    assert result["scope"] == PC_SCOPE


def test_revoked_refresh_token_gives_invalid_grant_and_reconsent_recovers(sb: Sandbox, env: dict) -> None:
    sb.revoke_refresh_tokens()
    result = msal_app(sb).acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [700082]
    assert result["error_description"].startswith("AADSTS700082: The refresh token has expired due to inactivity")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(result)
    assert sb.calls("entra", "token")[-1].status == 400
    fresh = sb.reconsent()
    assert "access_token" in msal_app(sb).acquire_token_by_refresh_token(fresh, scopes=[PC_SCOPE])


def test_revoking_all_but_the_latest_consent_keeps_its_rotated_chain(sb: Sandbox, env: dict) -> None:
    app = msal.ConfidentialClientApplication(
        sb.app_id, client_credential=sb.app_secret, authority=sb.authority, instance_discovery=False
    )
    old = sb.refresh_token
    old_rotated = app.acquire_token_by_refresh_token(old, scopes=[PC_SCOPE])["refresh_token"]
    new = sb.reconsent()
    new_rotated = app.acquire_token_by_refresh_token(new, scopes=[PC_SCOPE])["refresh_token"]
    sb.revoke_refresh_tokens(keep_latest_consent=True)
    assert not sb.refresh_token_is_valid(old) and not sb.refresh_token_is_valid(old_rotated)
    assert sb.refresh_token_is_valid(new) and sb.refresh_token_is_valid(new_rotated)
    assert app.acquire_token_by_refresh_token(old_rotated, scopes=[PC_SCOPE]).get("error") == "invalid_grant"
    sb.revoke_refresh_tokens()
    assert not sb.refresh_token_is_valid(new_rotated)


def test_unknown_refresh_token_gives_invalid_grant(sb: Sandbox, env: dict) -> None:
    result = msal_app(sb).acquire_token_by_refresh_token("0.Anot-issued", scopes=[PC_SCOPE])
    assert result["error"] == "invalid_grant"


def test_wrong_client_secret_gives_invalid_client(sb: Sandbox, env: dict) -> None:
    result = msal_app(sb, secret="wrong").acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert sb.calls("entra", "token")[-1].status == 401


def test_client_credentials_token_is_app_only_and_partner_center_refuses_it(
    sb: Sandbox, http: requests.Session
) -> None:
    response = http.post(
        f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sb.app_id,
            "client_secret": sb.app_secret,
            "scope": "https://api.partnercenter.microsoft.com/.default",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert "refresh_token" not in body
    assert "id_token" not in body
    refused = PartnerCenter(http, sb, token=body["access_token"]).create(new_customer())
    assert refused.status_code == 401


def test_v1_token_endpoint_with_resource_parameter(sb: Sandbox, http: requests.Session) -> None:
    response = http.post(
        f"{sb.base_url}/{sb.tenant_id}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "resource": "https://api.partnercenter.microsoft.com",
            "client_id": sb.app_id,
            "client_secret": sb.app_secret,
            "refresh_token": sb.refresh_token,
            "scope": "openid",
        },
    )
    body = response.json()
    assert body["resource"] == "https://api.partnercenter.microsoft.com"
    assert body["scope"] == "user_impersonation"
    assert isinstance(body["expires_on"], str)
    assert PartnerCenter(http, sb, token=body["access_token"]).create(new_customer()).status_code == 202


# --- managed identity and Key Vault -----------------------------------------------------------


def test_managed_identity_credential_gets_a_token(sb: Sandbox, env: dict) -> None:
    from azure.identity import ManagedIdentityCredential

    token = ManagedIdentityCredential().get_token("https://vault.azure.net/.default")
    assert token.token
    assert token.expires_on > time.time() + 3600
    (call,) = sb.calls("managed_identity", "token")
    assert call.headers["x-identity-header"] == sb.identity_header
    assert call.query["api-version"] == ["2019-08-01"]
    assert call.query["resource"] == ["https://vault.azure.net"]


def test_managed_identity_endpoint_requires_the_identity_header(sb: Sandbox) -> None:
    url = f"{sb.identity_endpoint}?api-version=2019-08-01&resource=https://vault.azure.net"
    missing = requests.get(url, timeout=5)
    wrong = requests.get(url, headers={"X-IDENTITY-HEADER": "nope"}, timeout=5)
    assert (missing.status_code, wrong.status_code) == (400, 401)
    assert wrong.json()["statusCode"] == 401
    right = requests.get(url, headers={"X-IDENTITY-HEADER": sb.identity_header}, timeout=5).json()
    assert set(right) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert right["expires_on"].isdigit()


def test_secret_client_with_default_azure_credential_gets_and_sets(sb: Sandbox, env: dict) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    sb.seed_partner_credentials()
    client = SecretClient(vault_url=env["KEY_VAULT_URL"], credential=DefaultAzureCredential())
    assert client.get_secret("partner-center-app-id").value == sb.app_id
    assert client.get_secret("partner-center-refresh-token").value == sb.refresh_token

    written = client.set_secret("partner-center-refresh-token", "0.Anew", content_type="refresh-token")
    assert written.value == "0.Anew"
    assert written.properties.content_type == "refresh-token"
    assert written.id == f"{sb.base_url}/secrets/partner-center-refresh-token/{written.properties.version}"
    assert sb.secrets["partner-center-refresh-token"] == "0.Anew"
    assert sb.secret_versions("partner-center-refresh-token") == [sb.refresh_token, "0.Anew"]
    assert client.get_secret("partner-center-refresh-token").value == "0.Anew"
    older = client.get_secret("partner-center-refresh-token", version=written.properties.version)
    assert older.value == "0.Anew"
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("no-such-secret")
    assert missing.value.error.code == "SecretNotFound"

    # The challenge protocol ran once: an anonymous request, then a token for the challenge resource.
    challenge = sb.calls("key_vault")[0]
    assert challenge.status == 401
    assert "authorization" not in challenge.headers
    assert sb.calls("managed_identity", "token")[0].query["resource"] == [sb.key_vault_resource]
    assert len(sb.calls("managed_identity")) == 1
    assert sb.calls("key_vault", "set_secret")[-1].json()["value"] == "0.Anew"


def test_key_vault_challenge_and_token_checks(sb: Sandbox, http: requests.Session) -> None:
    sb.set_secret("x", "1")
    url = f"{sb.base_url}/secrets/x?api-version=7.5"
    anonymous = http.get(url)
    assert anonymous.status_code == 401
    port = sb.base_url.rsplit(":", 1)[1]
    assert anonymous.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{sb.base_url}/{sb.tenant_id}", resource="https://0.0.1:{port}"'
    )
    assert anonymous.json()["error"]["code"] == "Unauthorized"
    entra_token = token_for(http, sb)  # a Partner Center token is not a Key Vault token
    assert http.get(url, headers={"Authorization": f"Bearer {entra_token}"}).status_code == 401
    assert http.get(f"{sb.base_url}/secrets/x").status_code == 400  # api-version is required


# --- Partner Center ---------------------------------------------------------------------------


def test_create_returns_202_with_a_relative_location_and_tracing_headers(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    response = pc.create(customer, request_id="11111111-2222-3333-4444-555555555555")
    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["Location"].startswith("productUpgrades/")
    assert uuid.UUID(upgrade_id_from(response))
    assert response.headers["MS-RequestId"] == "11111111-2222-3333-4444-555555555555"
    sent = sb.calls("partner_center", "create_upgrade")[0]
    assert response.headers["MS-CorrelationId"] == sent.headers["ms-correlationid"]
    assert response.headers["MS-CV"]
    assert sent.json() == {"customerId": customer, "productFamily": "Azure"}
    assert sb.submissions(customer) == 1


def test_absolute_location_style(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.location_style = "absolute"
    response = pc.create(new_customer())
    assert response.headers["Location"] == f"{sb.base_url}/v1/productUpgrades/{upgrade_id_from(response)}"


def test_replay_with_same_request_id_creates_nothing(sb: Sandbox, pc: PartnerCenter) -> None:
    customer, request_id = new_customer(), str(uuid.uuid4())
    first = pc.create(customer, request_id=request_id)
    replay = pc.create(customer, request_id=request_id)
    assert replay.status_code == 202
    assert replay.headers["Location"] == first.headers["Location"]
    assert sb.submissions(customer) == 1
    assert [call.replayed for call in sb.calls("partner_center", "create_upgrade")] == [False, True]
    other = pc.create(customer)  # a new MS-RequestId while the first upgrade is running
    assert other.status_code == 409
    assert other.json() == {
        "code": 900109,
        "description": f"This upgrade isn't allowed as original upgrade {upgrade_id_from(first)} is in progress",
        "data": [],
        "source": "PartnerFD",
    }
    assert sb.submissions(customer) == 1


def test_concurrent_replays_create_one_upgrade(sb: Sandbox, http: requests.Session) -> None:
    customer, request_id = new_customer(), str(uuid.uuid4())
    token = token_for(http, sb)
    statuses: list[int] = []

    def submit() -> None:
        with session_for(sb) as session:
            statuses.append(PartnerCenter(session, sb, token).create(customer, request_id=request_id).status_code)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 8
    assert sb.submissions(customer) == 1


def test_eligibility_before_and_after_create(pc: PartnerCenter) -> None:
    customer = new_customer()
    before = pc.eligibility(customer)
    assert before.status_code == 200
    assert before.json() == {"customerId": customer, "productFamily": "azure", "isEligible": True}
    upgrade_id = upgrade_id_from(pc.create(customer))
    after = pc.eligibility(customer).json()
    assert after["isEligible"] is False
    assert after["upgradeId"] == upgrade_id
    assert upgrade_id in after["reason"]


def test_status_progresses_to_completed_on_both_paths(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    upgrade_id = upgrade_id_from(pc.create(customer))
    first = pc.status(upgrade_id, customer)
    assert first.status_code == 200
    body = first.json()
    assert body["id"] == upgrade_id
    assert body["status"] == "InProgress"
    assert body["productFamily"] == "Azure"
    assert body["lineItems"][0]["status"] == "InProgress"
    assert "upgradedDate" not in body["lineItems"][0]
    second = pc.status(upgrade_id, customer, suffix="").json()  # the REST reference's form, no /status
    assert second["status"] == "Completed"
    line = second["lineItems"][0]
    assert line["sourceProduct"]["name"] == "AzureSubscription"
    assert line["targetProduct"]["name"] == "Microsoft Azure plan"
    assert line["upgradedDate"].endswith("Z")
    assert "errorDetails" not in second
    assert len(sb.calls("partner_center", "upgrade_status")) == 2
    again = pc.create(customer)
    assert (again.status_code, again.json()["code"]) == (400, 900110)


def test_paths_are_case_insensitive(pc: PartnerCenter) -> None:
    customer = new_customer()
    created = pc.post("/v1/productupgrades", {"customerId": customer, "productFamily": "azure"})
    assert created.status_code == 202
    status = pc.post(
        f"/V1/PRODUCTUPGRADES/{upgrade_id_from(created)}/STATUS", {"customerId": customer, "productFamily": "azure"}
    )
    assert status.status_code == 200


def test_scenarios_ineligible_failed_and_existing(sb: Sandbox, pc: PartnerCenter) -> None:
    ineligible, failing, upgraded = new_customer(), new_customer(), new_customer()
    sb.customers.set(ineligible, eligible=False, reason="Customer has no Azure subscriptions")
    sb.customers.set(failing, outcome="failed", polls_until_final=1)
    sb.customers.set(upgraded, existing_upgrade=True)
    assert sb.customers.get(failing).status_polls_until_final == 1

    assert pc.eligibility(ineligible).json()["reason"] == "Customer has no Azure subscriptions"
    refused = pc.create(ineligible)
    assert (refused.status_code, refused.json()["code"]) == (403, 900108)
    assert sb.submissions(ineligible) == 0

    failed_id = upgrade_id_from(pc.create(failing))
    failed = pc.status(failed_id, failing).json()
    assert failed["status"] == "Failed"
    assert failed["errorDetails"] == {"code": "900120", "message": "Can't process Azure upgrade"}
    assert failed["lineItems"][0]["errorDetails"]["code"] == "900120"

    existing = pc.eligibility(upgraded).json()
    assert existing["isEligible"] is False
    assert existing["upgradeId"]
    assert pc.status(existing["upgradeId"], upgraded).json()["status"] == "Completed"
    assert sb.submissions(upgraded) == 0


def test_partner_center_requires_a_valid_app_user_token(sb: Sandbox, http: requests.Session) -> None:
    customer = new_customer()
    missing = PartnerCenter(http, sb, token="").create(customer)
    assert missing.status_code == 401
    assert missing.json()["code"] == 800001
    assert missing.headers["WWW-Authenticate"].startswith("OAuth realm=urn:cpsvc:cpid:")
    garbage = PartnerCenter(http, sb, token="not-a-token").create(customer)
    assert (garbage.status_code, garbage.json()["source"]) == (401, "PartnerFD")
    pc = PartnerCenter(http, sb)
    sb.expire_access_tokens()
    assert pc.create(customer).status_code == 401
    key_vault_scoped = token_for(http, sb, scope="https://vault.azure.net/user_impersonation")
    assert PartnerCenter(http, sb, token=key_vault_scoped).create(customer).status_code == 401
    assert sb.submissions(customer) == 0
    assert [call.status for call in sb.calls("partner_center")] == [401, 401, 401, 401]


def test_bad_requests_and_unknown_upgrades(sb: Sandbox, pc: PartnerCenter) -> None:
    assert pc.post("/v1/productUpgrades", b"not json").json()["code"] == 800002
    assert pc.post("/v1/productUpgrades", {"customerId": new_customer()}).status_code == 400
    assert pc.post("/v1/productUpgrades", {"customerId": "contoso", "productFamily": "Azure"}).json()["code"] == 900118
    unknown = pc.status(str(uuid.uuid4()), new_customer())
    assert (unknown.status_code, unknown.json()["code"]) == (404, 900106)
    owner, intruder = new_customer(), new_customer()
    upgrade_id = upgrade_id_from(pc.create(owner))
    assert pc.status(upgrade_id, intruder).status_code == 404
    pc.create(intruder)
    mismatch = pc.status(upgrade_id, intruder)
    assert (mismatch.status_code, mismatch.json()["code"]) == (400, 900111)


# --- faults and latency -----------------------------------------------------------------------


def test_status_fault_with_retry_after_then_normal(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    sb.faults.add("create_upgrade", "status", status=429, retry_after=7)
    sb.faults.add("create_upgrade", "status", status=503)
    throttled = pc.create(customer)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.json() == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 7 seconds."}
    unavailable = pc.create(customer)
    assert unavailable.status_code == 503
    assert unavailable.json()["source"] == "PartnerFD"
    assert pc.create(customer).status_code == 202
    assert sb.submissions(customer) == 1
    assert [call.fault for call in sb.calls("partner_center")] == ["status", "status", None]
    assert sb.faults.pending() == []


def test_fault_count_wildcards_and_service_qualified_operations(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.faults.add("*", "status", count=2, status=500)
    assert pc.eligibility(new_customer()).status_code == 500
    assert pc.create(new_customer()).status_code == 500
    assert pc.eligibility(new_customer()).status_code == 200
    sb.faults.add("managed_identity.token", "status", status=503)
    url = f"{sb.identity_endpoint}?api-version=2019-08-01&resource=https://vault.azure.net"
    token = token_for(pc.http, sb)  # the Entra "token" operation is not affected
    assert token
    assert requests.get(url, headers={"X-IDENTITY-HEADER": sb.identity_header}, timeout=5).status_code == 503


def test_delay_fault_and_latency(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.faults.add("eligibility", "delay", seconds=0.3)
    started = time.perf_counter()
    assert pc.eligibility(new_customer()).status_code == 200
    assert time.perf_counter() - started >= 0.3
    sb.latency = 0.2
    started = time.perf_counter()
    assert pc.eligibility(new_customer()).status_code == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    token_for(pc.http, sb)  # latency applies to Partner Center only
    assert time.perf_counter() - started < 0.2


def test_reset_fault_drops_the_connection_before_processing(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    sb.faults.add("create_upgrade", "reset")
    with pytest.raises(requests.ConnectionError):
        pc.create(customer)
    assert sb.submissions(customer) == 0
    (call,) = sb.calls("partner_center", "create_upgrade")
    assert (call.status, call.fault) == (0, "reset")
    assert pc.create(customer).status_code == 202


def test_process_then_hang_is_the_ambiguous_create(sb: Sandbox, pc: PartnerCenter) -> None:
    customer, request_id = new_customer(), str(uuid.uuid4())
    sb.faults.add("create_upgrade", "process_then_hang", seconds=5)
    with pytest.raises(requests.ReadTimeout):
        pc.create(customer, request_id=request_id, timeout=0.5)
    assert sb.submissions(customer) == 1  # Partner Center did create it
    retry = pc.create(customer, request_id=request_id)  # the safe retry: same MS-RequestId
    assert retry.status_code == 202
    assert sb.submissions(customer) == 1
    assert pc.eligibility(customer).json()["upgradeId"] == upgrade_id_from(retry)


def test_process_then_reset_creates_then_drops(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    sb.faults.add("create_upgrade", "process_then_reset")
    with pytest.raises(requests.ConnectionError):
        pc.create(customer)
    assert sb.submissions(customer) == 1
    assert sb.calls("partner_center", "create_upgrade")[0].status == 202


def test_land_late_drops_the_answer_and_creates_only_when_landed(sb: Sandbox, pc: PartnerCenter) -> None:
    customer, request_id = new_customer(), str(uuid.uuid4())
    sb.faults.add("create_upgrade", "land_late")
    with pytest.raises(requests.ConnectionError):
        pc.create(customer, request_id=request_id)
    assert sb.submissions(customer) == 0  # not yet: eligibility still says "no upgrade"
    assert sb.late_waiting == 1
    assert "upgradeId" not in pc.eligibility(customer).json()
    (call,) = sb.calls("partner_center", "create_upgrade")
    assert (call.status, call.fault) == (0, "land_late")
    assert sb.land_late() == 1
    assert sb.submissions(customer) == 1  # now it took effect
    assert sb.land_late() == 0  # once
    retry = pc.create(customer, request_id=request_id)  # same MS-RequestId: the landed upgrade
    assert retry.status_code == 202
    assert sb.upgrade_ids(customer) == [upgrade_id_from(retry)]
    assert len(sb.calls("partner_center", "create_upgrade")) == 2  # landing is not recorded again


def test_forget_late_drops_parked_requests(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    sb.faults.add("create_upgrade", "land_late")
    with pytest.raises(requests.ConnectionError):
        pc.create(customer)
    sb.forget_late()
    assert sb.land_late() == 0
    assert sb.submissions(customer) == 0


def test_process_without_location_creates_and_answers_202_without_location(sb: Sandbox, pc: PartnerCenter) -> None:
    customer = new_customer()
    sb.faults.add("create_upgrade", "process_without_location")
    response = pc.create(customer)
    assert response.status_code == 202
    assert "Location" not in response.headers
    assert sb.submissions(customer) == 1
    assert sb.calls("partner_center", "create_upgrade")[0].fault == "process_without_location"


def test_stop_interrupts_a_hanging_request() -> None:
    sandbox = Sandbox().start()
    with session_for(sandbox) as session:
        pc = PartnerCenter(session, sandbox)
        sandbox.faults.add("eligibility", "process_then_hang", seconds=30)
        errors: list[Exception] = []

        def call() -> None:
            try:
                pc.eligibility(new_customer())
            except requests.RequestException as error:
                errors.append(error)

        caller = threading.Thread(target=call)
        caller.start()
        sandbox.wait_for_calls(1, "partner_center", "eligibility")
        started = time.perf_counter()
        sandbox.stop()
        caller.join(timeout=5)
        assert time.perf_counter() - started < 2
        assert len(errors) == 1


def test_key_vault_and_token_faults_reach_the_sdks(sb: Sandbox, env: dict) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    sb.seed_partner_credentials()
    sb.faults.add("token", "status", status=400, error="invalid_grant", code=700082, description="AADSTS700082: x")
    result = msal_app(sb).acquire_token_by_refresh_token(sb.refresh_token, scopes=[PC_SCOPE])
    assert result["error"] == "invalid_grant"

    client = SecretClient(vault_url=env["KEY_VAULT_URL"], credential=DefaultAzureCredential(), retry_total=0)
    sb.faults.add("get_secret", "status", status=403, code="Forbidden", description="Access denied")
    with pytest.raises(HttpResponseError) as denied:
        client.get_secret("partner-center-app-id")
    assert denied.value.status_code == 403
    assert client.get_secret("partner-center-app-id").value == sb.app_id


def test_random_faults_are_reproducible_with_a_seed(sb: Sandbox, pc: PartnerCenter) -> None:
    def run() -> list[int]:
        sb.faults.set_random(rate=0.5, kinds=["status"], seed=42, operations=["eligibility"], status=503)
        return [pc.eligibility(new_customer()).status_code for _ in range(12)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}
    sb.faults.clear()
    assert pc.eligibility(new_customer()).status_code == 200


def test_fault_validation() -> None:
    sandbox = Sandbox()
    with pytest.raises(ValueError, match="kind"):
        sandbox.faults.add("create_upgrade", "explode")
    with pytest.raises(ValueError, match="count"):
        sandbox.faults.add("create_upgrade", "reset", count=0)
    with pytest.raises(ValueError, match="location_style"):
        sandbox.location_style = "weird"


# --- control surface and standalone mode ------------------------------------------------------


def test_control_surface(sb: Sandbox, http: requests.Session, pc: PartnerCenter) -> None:
    customer = new_customer()
    control = f"{sb.base_url}/_sandbox"
    assert (
        http.post(
            f"{control}/faults", json={"operation": "create_upgrade", "kind": "status", "status": 503}
        ).status_code
        == 200
    )
    assert pc.create(customer).status_code == 503
    assert pc.create(customer).status_code == 202
    assert http.put(f"{control}/latency", json={"seconds": 0.05}).json() == {"latency": 0.05}
    assert sb.latency == 0.05
    other = new_customer()
    assert http.put(f"{control}/customers/{other}", json={"eligible": False}).status_code == 200
    assert pc.eligibility(other).json()["isEligible"] is False
    counts = http.get(f"{control}/calls").json()
    assert counts["calls"]["partner_center"] == {"create_upgrade": 2, "eligibility": 1}
    assert counts["calls"]["entra"] == {"token": 1}
    assert counts["submissions"] == {customer: 1}
    assert http.post(f"{control}/reset").status_code == 200
    assert http.get(f"{control}/calls").json()["total"] == 0
    assert sb.latency == 0.0
    assert http.post(f"{control}/faults", json={"kind": "nonsense"}).status_code == 400
    assert sb.calls() == []  # control calls are never recorded


def test_unrouted_calls_are_recorded(sb: Sandbox, http: requests.Session) -> None:
    assert http.get(f"{sb.base_url}/v2/whatever").status_code == 404
    assert http.get(f"{sb.base_url}/v1/productUpgrades").status_code == 405
    assert [call.service for call in sb.calls()] == ["unrouted", "unrouted"]


def test_python_dash_m_sandbox_prints_exports_and_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        while len(exports) < 8:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "no output"
            if line.startswith("export "):
                name, _, value = line[len("export ") :].strip().partition("=")
                exports[name] = value
        health = requests.get(
            f"{exports['KEY_VAULT_URL']}/_sandbox/health", verify=exports["REQUESTS_CA_BUNDLE"], timeout=5
        )
        assert health.json()["status"] == "ok"
        assert exports["PARTNER_CENTER_ENDPOINT"] == exports["KEY_VAULT_URL"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
    assert process.returncode == 0


def test_unsigned_id_token_and_client_info_decode(sb: Sandbox, http: requests.Session) -> None:
    response = http.post(
        f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "client_id": sb.app_id,
            "client_secret": sb.app_secret,
            "refresh_token": sb.refresh_token,
            "scope": f"{PC_SCOPE} openid offline_access",
            "client_info": "1",
        },
    ).json()

    def decode(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    claims = decode(response["id_token"].split(".")[1])
    assert claims["oid"] == sb.user_object_id
    assert claims["preferred_username"] == sb.username
    assert decode(response["client_info"]) == {"uid": sb.user_object_id, "utid": sb.tenant_id}
