"""Per-key rate limit: an in-memory token bucket for each API key (or the open tenant).

It runs on every authenticated request, so it is plain and O(1): one dict lookup and a little
arithmetic, synchronous (no await, so no lock is needed on the event loop). Buckets live in this
process only; a restart refills them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from tether.errors import TetherError


class RateLimiter:
    """`rate` requests a second per key, and up to `burst` at once."""

    __slots__ = ("_buckets", "_clock", "_max_keys", "burst", "rate")

    def __init__(
        self,
        rate: float,
        burst: int = 0,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(rate)))
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key → [tokens, at]

    def wait(self, key: str) -> float:
        """Take one token for `key`: 0.0 if the request may run, else seconds until it may."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # only authenticated keys get here: a safety net
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def check(self, key: str) -> None:
        """Raise 429 `rate_limit_exceeded` (with an integer Retry-After) when over the limit."""
        wait = self.wait(key)
        if wait > 0.0:
            retry = max(1, math.ceil(wait))
            raise TetherError(
                429,
                "rate_limit_exceeded",
                f"too many requests for this API key (limit {self.rate:g}/s, burst "
                f"{self.burst:g}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
