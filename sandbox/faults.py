"""Fault injection: make the next matching call fail the way real networks and services do.

The app's retry, timeout and idempotency logic can only be proven against failures, and the
interesting ones are hard to provoke for real: a 429 with Retry-After, a connection reset, and
above all the *ambiguous* create, where Partner Center accepted the upgrade but the answer never
arrived (``process_then_hang`` / ``process_then_reset``). Two more make the lifecycle model test
deterministic: ``land_late`` drops the connection unanswered and parks the request, which takes
effect only when the test calls ``Sandbox.land_late()`` (a create that lands after the client gave
up, at a moment the test chooses); ``process_without_location`` processes the call and answers
without its ``Location`` header (a 202 the client cannot read an upgrade id from); ``trickle``
answers at once but sends the answer one byte every ``seconds`` (a per-read timeout never fires,
only a total deadline stops it). Queued faults
are consumed in the order they were added; a random mode supports chaos tests.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

KINDS = (
    "status",
    "delay",
    "reset",
    "process_then_hang",
    "process_then_reset",
    "land_late",
    "process_without_location",
    "trickle",
)
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "status": {"status": 503},
    "delay": {"seconds": 1.0},
    "reset": {},
    "process_then_hang": {"seconds": 30.0},
    "process_then_reset": {},
    "land_late": {},
    "process_without_location": {},
    "trickle": {"seconds": 1.0},
}


@dataclass(frozen=True)
class FaultAction:
    """The fault to apply to one request."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return int(self.params.get("status", 503))

    @property
    def seconds(self) -> float:
        return float(self.params.get("seconds", DEFAULT_PARAMS.get(self.kind, {}).get("seconds", 0.0)))

    @property
    def retry_after(self) -> str | None:
        value = self.params.get("retry_after")
        return None if value is None else str(value)

    @property
    def processes_request(self) -> bool:
        """Whether the service handles the request (and changes state) despite the fault."""
        return self.kind in (
            "delay",
            "process_then_hang",
            "process_then_reset",
            "process_without_location",
            "trickle",
        )


@dataclass
class _QueuedFault:
    operation: str
    action: FaultAction
    remaining: int


def _matches(pattern: str, service: str, operation: str) -> bool:
    """``*``, ``operation``, ``service.operation`` and ``service.*`` all select a call."""
    pattern = pattern.lower()
    return pattern in ("*", operation, f"{service}.{operation}", f"{service}.*")


def _action(kind: str, params: Mapping[str, Any]) -> FaultAction:
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {KINDS}, not {kind!r}")
    merged = {**DEFAULT_PARAMS[kind], **params}
    if kind == "status" and not 100 <= int(merged["status"]) <= 599:
        raise ValueError(f"status fault needs an HTTP status, not {merged['status']!r}")
    return FaultAction(kind, merged)


class Faults:
    """Thread-safe fault plan shared by every request handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_QueuedFault] = []
        self._random: tuple[random.Random, float, tuple[FaultAction, ...], tuple[str, ...]] | None = None

    def add(self, operation: str, kind: str, count: int = 1, **params: Any) -> None:
        """Queue ``count`` faults for calls matching ``operation``.

        ``operation`` is one of the recorded operation names ("create_upgrade", "eligibility",
        "upgrade_status", "token", "get_secret", "set_secret", ...), ``"*"`` for any call, or
        ``"service.operation"`` / ``"service.*"`` to pick one service (e.g. "managed_identity.token").
        Params: ``status`` and ``retry_after`` (+ optional ``code``/``description`` for the
        body) for "status"; ``seconds`` for "delay" and "process_then_hang", and between two
        bytes for "trickle".
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        action = _action(kind, params)
        with self._lock:
            self._queue.append(_QueuedFault(operation.lower(), action, count))

    def add_spec(self, spec: Mapping[str, Any]) -> None:
        """Queue a fault from a JSON spec (the control surface's format)."""
        spec = dict(spec)
        operation = str(spec.pop("operation", "*"))
        kind = str(spec.pop("kind"))
        count = int(spec.pop("count", 1))
        self.add(operation, kind, count, **spec)

    def set_random(
        self,
        rate: float = 0.2,
        kinds: Iterable[str] = ("status", "reset", "delay"),
        seed: int | None = None,
        operations: Iterable[str] = ("*",),
        **params: Any,
    ) -> None:
        """Fail a random ``rate`` of matching calls with a random kind (after queued faults)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        actions = tuple(_action(kind, params) for kind in kinds)
        if not actions:
            raise ValueError("kinds must not be empty")
        with self._lock:
            self._random = (random.Random(seed), rate, actions, tuple(op.lower() for op in operations))

    def clear_random(self) -> None:
        with self._lock:
            self._random = None

    def clear(self) -> None:
        """Drop every queued fault and the random mode."""
        with self._lock:
            self._queue.clear()
            self._random = None

    def pending(self) -> list[dict[str, Any]]:
        """Queued faults not yet consumed, for inspection and the control surface."""
        with self._lock:
            return [
                {"operation": q.operation, "kind": q.action.kind, "count": q.remaining, **q.action.params}
                for q in self._queue
            ]

    def take(self, service: str, operation: str) -> FaultAction | None:
        """Consume and return the fault for this call, if any."""
        with self._lock:
            for index, queued in enumerate(self._queue):
                if _matches(queued.operation, service, operation):
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        del self._queue[index]
                    return queued.action
            if self._random is not None:
                rng, rate, actions, operations = self._random
                if any(_matches(op, service, operation) for op in operations) and rng.random() < rate:
                    return rng.choice(actions)
        return None
