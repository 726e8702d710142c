"""Retry layer (tenacity): connection errors, timeouts, answers cut off on the way (a 200 whose
body is not JSON), 408, 409, 429 and 5xx are retried with jittered exponential back-off, or
exactly as long as ``Retry-After`` asks; anything else fails at once. The sleep and the random
generator are injectable for tests."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from ..adapters.base import Sender
from ..errors import APIConnectionError, APIStatusError, ProviderError, RateLimitError, ServerError, check
from ..types import Query, Response

__all__ = ["RetryLayer", "is_retryable"]

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """True for the failures worth another attempt."""
    return isinstance(exc, (APIConnectionError, RateLimitError, ServerError))


class RetryLayer:
    """Retry ``inner`` up to ``max_attempts`` times in all; report attempts on the response."""

    def __init__(self, inner: Sender, *, max_attempts: int = 6, initial_wait: float = 0.5,
                 max_wait: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        check(max_attempts >= 1, "max_attempts", ">= 1", max_attempts)
        self.inner = inner
        self.max_attempts = max_attempts
        self.initial_wait = initial_wait
        self.max_wait = max_wait
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIStatusError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        base = min(self.max_wait, self.initial_wait * 2 ** (state.attempt_number - 1))
        return base * (0.5 + 0.5 * self._rng.random())  # jitter spreads out synchronized retries

    def call(self, fn: Callable[[], T]) -> tuple[T, int]:
        """``fn()`` with retries, and the attempts it took; the last error is re-raised unchanged,
        carrying ``attempts``. For requests that are not queries (the model list)."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(is_retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    out = fn()
                if not attempt.retry_state.outcome or not attempt.retry_state.outcome.failed:
                    return out, attempt.retry_state.attempt_number
        except ProviderError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)  # the budget counts the retries
            raise
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    def send(self, query: Query) -> Response:
        """Send with retries; the last error is re-raised unchanged. The answer carries the
        number of attempts and the latency over all of them."""
        t0 = time.perf_counter()
        response, attempts = self.call(lambda: self.inner.send(query))
        return response.replace(attempts=attempts, latency_s=time.perf_counter() - t0)
