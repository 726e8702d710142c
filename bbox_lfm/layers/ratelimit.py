"""Rate-limit layer: keeps requests and tokens per minute under the profile's limits.

Two token buckets (requests, tokens), each holding at most one minute's allowance and refilled
continuously. A query waits until both have room; the token bucket is charged the budget's
upper-bound estimate and refunded the difference once the answer reports its usage. The clock
and the sleep are injectable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..adapters.base import Sender
from ..budget import estimate_tokens
from ..types import Query, Response

__all__ = ["RateLimitLayer", "TokenBucket"]


class TokenBucket:
    """``per_minute`` units a minute, at most a minute's worth banked; 0 means unlimited."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self._clock = clock
        self._level = per_minute
        self._t = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.per_minute, self._level + (now - self._t) * self.rate)
        self._t = now

    def take(self, amount: float) -> float:
        """Take ``amount`` (possibly going negative); return seconds to wait before sending."""
        if not self.per_minute:
            return 0.0
        amount = min(amount, self.per_minute)  # one huge query must still go out eventually
        with self._lock:
            self._refill()
            self._level -= amount
            return 0.0 if self._level >= 0 else -self._level / self.rate

    def give(self, amount: float) -> None:
        """Return ``amount`` (an over-estimate refunded)."""
        if not self.per_minute:
            return
        with self._lock:
            self._refill()
            self._level = min(self.per_minute, self._level + amount)


class RateLimitLayer:
    """Delay queries so that neither limit is exceeded."""

    def __init__(self, inner: Sender, *, requests_per_minute: float = 0, tokens_per_minute: float = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.inner = inner
        self.requests = TokenBucket(requests_per_minute, clock=clock)
        self.tokens = TokenBucket(tokens_per_minute, clock=clock)
        self._sleep = sleep

    def send(self, query: Query) -> Response:
        """Wait for room in both buckets, then send."""
        est = estimate_tokens(query) if self.tokens.per_minute else 0
        wait = max(self.requests.take(1), self.tokens.take(est))
        if wait > 0:
            self._sleep(wait)
        response = self.inner.send(query)
        if est:
            self.tokens.give(max(0, est - response.usage.total_tokens))
        return response
