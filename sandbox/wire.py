"""HTTP request/response values passed between the server and the fake services.

The services are plain functions from a ``Request`` to a ``Response`` so they can be reasoned
about (and unit-tested) without sockets; only ``server.py`` touches the wire.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping.

    HTTP header names are case-insensitive and the SDKs disagree on spelling
    (``MS-RequestId`` vs ``ms-requestid``), so lookups must not depend on it.
    The first spelling seen is kept for display.
    """

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._data: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            self._data.setdefault(name.lower(), (name, value))

    def __getitem__(self, name: str) -> str:
        return self._data[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._data

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request as the fake services see it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Headers
    body: bytes = b""

    @classmethod
    def build(
        cls, method: str, target: str, headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes
    ) -> Request:
        path, _, raw_query = target.partition("?")
        return cls(method.upper(), path, parse_qs(raw_query, keep_blank_values=True), Headers(headers), body)

    def param(self, name: str) -> str | None:
        """First value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form (first value of each field)."""
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}

    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header, or None."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


@dataclass
class Response:
    """What a fake service answers; the server adds Date, Server and Content-Length.

    ``replayed`` never goes on the wire: it marks an idempotent replay for the call log.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(payload).encode("utf-8"), merged)

    @classmethod
    def empty(cls, status: int, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


def new_guid() -> str:
    """A lowercase GUID, the format every Microsoft identifier here uses."""
    return str(uuid.uuid4())


def is_guid(value: object) -> bool:
    """True for a string that parses as a GUID (any case, with or without braces)."""
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
