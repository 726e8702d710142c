"""Cache stores: where answers are kept between runs.

Every store follows the :class:`Store` protocol (``get``, ``get_response``, ``put``, ``items``,
``queries``, ``note_hit``, ``note_miss``, ``describe_miss``, ``close``), which the client and
the cache layer accept; the built-in ones also report ``stats()`` and select or delete entries
by an :class:`EntryFilter`.
"""

from .base import Store
from .filters import EntryFilter, parse_filter
from .jsonl import JSONLStore, read_cassette, write_cassette
from .memory import MemoryStore
from .sqlite import SQLiteStore, default_cache_path

__all__ = ["EntryFilter", "JSONLStore", "MemoryStore", "SQLiteStore", "Store", "default_cache_path", "parse_filter",
           "read_cassette", "write_cassette"]
