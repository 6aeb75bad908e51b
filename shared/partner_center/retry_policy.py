"""urllib3's `Retry`, with one change: a Retry-After too long to wait inline is not waited at all.

Stock `Retry` either sleeps the whole Retry-After (Partner Center has sent 57 s) or, with
`retry_after_max`, clamps it and retries too early into another 429. Inside a synchronous
Power Automate call neither is right: past `retry_after_max` we stop and hand the 429/503 back,
so the caller (or the timer) can come back when Partner Center asked. Nor is a wait longer than
half the time left before the answer's deadline (`shared.deadlines`) taken.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from shared.deadlines import remaining

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse


class InlineRetry(Retry):
    """`Retry` that gives up, instead of clamping, when Retry-After exceeds `retry_after_max`."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if response is not None and self.respect_retry_after_header:
            header = response.headers.get("Retry-After")
            left = remaining()
            longest = self.retry_after_max if left is None else min(self.retry_after_max, left / 2)
            if header and self._raw_retry_after(header) > longest:
                # urllib3 raises MaxRetryError with no pool too; its stub says a pool is required.
                pool: Any = _pool
                raise MaxRetryError(pool, url or "", ResponseError("Retry-After beyond inline budget"))
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def _raw_retry_after(self, header: str) -> float:
        """Seconds asked for, unclamped (the parent's parser clamps to retry_after_max)."""
        unclamped = self.new(retry_after_max=10**9)
        try:
            return unclamped.parse_retry_after(header)
        except Exception:  # malformed header: let the normal policy decide
            return 0.0
