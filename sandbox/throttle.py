"""Partner Center's throttle: a partner's calls above a rate are answered ``429`` + ``Retry-After``.

Partner Center publishes no numbers, only the behaviour (``develop/api-throttling-guidance.md``):
limits are per partner tenant, and a call over the limit gets ``429`` with ``Retry-After`` in
seconds and the body ``{"statusCode":429,"message":"Rate limit is exceeded. Try again in N
seconds."}``. The sandbox has one partner (its tenant), so one window counts every Partner Center
call it serves. Off by default; a test or the benchmark sets the rate it wants to be throttled at.

A sliding window log: a call is admitted while fewer than ``limit`` calls were admitted in the last
``window_seconds``; otherwise ``Retry-After`` is the whole seconds until the oldest of them leaves
the window, so a client that waits exactly that long is admitted. Refused calls do not count
(a client honouring ``Retry-After`` must get in), which also makes the admitted rate exact: a
client ignoring the throttle can never push more than ``limit`` calls through per window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

DEFAULT_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class ThrottleSetting:
    """``per_minute`` calls per minute, counted over ``window_seconds`` (60 as Partner Center's
    message suggests; tests use a short window so a Retry-After is a second, not a minute)."""

    per_minute: float
    window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ValueError("per_minute must be a positive number (or switch the throttle off)")
        if not self.window_seconds > 0:
            raise ValueError("window_seconds must be a positive number")

    @property
    def limit(self) -> int:
        """Calls admitted per window: the rate scaled to the window, at least one."""
        return max(1, math.floor(self.per_minute * self.window_seconds / 60.0 + 1e-9))

    def as_dict(self) -> dict[str, float | int]:
        return {"perMinute": self.per_minute, "windowSeconds": self.window_seconds, "limit": self.limit}


class Throttle:
    """Thread-safe admission control for one partner; ``admit()`` -> None or the Retry-After seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._setting: ThrottleSetting | None = None
        self._admitted: deque[float] = deque()
        self.refused = 0

    @property
    def setting(self) -> ThrottleSetting | None:
        return self._setting

    def configure(self, setting: ThrottleSetting | None) -> None:
        """A new rate (None: off); calls already admitted keep counting in the window."""
        with self._lock:
            self._setting = setting

    def clear(self) -> None:
        """Off, and forget the calls counted so far."""
        with self._lock:
            self._setting = None
            self._admitted.clear()
            self.refused = 0

    def admit(self, now: float | None = None) -> int | None:
        """None if this call may go through (it is counted), else the seconds to wait (>= 1)."""
        with self._lock:
            setting = self._setting
            if setting is None:
                return None
            now = time.monotonic() if now is None else now
            horizon = now - setting.window_seconds
            while self._admitted and self._admitted[0] <= horizon:
                self._admitted.popleft()
            if len(self._admitted) < setting.limit:
                self._admitted.append(now)
                return None
            self.refused += 1
            oldest_leaves = self._admitted[len(self._admitted) - setting.limit] + setting.window_seconds
            return max(1, math.ceil(oldest_leaves - now))
