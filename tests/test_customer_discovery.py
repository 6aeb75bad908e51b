"""Discovering the partner's customers from Partner Center: `shared.partner_center.customers`
against the sandbox's `GET /v1/customers` over real HTTPS, with the app's own client (MSAL App+User
token from Key Vault, pooled session, urllib3 retries).

Paging follows `links.next` (its uri and the MS-ContinuationToken it lists) to the last page; the
company-name filter is Partner Center's `starts_with`; a 429 is retried after its Retry-After
(within PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS, 2 s in the tests), a longer one surfaces so the
caller can resume from the last page's next link.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from sandbox import CustomerProfile, Sandbox
from shared.correlation import CallContext
from shared.errors import InvalidRequest, UpstreamError, UpstreamThrottled
from shared.partner_center.customers import (
    NextLink,
    customer_pages,
    first_page,
    parse_page,
    partner_customers,
    resolve,
)
from shared.runtime import get_runtime

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.partner_center.client import PartnerCenterClient


@pytest.fixture
def client(app_env: dict[str, str], sandbox: Sandbox) -> Iterator[PartnerCenterClient]:
    """The app's client; the (session-wide) sandbox's throttle off before and after."""
    sandbox.set_throttle(None)
    yield get_runtime().partner_center
    sandbox.set_throttle(None)
    sandbox.customers.clear()


def listing_calls(sandbox: Sandbox) -> list:
    return sandbox.calls("partner_center", "list_customers")


def test_lists_every_customer_across_pages_following_next_links(client: PartnerCenterClient, sandbox: Sandbox) -> None:
    sandbox.seed_customers(2300, random_seed=7)
    context = CallContext.new()

    pages = list(customer_pages(client, context))

    assert [len(page.customers) for page in pages] == [500, 500, 500, 500, 300]
    assert [page.next is None for page in pages] == [False, False, False, False, True]
    listed = [customer.id for page in pages for customer in page.customers]
    assert listed == [profile.id for profile in sandbox.listed_customers()]
    assert len(set(listed)) == 2300
    calls = listing_calls(sandbox)
    assert len(calls) == 5
    assert calls[0].query == {"size": ["500"]}
    assert calls[0].header("MS-ContinuationToken") is None
    for page, call in zip(pages[:-1], calls[1:], strict=True):
        assert page.next is not None
        assert call.path + "?" + "&".join(f"{k}={v[0]}" for k, v in call.query.items()) == page.next.uri
        assert call.header("MS-ContinuationToken") == dict(page.next.headers)["MS-ContinuationToken"]
    # One operation per page: a fresh MS-RequestId each, the caller's correlation id on all.
    assert len({call.header("MS-RequestId") for call in calls}) == 5
    assert {call.header("MS-CorrelationId") for call in calls} == {context.correlation_id}


def test_customers_stream_a_page_at_a_time(client: PartnerCenterClient, sandbox: Sandbox) -> None:
    sandbox.seed_customers(1200, random_seed=3)
    customers = partner_customers(client, CallContext.new())

    first = [next(customers) for _ in range(500)]
    assert len(listing_calls(sandbox)) == 1  # nothing fetched beyond the page being read
    next(customers)
    assert len(listing_calls(sandbox)) == 2
    assert first[0].company_name and first[0].domain and first[0].tenant_id == first[0].id
    assert first[0].relationship == "reseller"


def test_company_name_prefix_is_partner_centers_starts_with_filter(
    client: PartnerCenterClient, sandbox: Sandbox
) -> None:
    sandbox.seed_customers(1500, random_seed=11)
    extra = [
        CustomerProfile(str(uuid.uuid4()), "CONTOSO Cafe & Bar", "contosocafe.onmicrosoft.com"),
        CustomerProfile(str(uuid.uuid4()), "Not Contoso", "notcontoso.onmicrosoft.com"),
    ]
    for profile in extra:
        sandbox.customers.directory.add(profile)

    found = list(partner_customers(client, CallContext.new(), company_name_prefix="contoso"))

    expected = [p.id for p in sandbox.listed_customers() if p.company_name.lower().startswith("contoso")]
    assert expected and len(expected) < 1500
    assert [customer.id for customer in found] == expected
    assert extra[0].id in expected and extra[1].id not in expected
    first = listing_calls(sandbox)[0]
    assert first.query["size"] == ["500"]
    assert json.loads(first.query["filter"][0]) == {
        "Field": "CompanyName",
        "Value": "contoso",
        "Operator": "starts_with",
    }


def test_a_prefix_that_matches_nobody_is_one_empty_page(client: PartnerCenterClient, sandbox: Sandbox) -> None:
    sandbox.seed_customers(600, random_seed=5)
    pages = list(customer_pages(client, CallContext.new(), company_name_prefix="Zzz no such company"))
    assert [(len(page.customers), page.next) for page in pages] == [(0, None)]


def test_an_empty_prefix_is_refused_before_any_call(client: PartnerCenterClient, sandbox: Sandbox) -> None:
    with pytest.raises(InvalidRequest):
        list(customer_pages(client, CallContext.new(), company_name_prefix="   "))
    assert listing_calls(sandbox) == []


def test_429_is_retried_after_its_retry_after_with_the_same_request_id(
    client: PartnerCenterClient, sandbox: Sandbox
) -> None:
    sandbox.seed_customers(3000, random_seed=13)  # 6 pages
    sandbox.set_throttle(180, window_seconds=1.0)  # 3 calls per second for this partner

    listed = list(partner_customers(client, CallContext.new()))

    assert len(listed) == 3000
    calls = listing_calls(sandbox)
    refused = [call for call in calls if call.status == 429]
    assert refused, "the throttle never answered 429"
    assert sandbox.throttled_calls == len(refused)
    for call in refused:
        retry = next(c for c in calls if c.at > call.at and c.header("MS-RequestId") == call.header("MS-RequestId"))
        assert retry.at - call.at >= 1.0 - 0.05  # Retry-After: 1 (second), honoured
    assert len([call for call in calls if call.status == 200]) == 6


def test_a_retry_after_beyond_the_inline_maximum_surfaces_and_the_listing_resumes(
    client: PartnerCenterClient, sandbox: Sandbox
) -> None:
    sandbox.seed_customers(1100, random_seed=17)  # 3 pages
    sandbox.set_throttle(1)  # one call a minute: the second gets Retry-After ~60 s > the 2 s allowed
    pages = customer_pages(client, CallContext.new())
    first = next(pages)
    with pytest.raises(UpstreamThrottled) as raised:
        next(pages)
    assert raised.value.retry_after is not None and raised.value.retry_after > 2
    assert [call.status for call in listing_calls(sandbox)] == [200, 429]  # not retried inline

    sandbox.set_throttle(None)
    assert first.next is not None
    kept = NextLink.from_dict(json.loads(json.dumps(first.next.as_dict())))  # stored and read back
    rest = list(customer_pages(client, CallContext.new(), resume=kept))
    ids = [c.id for c in first.customers] + [c.id for page in rest for c in page.customers]
    assert ids == [profile.id for profile in sandbox.listed_customers()]


def test_next_links_resolve_like_the_sdk_and_never_leave_the_endpoint() -> None:
    endpoint = "https://api.partnercenter.microsoft.com"
    assert resolve("/v1/customers?size=500&seekOperation=Next", endpoint) == "/v1/customers?size=500&seekOperation=Next"
    assert resolve("/customers?size=500&seekOperation=Next", endpoint) == "/v1/customers?size=500&seekOperation=Next"
    assert resolve("customers?size=5", endpoint) == "/v1/customers?size=5"
    assert resolve(f"{endpoint}/v1/customers?size=5", endpoint) == "/v1/customers?size=5"
    with pytest.raises(UpstreamError):
        resolve("https://elsewhere.example/v1/customers?size=5", endpoint)
    assert first_page().uri == "/v1/customers?size=500"
    assert first_page("Fab rik").uri == (
        "/v1/customers?size=500&filter=%7B%22Field%22%3A%22CompanyName%22%2C%22Value%22%3A%22Fab+rik%22%2C"
        "%22Operator%22%3A%22starts_with%22%7D"
    )


def test_a_next_link_that_repeats_itself_stops_the_listing(client: PartnerCenterClient, sandbox: Sandbox) -> None:
    sandbox.seed_customers(10, random_seed=1)
    looping = {"items": [], "links": {"next": {"uri": "/v1/customers?size=500", "headers": []}}}
    sandbox.faults.add("list_customers", "status", status=200, body=looping)
    with pytest.raises(UpstreamError, match="repeats"):
        list(customer_pages(client, CallContext.new()))


def test_discovered_customers_are_assessed_one_by_one_with_the_existing_eligibility_call(
    client: PartnerCenterClient, sandbox: Sandbox
) -> None:
    summary = sandbox.seed_customers(600, random_seed=23)
    context = CallContext.new()
    verdicts = {"eligible": 0, "ineligible": 0, "upgraded": 0}
    for customer in partner_customers(client, context):
        answer = client.eligibility(customer.id, "Azure", context.next_operation())
        scenario = sandbox.customers.get(customer.id)
        if answer.upgrade_id is not None:
            assert not answer.is_eligible and answer.upgrade_id == sandbox.upgrade_ids(customer.id)[-1]
            verdicts["upgraded"] += 1
        elif answer.is_eligible:
            assert scenario.eligible
            verdicts["eligible"] += 1
        else:
            assert answer.reason == scenario.reason
            verdicts["ineligible"] += 1
    assert verdicts == {
        "eligible": summary.eligible,
        "ineligible": summary.ineligible,
        "upgraded": summary.already_upgraded + summary.upgrade_in_progress,
    }
    calls = sandbox.calls("partner_center", "eligibility")
    assert len(calls) == 600 and len({call.header("MS-RequestId") for call in calls}) == 600


def test_pages_are_read_defensively() -> None:
    good = str(uuid.uuid4()).upper()
    page = parse_page(
        {
            "items": [{"id": good, "companyProfile": {"companyName": "Contoso", "domain": ""}}, {"id": "x"}, "junk"],
            "links": {"next": {"uri": "/customers?seekOperation=Next", "headers": {"MS-ContinuationToken": "t"}}},
        }
    )
    assert [(c.id, c.company_name, c.domain) for c in page.customers] == [(good.lower(), "Contoso", None)]
    assert page.next == NextLink("/customers?seekOperation=Next", (("MS-ContinuationToken", "t"),))
    with pytest.raises(UpstreamError):
        parse_page({"links": {}})
    with pytest.raises(UpstreamError):
        parse_page({"items": [], "links": {"next": {"headers": []}}})
    assert parse_page({"items": []}).next is None
