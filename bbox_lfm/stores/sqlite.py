"""The default cache store: one SQLite file in WAL mode, values as JSON (never pickle)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import CacheCorrupt

__all__ = ["SQLiteStore", "default_cache_path"]

SCHEMA_VERSION = 1
_APP_ID = 0x62626F78  # "bbox": marks the file as ours


def default_cache_path() -> Path:
    """``$BBOX_LFM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bbox_lfm``, else ``~/.cache/bbox_lfm``; file cache.sqlite."""
    d = os.environ.get("BBOX_LFM_CACHE_DIR")
    if d:
        return Path(d) / "cache.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "bbox_lfm" / "cache.sqlite"


class SQLiteStore:
    """Key -> JSON entry, safe for many threads and processes at once."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._init()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def _init(self) -> None:
        try:
            conn = self._conn()
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and (app_id != _APP_ID or "entries" not in tables):
                raise CacheCorrupt(f"{self.path} is not a bbox-lfm cache (foreign SQLite file); it was left untouched")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if not tables:
                conn.execute(f"PRAGMA application_id={_APP_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                             " created_at REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0)")
        except sqlite3.DatabaseError as exc:
            raise CacheCorrupt(f"{self.path} is not a readable SQLite cache ({exc}); it was left untouched") from exc

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry or None."""
        try:
            row = self._conn().execute("SELECT value FROM entries WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise CacheCorrupt(f"{self.path} could not be read ({exc})") from exc
        return json.loads(row[0]) if row else None

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` (committed before returning: a crash loses nothing already answered)."""
        value = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            self._conn().execute("INSERT OR REPLACE INTO entries (key, value, created_at) VALUES (?, ?, ?)",
                                 (key, value, float(entry.get("created_at", 0.0))))
        except sqlite3.DatabaseError as exc:
            raise CacheCorrupt(f"{self.path} could not be written ({exc})") from exc

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every entry in key order."""
        for key, value in self._conn().execute("SELECT key, value FROM entries ORDER BY key"):
            yield key, json.loads(value)

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
