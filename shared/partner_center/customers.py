"""The partner's customers, listed from Partner Center page by page, streamed.

`GET /v1/customers?size=500` (`develop/get-a-list-of-customers.md`), with Partner Center's
`starts_with` filter on the company name when a prefix is given (`develop/get-a-customer-by-name.md`:
`filter` is the URL-encoded `{"Field":"CompanyName","Value":...,"Operator":"starts_with"}`, the
value's case ignored). Every next page is `links.next.uri`, sent with every header listed in
`links.next.headers` (that is where `MS-ContinuationToken` travels); no `links.next` = the last
page. This is how the .NET SDK's `BaseResourceCollectionEnumerator` pages, including how it
resolves the link: a URI without the `/v1` segment gets it, against the configured endpoint.

Pages are yielded as they arrive (a generator: 10,000 customers are never one list in memory),
each with the `NextLink` that continues after it, so a caller can keep that link and resume later.
Calls go through `PartnerCenterClient.get_json`: the same token, retries, deadlines and tracing
headers as the product-upgrade calls; each page is its own operation (a fresh `MS-RequestId`,
the same correlation id), and a retry of a page resends its `MS-RequestId`. A `429` is retried
after its `Retry-After` when that fits `PARTNER_CENTER_MAX_RETRY_AFTER_SECONDS` (and the
deadline); a longer one raises `UpstreamThrottled` with Partner Center's `retry_after`: resume
from the last page's `next` after that long.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from shared.errors import InvalidRequest, UpstreamError
from shared.identifiers import is_guid

if TYPE_CHECKING:
    from shared.correlation import CallContext
    from shared.partner_center.client import PartnerCenterClient

log = logging.getLogger(__name__)

CUSTOMERS_PATH = "/v1/customers"
PAGE_SIZE = 500
API_VERSION_SEGMENT = "/v1"
MAX_PREFIX_LENGTH = 256


@dataclass(frozen=True)
class PartnerCustomer:
    """One customer as the list names it (`id`, `companyProfile`, `relationshipToPartner`)."""

    id: str
    company_name: str | None
    domain: str | None
    tenant_id: str | None
    relationship: str | None


@dataclass(frozen=True)
class NextLink:
    """Where the next page is: `links.next.uri` and the headers to send with it. Plain data, so a
    caller can store it (`as_dict` / `from_dict`) and resume the listing in a later run."""

    uri: str
    headers: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "headers": [{"key": key, "value": value} for key, value in self.headers]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NextLink:
        uri = data.get("uri")
        if not isinstance(uri, str) or not uri:
            raise UpstreamError("Partner Center's next link has no uri")
        return cls(uri, _headers_of(data.get("headers")))


@dataclass(frozen=True)
class CustomerPage:
    customers: tuple[PartnerCustomer, ...]
    next: NextLink | None  # None: this was the last page


def company_name_filter(prefix: str) -> str:
    """Partner Center's filter for company names starting with `prefix` (JSON, not yet encoded)."""
    return json.dumps({"Field": "CompanyName", "Value": prefix, "Operator": "starts_with"}, separators=(",", ":"))


def first_page(company_name_prefix: str | None = None, size: int = PAGE_SIZE) -> NextLink:
    """The link to the first page of the listing (every customer, or those whose name starts so)."""
    query: dict[str, str | int] = {"size": size}
    if company_name_prefix is not None:
        prefix = company_name_prefix.strip()
        if not prefix or len(prefix) > MAX_PREFIX_LENGTH:
            raise InvalidRequest(
                f"The company name prefix must be 1 to {MAX_PREFIX_LENGTH} characters",
                extensions={"field": "companyNamePrefix"},
            )
        query["filter"] = company_name_filter(prefix)
    return NextLink(f"{CUSTOMERS_PATH}?{urlencode(query)}")


def resolve(uri: str, endpoint: str) -> str:
    """A link's URI as a path from the endpoint's root: `/v1` added when missing (as the SDK's
    `BuildPartnerServiceApiUri` does); an absolute URI only on the endpoint's own host, so the
    partner's token is never sent anywhere else."""
    parts = urlsplit(uri.strip())
    if parts.scheme or parts.netloc:
        own = urlsplit(endpoint)
        if (parts.scheme.lower(), parts.netloc.lower()) != (own.scheme.lower(), own.netloc.lower()):
            raise UpstreamError("Partner Center's next link points to another host; not followed")
    path = "/" + parts.path.lstrip("/")
    if not path.lower().startswith(API_VERSION_SEGMENT + "/"):
        path = API_VERSION_SEGMENT + path
    return path + (f"?{parts.query}" if parts.query else "")


def customer_pages(
    client: PartnerCenterClient,
    context: CallContext,
    *,
    company_name_prefix: str | None = None,
    resume: NextLink | None = None,
) -> Iterator[CustomerPage]:
    """The listing's pages, one call each, as they come: from the first page (or from `resume`,
    a page's `next` kept earlier) to the last."""
    link: NextLink | None = resume or first_page(company_name_prefix)
    while link is not None:
        body = client.get_json(resolve(link.uri, client.endpoint), context.next_operation(), dict(link.headers))
        page = parse_page(body)
        if page.next is not None and page.next == link:
            raise UpstreamError("Partner Center's next link repeats the page just read; listing stopped")
        yield page
        link = page.next


def partner_customers(
    client: PartnerCenterClient, context: CallContext, *, company_name_prefix: str | None = None
) -> Iterator[PartnerCustomer]:
    """Every customer of the partner (whose company name starts with the prefix, if given)."""
    for page in customer_pages(client, context, company_name_prefix=company_name_prefix):
        yield from page.customers


def parse_page(body: Mapping[str, Any]) -> CustomerPage:
    """A Partner Center customer collection: its customers and its `links.next`."""
    items = body.get("items")
    if not isinstance(items, list):
        raise UpstreamError("Partner Center's customer list has no items array")
    customers = []
    skipped = 0
    for item in items:
        customer = _customer(item)
        if customer is None:
            skipped += 1
        else:
            customers.append(customer)
    if skipped:
        log.warning("partner_center.customers_skipped count=%d reason=no-guid-id", skipped)
    links = body.get("links")
    following = links.get("next") if isinstance(links, dict) else None
    return CustomerPage(tuple(customers), NextLink.from_dict(following) if isinstance(following, dict) else None)


def _customer(item: Any) -> PartnerCustomer | None:
    if not isinstance(item, dict) or not is_guid(item.get("id")):
        return None
    profile = item.get("companyProfile")
    profile = profile if isinstance(profile, dict) else {}

    def text(value: Any) -> str | None:
        return str(value) if value not in (None, "") else None

    return PartnerCustomer(
        id=str(item["id"]).lower(),
        company_name=text(profile.get("companyName")),
        domain=text(profile.get("domain")),
        tenant_id=text(profile.get("tenantId")),
        relationship=text(item.get("relationshipToPartner")),
    )


def _headers_of(raw: Any) -> tuple[tuple[str, str], ...]:
    """`links.next.headers` as pairs: Partner Center sends `[{"key": ..., "value": ...}]`; a JSON
    object of name -> value is read too."""
    if isinstance(raw, Mapping):
        return tuple((str(key), str(value)) for key, value in raw.items())
    pairs = []
    for entry in raw or ():
        if isinstance(entry, Mapping):
            key = entry.get("key", entry.get("Key"))
            value = entry.get("value", entry.get("Value"))
            if isinstance(key, str) and key and value is not None:
                pairs.append((key, str(value)))
    return tuple(pairs)
