"""Whether telemetry is on: read by every helper before it touches OpenTelemetry, so that with
telemetry off (no connection string, not activated by a test) nothing of it is imported or run."""

from __future__ import annotations

_active = False


def active() -> bool:
    return _active


def set_active(value: bool) -> None:
    global _active
    _active = value
