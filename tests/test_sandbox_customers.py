"""The sandbox's Partner Center throttle and customer list, on the wire (raw requests, no app code).

Throttle: off by default; above the partner's rate every Partner Center call is answered 429 with
Retry-After and Partner Center's own body, and the call waited for is admitted. Customer list:
`GET /v1/customers` pages with `links.next` (uri + MS-ContinuationToken header), the starts_with
filter, the size rules; `python -m sandbox customers --seed N` seeds a running sandbox with a mix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests

from sandbox import CustomerProfile, Sandbox
from sandbox.throttle import Throttle, ThrottleSetting
from tests.test_sandbox import REPO_ROOT, PartnerCenter, session_for, token_for

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def http(sb: Sandbox) -> Iterator[requests.Session]:
    with session_for(sb) as session:
        yield session


@pytest.fixture
def pc(http: requests.Session, sb: Sandbox) -> PartnerCenter:
    return PartnerCenter(http, sb)


def get(pc: PartnerCenter, uri: str, headers: dict[str, str] | None = None, token: str | None = None) -> Any:
    all_headers = {"Authorization": f"Bearer {token or pc.token}", "Accept": "application/json", **(headers or {})}
    return pc.http.get(pc.sb.base_url + uri, headers=all_headers)


def follow(pc: PartnerCenter, first_uri: str) -> list[dict[str, Any]]:
    """Every page, following links.next exactly as the SDK does."""
    pages = [get(pc, first_uri).json()]
    while "next" in pages[-1]["links"]:
        link = pages[-1]["links"]["next"]
        pages.append(get(pc, link["uri"], {h["key"]: h["value"] for h in link["headers"]}).json())
    return pages


# --- throttle ----------------------------------------------------------------------------------


def test_throttle_is_off_by_default(sb: Sandbox, pc: PartnerCenter) -> None:
    assert sb.throttle is None
    statuses = {pc.eligibility(str(uuid.uuid4())).status_code for _ in range(40)}
    assert statuses == {200}


def test_above_the_rate_every_partner_center_call_gets_429_retry_after_and_its_body(
    sb: Sandbox, pc: PartnerCenter
) -> None:
    customer = str(uuid.uuid4())
    sb.set_throttle(120, window_seconds=1.0)  # 2 calls per second
    assert pc.eligibility(customer).status_code == 200
    assert get(pc, "/v1/customers?size=10").status_code == 200
    started = time.monotonic()
    refused = [pc.create(customer), pc.eligibility(customer), get(pc, "/v1/customers?size=10")]
    assert [r.status_code for r in refused] == [429, 429, 429]
    for response in refused:
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}
        assert response.headers["MS-CorrelationId"]
    assert sb.submissions(customer) == 0  # a refused create did nothing
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)) + 0.02)
    assert pc.create(customer).status_code == 202  # waited Retry-After: admitted
    assert sb.throttled_calls == 3
    assert [c.status for c in sb.calls("partner_center")] == [200, 200, 429, 429, 429, 202]


def test_retry_after_is_the_wait_until_the_oldest_call_leaves_the_window() -> None:
    throttle = Throttle()
    throttle.configure(ThrottleSetting(per_minute=3))  # 3 per 60 s
    assert [throttle.admit(now) for now in (0.0, 10.0, 20.0)] == [None, None, None]
    assert throttle.admit(30.0) == 30  # the call at 0 leaves at 60
    assert throttle.admit(59.5) == 1
    assert throttle.admit(60.0) is None  # exactly when asked: admitted
    assert throttle.admit(60.5) == 10  # the call at 10 leaves at 70
    assert throttle.refused == 3
    throttle.configure(ThrottleSetting(per_minute=1))  # lowered while 3 are in the window
    assert throttle.admit(61.0) == 59  # calls at 10, 20, 60 in the window: admitted once all have left
    assert ThrottleSetting(per_minute=30, window_seconds=1).limit == 1
    assert ThrottleSetting(per_minute=600).limit == 600
    with pytest.raises(ValueError, match="per_minute"):
        ThrottleSetting(per_minute=0)


def test_throttle_through_the_control_surface(sb: Sandbox, http: requests.Session, pc: PartnerCenter) -> None:
    control = f"{sb.base_url}/_sandbox"
    answer = http.put(f"{control}/throttle", json={"perMinute": 60, "windowSeconds": 2}).json()
    assert answer == {"perMinute": 60.0, "windowSeconds": 2.0, "limit": 2, "refused": 0}
    assert [pc.eligibility(str(uuid.uuid4())).status_code for _ in range(3)] == [200, 200, 429]
    assert http.get(f"{control}/calls").json()["throttle"]["refused"] == 1
    assert http.put(f"{control}/throttle", json={"perMinute": None}).json() == {"perMinute": None, "refused": 0}
    assert pc.eligibility(str(uuid.uuid4())).status_code == 200
    assert http.put(f"{control}/throttle", json={"perMinute": -5}).status_code == 400
    assert http.put(f"{control}/throttle", json={"rate": 5}).status_code == 400
    sb.set_throttle(1)
    assert http.post(f"{control}/reset").status_code == 200
    assert sb.throttle is None  # reset switches it off, as it does latency


# --- GET /v1/customers --------------------------------------------------------------------------


def test_pages_follow_links_next_with_the_continuation_token_header(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.seed_customers(1234, random_seed=1)
    pages = follow(pc, "/v1/customers?size=500")

    assert [len(page["items"]) for page in pages] == [500, 500, 234]
    assert [page["totalCount"] for page in pages] == [500, 500, 234]
    assert "next" not in pages[-1]["links"] and "continuationToken" not in pages[-1]
    first_next = pages[0]["links"]["next"]
    assert first_next["uri"] == "/v1/customers?size=500&seekOperation=Next"
    assert first_next["method"] == "GET"
    assert [h["key"] for h in first_next["headers"]] == ["MS-ContinuationToken"]
    assert first_next["headers"][0]["value"] == pages[0]["continuationToken"]
    item = pages[0]["items"][0]
    assert set(item) >= {"id", "companyProfile", "relationshipToPartner"}
    assert set(item["companyProfile"]) >= {"tenantId", "domain", "companyName"}
    ids = [item["id"] for page in pages for item in page["items"]]
    assert ids == [profile.id for profile in sb.listed_customers()] and len(set(ids)) == 1234
    names = [item["companyProfile"]["companyName"].lower() for page in pages for item in page["items"]]
    assert names == sorted(names)


def test_size_default_cap_and_bad_values(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.seed_customers(700, random_seed=2)
    assert len(get(pc, "/v1/customers").json()["items"]) == 500  # no size: 500
    assert len(get(pc, "/v1/customers?size=0").json()["items"]) == 500  # the SDK's "no page size"
    assert len(get(pc, "/v1/customers?size=900").json()["items"]) == 500  # capped
    small = get(pc, "/v1/customers?size=40").json()
    assert len(small["items"]) == 40 and small["links"]["next"]["uri"] == "/v1/customers?size=40&seekOperation=Next"
    for bad in ("size=-1", "size=ten"):
        response = get(pc, f"/v1/customers?{bad}")
        assert response.status_code == 400 and response.json()["code"] == 800002


def test_next_page_without_or_with_a_forged_continuation_token_is_refused(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.seed_customers(30, random_seed=3)
    assert get(pc, "/v1/customers?size=10&seekOperation=Next").status_code == 400
    forged = get(pc, "/v1/customers?size=10&seekOperation=Next", {"MS-ContinuationToken": "bm90IGEgdG9rZW4"})
    assert forged.status_code == 400
    assert get(pc, "/v1/customers?size=10&seekOperation=Previous", {"MS-ContinuationToken": "x"}).status_code == 400


def test_starts_with_filter_on_company_name_ignores_case(sb: Sandbox, pc: PartnerCenter) -> None:
    sb.seed_customers(900, random_seed=4)
    sb.customers.directory.add(CustomerProfile(str(uuid.uuid4()), "fabrikam lowercase", "fablow.onmicrosoft.com"))

    def encoded(spec: dict[str, str]) -> str:
        return quote(json.dumps(spec, separators=(",", ":")), safe="")

    spec = {"Field": "CompanyName", "Value": "FABRIKAM", "Operator": "starts_with"}
    pages = follow(pc, f"/v1/customers?size=20&filter={encoded(spec)}")
    found = [item["id"] for page in pages for item in page["items"]]
    expected = [p.id for p in sb.listed_customers() if p.company_name.lower().startswith("fabrikam")]
    assert len(pages) > 1 and found == expected
    by_domain = follow(pc, f"/v1/customers?filter={encoded({**spec, 'Field': 'Domain', 'Value': 'fablow'})}")
    assert [item["companyProfile"]["companyName"] for item in by_domain[0]["items"]] == ["fabrikam lowercase"]
    for bad in (
        {**spec, "Operator": "contains"},
        {**spec, "Field": "Country"},
        {**spec, "Value": ""},
    ):
        assert get(pc, f"/v1/customers?filter={encoded(bad)}").status_code == 400
    assert get(pc, "/v1/customers?filter=not-json").status_code == 400


def test_listing_accepts_app_only_tokens_unlike_product_upgrades(
    sb: Sandbox, http: requests.Session, pc: PartnerCenter
) -> None:
    sb.seed_customers(5, random_seed=5)
    app_only = http.post(
        f"{sb.base_url}/{sb.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sb.app_id,
            "client_secret": sb.app_secret,
            "scope": "https://api.partnercenter.microsoft.com/.default",
        },
    ).json()["access_token"]
    assert get(pc, "/v1/customers", token=app_only).status_code == 200
    assert pc.eligibility(str(uuid.uuid4())).status_code == 200
    assert PartnerCenter(http, sb, token=app_only).eligibility(str(uuid.uuid4())).status_code == 401
    assert pc.http.get(sb.base_url + "/v1/customers").status_code == 401  # no token at all


# --- seeding --------------------------------------------------------------------------------------


def test_seed_command_adds_a_realistic_mix_to_a_running_sandbox(sb: Sandbox, http: requests.Session) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "customers", "--seed", "1000", "--random-seed", "42", "--url", sb.base_url],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "REQUESTS_CA_BUNDLE": sb.ca_bundle_path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("seeded 1000 customers: ")
    listed = sb.listed_customers()
    assert len(listed) == 1000

    token = token_for(http, sb)
    verdicts: dict[str, int] = {"eligible": 0, "ineligible": 0, "upgraded": 0, "in_progress": 0}
    reasons = set()
    for profile in listed:
        body = PartnerCenter(http, sb, token=token).eligibility(profile.id).json()
        if body["isEligible"]:
            assert "upgradeId" not in body
            verdicts["eligible"] += 1
        elif "upgradeId" not in body:
            verdicts["ineligible"] += 1
            reasons.add(body["reason"])
        elif "in progress" in body["reason"]:
            verdicts["in_progress"] += 1
        else:
            assert "already upgraded" in body["reason"]
            verdicts["upgraded"] += 1
    summary = result.stdout
    for label, key in (
        ("eligible", "eligible"),
        ("ineligible", "ineligible"),
        ("already upgraded", "upgraded"),
        ("with an upgrade in progress", "in_progress"),
    ):
        assert f"{verdicts[key]} {label}" in summary
    # Roughly 84 / 10 / 5 / 1 %, and every reason is one of Partner Center's own.
    assert 780 <= verdicts["eligible"] <= 900 and 60 <= verdicts["ineligible"] <= 140
    assert 25 <= verdicts["upgraded"] <= 80 and 1 <= verdicts["in_progress"] <= 25
    assert "Can't process Azure upgrade since customer has no Azure subscriptions." in reasons
    assert len(reasons) >= 3

    # An ineligible customer's create fails with its Partner Center code; the seed is reproducible.
    ineligible = next(p for p in listed if not sb.customers.get(p.id).eligible)
    refused = PartnerCenter(http, sb, token=token).create(ineligible.id)
    assert refused.status_code == 403 and refused.json()["code"] == sb.customers.get(ineligible.id).error_code
    with Sandbox() as other:
        other.seed_customers(1000, random_seed=42)
        assert [p.id for p in other.listed_customers()] == [p.id for p in listed]


def test_seed_command_without_a_sandbox_says_so(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "customers", "--seed", "5", "--env-file", str(tmp_path / "none")],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "no sandbox to talk to" in result.stderr


def test_throttle_command_sets_and_clears_a_running_sandboxs_rate(sb: Sandbox) -> None:
    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandbox", "throttle", *args, "--url", sb.base_url],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "REQUESTS_CA_BUNDLE": sb.ca_bundle_path},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    on = command("90", "--window", "2")
    assert on.returncode == 0, on.stderr
    assert on.stdout.strip() == "Partner Center throttle: 90 calls per minute (3 per 2 s), then 429 + Retry-After"
    assert sb.throttle == ThrottleSetting(per_minute=90, window_seconds=2)
    off = command("off")
    assert off.returncode == 0 and off.stdout.strip() == "Partner Center throttle: off"
    assert sb.throttle is None
    assert command("fast").returncode == 2
