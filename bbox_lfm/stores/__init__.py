"""Cache stores: where answers are kept between runs.

Every store has ``get(key)``, ``put(key, entry)``, ``items()``, ``len()`` and ``close()``;
the built-in ones also count hits (``note_hit``, ``note_miss``, ``stats()``) and select or delete
entries by an :class:`EntryFilter`.
"""

from .filters import EntryFilter, parse_filter
from .jsonl import JSONLStore, read_cassette, write_cassette
from .memory import MemoryStore
from .sqlite import SQLiteStore, default_cache_path

__all__ = ["EntryFilter", "JSONLStore", "MemoryStore", "SQLiteStore", "default_cache_path", "parse_filter",
           "read_cassette", "write_cassette"]
