"""Strict reading of callers' input: anything doubtful is a clear 4xx before any side effect.

Nothing here touches Partner Center or storage, so a rejected request has no effect at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from shared.identifiers import is_guid

MAX_BODY_BYTES = 4096
# Partner Center documents one product family for upgrades; the key is the case-folded spelling.
PRODUCT_FAMILIES = {"azure": "Azure"}
DEFAULT_PRODUCT_FAMILY = "Azure"


@dataclass(frozen=True)
class UpgradeTarget:
    """Which customer to upgrade to which product family (both validated)."""

    customer_id: str
    product_family: str


def read_json_object(
    headers: Mapping[str, str], body: bytes, allowed_fields: Iterable[str], max_bytes: int = MAX_BODY_BYTES
) -> dict[str, Any]:
    """The body as a JSON object with only `allowed_fields`, or a precise 400/413/415 (`max_bytes`:
    a larger limit for a body that lists many customers, a campaign's)."""
    content_type = headers.get("content-type") or headers.get("Content-Type") or ""
    media_type, _, params = content_type.partition(";")
    if media_type.strip().lower() != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type[:100]!r}")
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        raise UnsupportedMediaType("Only the utf-8 charset is accepted")
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"The body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("The body is not valid UTF-8") from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:
        raise InvalidRequest(f"The body is not valid JSON: {_short(error)}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("The body must be a JSON object")
    refuse_unknown(document, "field(s)", {"allowedFields": sorted(allowed_fields)})
    return document


def refuse_unknown(names: Iterable[str], what: str, allowed: Mapping[str, list[str]]) -> None:
    """`InvalidRequest` naming the first unknown names (at most 5, 40 characters each), so a typo
    such as `customerID` or `sate=` is refused instead of silently ignored. `allowed` is the one
    extension that lists the accepted names, e.g. `{"allowedFields": [...]}`."""
    accepted = set(next(iter(allowed.values())))
    unknown = sorted(set(names) - accepted)
    if unknown:
        raise InvalidRequest(
            f"Unknown {what}: {', '.join(repr(name[:40]) for name in unknown[:5])}", extensions=dict(allowed)
        )


def upgrade_target(document: Mapping[str, Any]) -> UpgradeTarget:
    """customerId (GUID, required) and productFamily (optional, default Azure) from a body."""
    return UpgradeTarget(
        customer_id=customer_id_value(document.get("customerId"), "customerId"),
        product_family=product_family_value(document.get("productFamily", DEFAULT_PRODUCT_FAMILY)),
    )


def customer_id_value(value: object, name: str = "customerId") -> str:
    if value is None or value == "":
        raise InvalidRequest(f"{name} is required", extensions={"field": name})
    if not is_guid(value):
        raise InvalidRequest(
            f"{name} must be a GUID like 4c721420-72ad-4708-a0a7-371a2f7b0969", extensions={"field": name}
        )
    return str(value).lower()


def upgrade_id_value(value: object, field: str = "upgradeId") -> str:
    if not is_guid(value):
        raise InvalidRequest(f"{field} must be a GUID", extensions={"field": field})
    return str(value).lower()


def product_family_value(value: object) -> str:
    family = PRODUCT_FAMILIES.get(value.casefold()) if isinstance(value, str) and value.isascii() else None
    if family is None:
        raise InvalidRequest(
            f"productFamily must be one of: {', '.join(PRODUCT_FAMILIES.values())}",
            extensions={"field": "productFamily"},
        )
    return family


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _short(error: BaseException) -> str:
    return str(error)[:120] if isinstance(error, ValueError) else "nested too deeply"
