"""A provider in a function, for tests and benchmarks (no network)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..types import Query, Response
from .parse import parse_response

__all__ = ["MockAdapter"]

Handler = Callable[[Query], "Response | Mapping[str, Any]"]


class MockAdapter:
    """Answers each query with ``handler(query)``: a :class:`Response`, or an OpenAI-shaped dict
    parsed exactly as a real answer would be. ``latency_s`` sleeps (through ``sleep``) before
    answering; ``queries`` records every query that reached it, in arrival order."""

    def __init__(self, handler: Handler, *, latency_s: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.handler = handler
        self.latency_s = latency_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self.queries: list[Query] = []

    @property
    def calls(self) -> int:
        """Number of queries answered so far."""
        return len(self.queries)

    def send(self, query: Query) -> Response:
        """Answer ``query`` with the handler."""
        with self._lock:
            self.queries.append(query)
        if self.latency_s:
            self._sleep(self.latency_s)
        out = self.handler(query)
        if isinstance(out, Response):
            return out
        return parse_response(out, query.endpoint)

    def models(self) -> list[dict[str, Any]]:
        """No model metadata: the mock has none."""
        return []
