"""The partner's customer list, as ``GET /v1/customers`` pages through it.

Shapes follow Partner Center (``develop/get-a-list-of-customers.md``, ``get-a-customer-by-name.md``,
and the .NET SDK's customer query and ``BaseResourceCollectionEnumerator``):

* a page is ``{totalCount, items, links: {self, next?}, continuationToken?, attributes}``; an item
  is ``{id, companyProfile: {tenantId, domain, companyName}, relationshipToPartner, ...}``;
* the next page is ``links.next``: its ``uri`` (``/v1/customers?size=N&seekOperation=Next``) sent
  with the headers listed in ``links.next.headers`` (``[{"key": "MS-ContinuationToken", "value":
  ...}]``); the last page has no ``next``;
* ``filter`` is the URL-encoded JSON ``{"Field": "CompanyName", "Value": ..., "Operator":
  "starts_with"}``; ``starts_with`` is the only operator and the value's case is ignored.

Not published, so the sandbox's own choice: ``size`` absent or ``0`` (what the .NET SDK sends for
"no page size") means 500, and a larger size is served as 500 (the largest page Microsoft's own
bulk tools ask for). Pages are in company-name order and the continuation token is the position
after the last item (a seek, as ``seekOperation`` says), so a customer added while a client pages
through is neither repeated nor makes another one skipped.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import threading
from dataclasses import dataclass
from typing import Any

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 500
CONTINUATION_HEADER = "MS-ContinuationToken"
# CustomerSearchField values the filter accepts, and the profile field each one searches (the REST
# reference also names DisplayName / DefaultDomainName).
SEARCH_FIELDS = {
    "companyname": "company_name",
    "displayname": "company_name",
    "domain": "domain",
    "defaultdomainname": "domain",
}


class ListingError(ValueError):
    """A listing request Partner Center would refuse with 400 (bad size, filter or token)."""


@dataclass(frozen=True)
class CustomerProfile:
    """One customer of the partner: its id is also its tenant id, as in Partner Center's examples."""

    id: str
    company_name: str
    domain: str
    relationship: str = "reseller"

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.company_name.lower(), self.id)

    def resource(self) -> dict[str, Any]:
        """The Customer resource as a list page carries it."""
        return {
            "id": self.id,
            "companyProfile": {
                "tenantId": self.id,
                "domain": self.domain,
                "companyName": self.company_name,
                "attributes": {"objectType": "CustomerCompanyProfile"},
            },
            "relationshipToPartner": self.relationship,
            "links": {"self": {"uri": f"/customers/{self.id}", "method": "GET", "headers": []}},
            "attributes": {"objectType": "Customer"},
        }


@dataclass(frozen=True)
class Query:
    """What one listing asks for: a page size, an optional starts_with filter, and where to start."""

    size: int
    field: str | None = None
    prefix: str | None = None
    after: tuple[str, str] | None = None

    def matches(self, profile: CustomerProfile) -> bool:
        if self.field is None or self.prefix is None:
            return True
        return str(getattr(profile, self.field)).lower().startswith(self.prefix.lower())

    def token_after(self, last: CustomerProfile) -> str:
        """The opaque continuation token for the page after ``last`` (it carries the filter)."""
        state = {"s": self.size, "f": self.field, "p": self.prefix, "a": list(last.sort_key)}
        return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def page_size(raw: str | None) -> int:
    if raw is None or raw.strip() in ("", "0"):
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise ListingError("size must be an integer") from None
    if size < 0:
        raise ListingError("size must not be negative")
    return min(size, MAX_PAGE_SIZE)


def parse_filter(raw: str) -> tuple[str, str]:
    """(profile field, prefix) from the decoded ``filter`` parameter."""
    try:
        spec = json.loads(raw)
    except ValueError:
        raise ListingError("filter must be a JSON object") from None
    if not isinstance(spec, dict):
        raise ListingError("filter must be a JSON object")
    field, value, operator = spec.get("Field"), spec.get("Value"), spec.get("Operator")
    if not isinstance(field, str) or field.lower() not in SEARCH_FIELDS:
        raise ListingError(f"filter Field must be one of CompanyName, Domain, not {field!r}")
    if operator != "starts_with":
        raise ListingError('filter Operator must be "starts_with", the only one customers support')
    if not isinstance(value, str) or not value:
        raise ListingError("filter Value must be a non-empty string")
    return SEARCH_FIELDS[field.lower()], value


def parse_token(token: str) -> Query:
    """The query a continuation token continues."""
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = state["a"]
        return Query(size=int(state["s"]), field=state["f"], prefix=state["p"], after=(str(after[0]), str(after[1])))
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
        raise ListingError("The continuation token is not valid") from None


class CustomerDirectory:
    """Thread-safe list of the partner's customers, kept in company-name order for seeking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, CustomerProfile] = {}
        self._keys: list[tuple[str, str]] = []
        self._sorted: list[CustomerProfile] = []

    def add(self, profile: CustomerProfile) -> None:
        with self._lock:
            key = profile.id.lower()
            old = self._by_id.get(key)
            if old is not None:
                index = bisect.bisect_left(self._keys, old.sort_key)
                del self._keys[index], self._sorted[index]
            self._by_id[key] = profile
            index = bisect.bisect_left(self._keys, profile.sort_key)
            self._keys.insert(index, profile.sort_key)
            self._sorted.insert(index, profile)

    def add_many(self, profiles: list[CustomerProfile]) -> None:
        """Many at once: one sort instead of an insertion each (seeding thousands)."""
        with self._lock:
            for profile in profiles:
                self._by_id[profile.id.lower()] = profile
            self._sorted = sorted(self._by_id.values(), key=lambda profile: profile.sort_key)
            self._keys = [profile.sort_key for profile in self._sorted]

    def get(self, customer_id: str) -> CustomerProfile | None:
        with self._lock:
            return self._by_id.get(customer_id.lower())

    def all(self) -> list[CustomerProfile]:
        with self._lock:
            return list(self._sorted)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sorted)

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()
            self._keys.clear()
            self._sorted.clear()

    def page(self, query: Query) -> tuple[list[CustomerProfile], str | None]:
        """Up to ``query.size`` matching customers after ``query.after``, and the token for the
        next page (None when nothing matching follows)."""
        with self._lock:
            start = 0 if query.after is None else bisect.bisect_right(self._keys, query.after)
            found: list[CustomerProfile] = []
            index = start
            while index < len(self._sorted) and len(found) < query.size:
                if query.matches(self._sorted[index]):
                    found.append(self._sorted[index])
                index += 1
            more = any(query.matches(profile) for profile in self._sorted[index:]) if found else False
        token = query.token_after(found[-1]) if more else None
        return found, token
