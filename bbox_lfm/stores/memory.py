"""An in-process store (tests, benchmarks, and the base of cassettes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from .filters import EntryFilter

__all__ = ["MemoryStore"]


class MemoryStore:
    """A dict behind a lock, with the same interface as the SQLite store."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}
        self._hits: dict[str, int] = {}
        self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry (``query``, ``response``, ...) or None."""
        return self._data.get(key)

    def get_response(self, key: str) -> dict[str, Any] | None:
        """Only the stored response of ``key``, or None."""
        entry = self._data.get(key)
        return None if entry is None else entry["response"]

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` under ``key``, replacing any older one."""
        with self._lock:
            self._data[key] = dict(entry)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every entry, in key order."""
        return self.select(EntryFilter())

    def queries(self, limit: int, *, model: str | None = None, base_url: str | None = None
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` entries, those of ``model`` at ``base_url`` first."""
        def first(item: tuple[str, dict[str, Any]]) -> bool:
            query = item[1].get("query") or {}
            return not (query.get("model") == model and item[1].get("base_url") == base_url)

        with self._lock:
            snapshot = sorted(self._data.items())
        return iter(sorted(snapshot, key=first)[:limit])

    def describe_miss(self) -> str:
        """Nothing to add: the store lives in memory."""
        return ""

    def select(self, where: EntryFilter) -> Iterator[tuple[str, dict[str, Any]]]:
        """Entries that pass ``where``, in key order."""
        with self._lock:
            snapshot = sorted(self._data.items())
        return iter([(k, e) for k, e in snapshot if where.matches(k, e)])

    def delete(self, where: EntryFilter) -> int:
        """Delete the entries that pass ``where``; return how many."""
        with self._lock:
            gone = [k for k, e in self._data.items() if where.matches(k, e)]
            for k in gone:
                del self._data[k]
                self._hits.pop(k, None)
        return len(gone)

    def note_hit(self, key: str) -> None:
        """Count a hit on ``key``."""
        with self._lock:
            self._hits[key] = self._hits.get(key, 0) + 1

    def note_miss(self) -> None:
        """Count a lookup that found nothing."""
        with self._lock:
            self._misses += 1

    def stats(self) -> dict[str, Any]:
        """Entries, hits, misses, hit rate and dollars saved (see ``SQLiteStore.stats``)."""
        with self._lock:
            hits = sum(self._hits.values())
            saved = sum(n * float(self._data[k].get("cost_usd") or 0.0) for k, n in self._hits.items()
                        if k in self._data)
            lookups = hits + self._misses
            return {"entries": len(self._data), "hits": hits, "misses": self._misses,
                    "hit_rate": hits / lookups if lookups else None, "saved_usd": round(saved, 8)}

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        """Nothing to release."""
