"""Cache layer: in front of the budget, so a hit costs nothing.

Modes: ``off`` (pass through), ``readwrite`` (answer from the store when possible, store every
new answer), ``replay`` (answer only from the store; a miss raises ``CacheMiss`` and nothing is
sent), ``record`` (always send, overwrite the stored answer). Threads that miss the same key at
once send it once: the others wait for that answer (single flight, within one process).

A hit keeps the original usage and cost and is marked ``cache_hit=True``. Sampling queries
without a ``sample_id`` are numbered per identical query, as :mod:`bbox_lfm.cachekey` explains,
so n repeats are n entries and a rerun replays them in the same order.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..adapters.base import Sender
from ..cachekey import cache_key, occurrence_query
from ..errors import CacheMiss, check
from ..types import Query, Response

if TYPE_CHECKING:
    from ..stores.base import Store

__all__ = ["CACHE_MODES", "CacheLayer"]

_LONG = 4096  # characters; soft/deep prompt tensors (BBTv2's are ~4.6 MB of base64) are far above


def compact(value: Any) -> Any:
    """The stored copy of a query: long strings inside ``extra`` (encoded tensors) become their
    sha256 and length. The key already hashes the full query; storing megabytes of base64 per
    entry would make a BBTv2 run's cache gigabytes large for nothing."""
    if isinstance(value, str):
        if len(value) <= _LONG:
            return value
        return {"sha256": hashlib.sha256(value.encode("utf-8")).hexdigest(), "chars": len(value)}
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value

CACHE_MODES = ("off", "readwrite", "replay", "record")


class CacheLayer:
    """Answer from ``store`` where the mode allows; ``on_hit(response)`` is told of every hit."""

    def __init__(self, inner: Sender, store: Store, *, mode: str = "readwrite", base_url: str = "",
                 on_hit: Callable[[Response], None] | None = None):
        check(mode in CACHE_MODES, "cache_mode", f"one of {CACHE_MODES}", mode)
        self.inner = inner
        self.store = store
        self.mode = mode
        self.base_url = base_url
        self.on_hit = on_hit
        self._occurrences: dict[str, int] = {}
        self._occ_lock = threading.Lock()
        # single flight: one sender per key at a time, so that threads missing the same key at
        # once wait for its answer instead of paying for it again; key -> [lock, waiters]
        self._flights: dict[str, list[Any]] = {}
        self._flights_lock = threading.Lock()

    def _numbered(self, query: Query) -> Query:
        """An unlabelled sampling query as the sample it is: its k-th repeat gets ``sample_id=k``."""
        base = cache_key(query, self.base_url)
        with self._occ_lock:
            k = self._occurrences.get(base, 0)
            self._occurrences[base] = k + 1
        return occurrence_query(query, k)

    def _hit(self, key: str) -> Response | None:
        stored = self.store.get_response(key)
        if stored is None:
            return None
        # one construction: the stored JSON with the hit flag set
        hit = Response.from_json({**stored, "cache_hit": True})
        self.store.note_hit(key)
        if self.on_hit is not None:
            self.on_hit(hit)
        return hit

    @contextlib.contextmanager
    def _flight(self, key: str) -> Iterator[None]:
        with self._flights_lock:
            flight = self._flights.setdefault(key, [threading.Lock(), 0])
            flight[1] += 1
        try:
            with flight[0]:
                yield
        finally:
            with self._flights_lock:
                flight[1] -= 1
                if not flight[1]:
                    del self._flights[key]

    def send(self, query: Query) -> Response:
        """Look up, else send and store."""
        if self.mode == "off":
            return self.inner.send(query)
        if query.sample_id is None and query.sampling:
            query = self._numbered(query)
        key = cache_key(query, self.base_url)
        if self.mode == "record":
            return self._send_and_store(key, query)
        hit = self._hit(key)
        if hit is not None:
            return hit
        self.store.note_miss()
        if self.mode == "replay":
            described = self.store.describe_miss()
            where = f"; {described}" if described else ""
            from ..stores.nearest import nearest_difference

            raise CacheMiss(key, query.describe() + where, nearest_difference(self.store, query, self.base_url))
        with self._flight(key):
            # another thread may have sent this very query while this one waited
            hit = self._hit(key)
            return hit if hit is not None else self._send_and_store(key, query)

    def _send_and_store(self, key: str, query: Query) -> Response:
        response = self.inner.send(query)
        qjson, rjson = query.to_json(), response.to_json()  # each built once: this is the miss hot path
        self.store.put(key, {
            "query": {**qjson, "extra": compact(qjson["extra"])}, "response": rjson, "base_url": self.base_url,
            "created_at": time.time(), "latency_s": response.latency_s,
            "usage": rjson["usage"], "cost_usd": response.cost_usd,
        })
        return response
