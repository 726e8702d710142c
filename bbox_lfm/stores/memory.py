"""An in-process store (tests, benchmarks)."""

from __future__ import annotations

import threading
from typing import Any, Iterator, Mapping

__all__ = ["MemoryStore"]


class MemoryStore:
    """A dict behind a lock, with the same interface as the SQLite store."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry (``query``, ``response``, ...) or None."""
        return self._data.get(key)

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` under ``key``, replacing any older one."""
        with self._lock:
            self._data[key] = dict(entry)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every entry, in key order."""
        with self._lock:
            snapshot = sorted(self._data.items())
        return iter(snapshot)

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        """Nothing to release."""
