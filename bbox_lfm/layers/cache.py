"""Cache layer: in front of the budget, so a hit costs nothing.

Modes: ``off`` (pass through), ``readwrite`` (answer from the store when possible, store every
new answer), ``replay`` (answer only from the store; a miss raises ``CacheMiss`` and nothing is
sent), ``record`` (always send, overwrite the stored answer).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from ..adapters.base import Sender
from ..cachekey import cache_key
from ..errors import CacheMiss, check
from ..types import Query, Response

__all__ = ["CACHE_MODES", "CacheLayer"]

CACHE_MODES = ("off", "readwrite", "replay", "record")


class CacheLayer:
    """Answer from ``store`` where the mode allows; ``on_hit(response)`` is told of every hit."""

    def __init__(self, inner: Sender, store: Any, *, mode: str = "readwrite", base_url: str = "",
                 on_hit: Callable[[Response], None] | None = None):
        check(mode in CACHE_MODES, "cache_mode", f"one of {CACHE_MODES}", mode)
        self.inner = inner
        self.store = store
        self.mode = mode
        self.base_url = base_url
        self.on_hit = on_hit

    def send(self, query: Query) -> Response:
        """Look up, else send and store."""
        if self.mode == "off":
            return self.inner.send(query)
        key = cache_key(query, self.base_url)
        if self.mode != "record":
            entry = self.store.get(key)
            if entry is not None:
                hit = dataclasses.replace(Response.from_json(entry["response"]), cache_hit=True)
                if self.on_hit is not None:
                    self.on_hit(hit)
                return hit
            if self.mode == "replay":
                raise CacheMiss(key, query.describe())
        response = self.inner.send(query)
        self.store.put(key, {
            "query": query.to_json(), "response": response.to_json(), "base_url": self.base_url,
            "created_at": time.time(), "latency_s": response.latency_s,
            "usage": dataclasses.asdict(response.usage), "cost_usd": response.cost_usd,
        })
        return response
