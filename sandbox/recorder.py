"""The log of every call the fake services received.

Tests assert on what actually reached the wire (how many token requests, which headers, whether
an upgrade was submitted twice), so every request is recorded *before* its response is sent:
a client that has its answer can rely on the call being visible.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from .wire import Headers


@dataclass(frozen=True)
class RecordedCall:
    """One request as received, plus the status the sandbox answered (0 = no answer)."""

    service: str
    operation: str
    method: str
    path: str
    headers: Headers
    body: bytes
    at: float
    status: int
    query: dict[str, list[str]]
    fault: str | None = None
    replayed: bool = False

    def json(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """The request body as a URL-encoded form (token requests), first value of each field."""
        return {key: values[0] for key, values in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        return self.headers.get(name, default)


class CallLog:
    """Thread-safe append-only list of ``RecordedCall``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[RecordedCall] = []

    def append(self, call: RecordedCall) -> None:
        with self._lock:
            self._calls.append(call)

    def select(self, service: str | None = None, operation: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [
                call
                for call in self._calls
                if (service is None or call.service == service) and (operation is None or call.operation == operation)
            ]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{service: {operation: n}}`` for the control surface."""
        with self._lock:
            counter = Counter((call.service, call.operation) for call in self._calls)
        result: dict[str, dict[str, int]] = {}
        for (service, operation), count in sorted(counter.items()):
            result.setdefault(service, {})[operation] = count
        return result

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
