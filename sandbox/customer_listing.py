"""Fake ``GET /v1/customers``: the partner's customers, page by page (see ``customer_directory``).

The first page is ``?size=N`` (and ``&filter=...``); every next one is the ``links.next.uri`` of
the page before, ``?size=N&seekOperation=Next``, with ``MS-ContinuationToken`` from
``links.next.headers``: without that header (or with one the sandbox never issued) the call is a
``400``, so a client that drops the header fails here as it would against Partner Center.
Listing accepts App+User and app-only tokens alike, as the docs say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .customer_directory import CONTINUATION_HEADER, ListingError, Query, page_size, parse_filter, parse_token
from .partner_center import authenticate, error, tracing_headers
from .wire import Response

if TYPE_CHECKING:
    from .state import SandboxState
    from .wire import Request

CUSTOMERS_PATH = "/v1/customers"


def _query(request: Request) -> Query:
    seek = request.param("seekOperation")
    if seek is not None:
        if seek.lower() != "next":
            raise ListingError(f"seekOperation {seek!r} is not supported by the sandbox (only Next)")
        token = request.headers.get(CONTINUATION_HEADER)
        if not token:
            raise ListingError(f"seekOperation=Next needs the {CONTINUATION_HEADER} header from links.next.headers")
        return parse_token(token)
    size = page_size(request.param("size"))
    raw_filter = request.param("filter")
    if raw_filter is None:
        return Query(size=size)
    field, prefix = parse_filter(raw_filter)
    return Query(size=size, field=field, prefix=prefix)


def _self_uri(request: Request) -> str:
    pairs = [(name, value) for name, values in request.query.items() for value in values]
    return CUSTOMERS_PATH + (f"?{urlencode(pairs)}" if pairs else "")


def list_customers(request: Request, state: SandboxState) -> Response:
    """``GET /v1/customers``: one page of Customer resources."""
    refused = authenticate(request, state, app_only_allowed=True)
    if refused is not None:
        return refused
    try:
        query = _query(request)
    except ListingError as problem:
        return error(request, 400, 800002, f"Invalid request input: {problem}")
    found, token = state.customers.directory.page(query)
    links: dict[str, Any] = {"self": {"uri": _self_uri(request), "method": "GET", "headers": []}}
    body: dict[str, Any] = {
        "totalCount": len(found),
        "items": [profile.resource() for profile in found],
        "links": links,
        "attributes": {"objectType": "Collection"},
    }
    if token is not None:
        links["next"] = {
            "uri": f"{CUSTOMERS_PATH}?size={query.size}&seekOperation=Next",
            "method": "GET",
            "headers": [{"key": CONTINUATION_HEADER, "value": token}],
        }
        body["continuationToken"] = token
    return Response.json(200, body, tracing_headers(request))
