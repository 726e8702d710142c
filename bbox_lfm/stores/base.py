"""What a cache store is: the `Store` protocol the client and the cache layer accept.

A store keeps entries (``{"query", "response", "base_url", "created_at", "cost_usd", ...}``)
under cache keys. The built-in stores (SQLite, memory, JSONL cassettes) implement all of it; a
store of one's own does too, and ``isinstance(obj, Store)`` tells whether it does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """The interface of a cache store (typing.Protocol: no base class needed)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry under ``key``, or None."""
        ...

    def get_response(self, key: str) -> dict[str, Any] | None:
        """Only the stored response of ``key`` (what a hit needs), or None."""
        ...

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` under ``key``, replacing an older one."""
        ...

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every entry, in key order."""
        ...

    def queries(self, limit: int, *, model: str | None = None, base_url: str | None = None
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` entries, responses left out where that is cheaper, those of ``model`` at
        ``base_url`` first (what a replay miss compares the asked query with)."""
        ...

    def note_hit(self, key: str) -> None:
        """Count a cache hit on ``key``."""
        ...

    def note_miss(self) -> None:
        """Count a miss."""
        ...

    def describe_miss(self) -> str:
        """What a replay miss should add about where answers come from ("" for nothing)."""
        ...

    def close(self) -> None:
        """Release what the store holds open."""
        ...
