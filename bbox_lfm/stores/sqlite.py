"""The default cache store: one SQLite file in WAL mode, values as JSON (never pickle).

Safe for many threads and processes at once: each thread has its own connection, WAL lets
readers run beside one writer, and writers wait (``busy_timeout``) rather than fail. Every
``put`` is its own committed transaction, so a process killed at any moment (SIGKILL) loses no
answer it had stored; ``synchronous=NORMAL`` keeps that guarantee for process crashes (only a
power cut can drop the last commits).

A file that is not SQLite, or SQLite that is not a bbox-lfm cache, raises
:class:`~bbox_lfm.errors.CacheCorrupt` and is never modified or replaced.

Hit statistics (hits per entry, misses) are buffered in memory and written at most every
``flush_every`` events or ``flush_s`` seconds, at :meth:`SQLiteStore.close` and at exit, so a
cache hit costs one indexed read and no write. A SIGKILL can lose the last buffered counts,
never an entry.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import CacheCorrupt, CacheError
from .filters import EntryFilter

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "default_cache_path"]

SCHEMA_VERSION = 3
_APP_ID = 0x62626F78  # "bbox": marks the file as ours
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_MS = 60_000
# SQLite's codes for a disk that is full, read-only or failing (not a damaged file)
_DISK_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")

_CREATE = (
    ("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, response TEXT NOT NULL,"
     " created_at REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0, last_hit_at REAL,"
     " cost_usd REAL NOT NULL DEFAULT 0, model TEXT, endpoint TEXT, base_url TEXT)"),
    "CREATE INDEX entries_created ON entries (created_at)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
# schema 1 (the first cut) had key, value, created_at, hits
_MIGRATE_1 = (
    "ALTER TABLE entries ADD COLUMN last_hit_at REAL",
    "ALTER TABLE entries ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0",
    "ALTER TABLE entries ADD COLUMN model TEXT",
    "ALTER TABLE entries ADD COLUMN endpoint TEXT",
    "ALTER TABLE entries ADD COLUMN base_url TEXT",
    ("UPDATE entries SET cost_usd = coalesce(json_extract(value, '$.cost_usd'), 0),"
     " model = json_extract(value, '$.query.model'), endpoint = json_extract(value, '$.query.endpoint'),"
     " base_url = json_extract(value, '$.base_url')"),
    "CREATE INDEX IF NOT EXISTS entries_created ON entries (created_at)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
# schema 3 keeps the response in a column of its own, so that a hit parses only the response
_MIGRATE_2 = (
    "ALTER TABLE entries ADD COLUMN response TEXT NOT NULL DEFAULT 'null'",
    "UPDATE entries SET response = coalesce(json_extract(value, '$.response'), 'null'), value = json_remove(value, '$.response')",
)
_READ_HEADER = ("SELECT (SELECT application_id FROM pragma_application_id()),"
                " (SELECT user_version FROM pragma_user_version()),"
                " (SELECT json_group_array(name) FROM sqlite_master WHERE type='table')")
_PUT = ("INSERT INTO entries (key, value, response, created_at, cost_usd, model, endpoint, base_url)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value,"
        " response=excluded.response,"
        " created_at=excluded.created_at, cost_usd=excluded.cost_usd, model=excluded.model,"
        " endpoint=excluded.endpoint, base_url=excluded.base_url")


def default_cache_path() -> Path:
    """``$BBOX_LFM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bbox_lfm``, else ``~/.cache/bbox_lfm``; file cache.sqlite."""
    d = os.environ.get("BBOX_LFM_CACHE_DIR")
    if d:
        return Path(d) / "cache.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "bbox_lfm" / "cache.sqlite"


def _flush_at_exit(ref: weakref.ref[SQLiteStore]) -> None:
    store = ref()
    if store is not None:
        store.flush_stats()


def _is_busy(exc: sqlite3.Error) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg



@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock at once, so no other writer slips in between a read and the
    write that depends on it), COMMIT at the end of the block, ROLLBACK if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

class SQLiteStore:
    """Key -> JSON entry, safe for many threads and processes at once."""

    def __init__(self, path: str | os.PathLike[str], *, flush_every: int = 1024, flush_s: float = 2.0):
        self.path = Path(path)
        self.flush_every = flush_every
        self.flush_s = flush_s
        self._check_header()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pending_hits: dict[str, int] = {}
        self._pending_misses = 0
        self._pending_n = 0
        self._last_flush = time.monotonic()
        self._closed = False
        self._init()
        # a weak reference: the store may be collected before exit, and then has nothing to flush
        self._atexit = functools.partial(_flush_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    # -- opening --------------------------------------------------------------------------------

    def _check_header(self) -> None:
        """Refuse a file that is not SQLite before SQLite (or anything else) touches it."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CacheCorrupt(f"{self.path} cannot be read as a cache ({exc}); it was left untouched") from exc
        if head and head != _SQLITE_MAGIC:
            raise CacheCorrupt(f"{self.path} is not a bbox-lfm cache (not an SQLite file); it was left untouched."
                               " Move it away or point BBOX_LFM_CACHE_DIR elsewhere.")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=_BUSY_MS / 1000, isolation_level=None,
                                   check_same_thread=False, cached_statements=64)
            conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _init(self) -> None:
        side = [Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
        had = [p.exists() for p in side]
        try:
            self._create_or_migrate()
        except BaseException:
            # close what was opened, so that a refused file is left as it was, with no side files
            self._closed = True
            for conn in self._conns:
                conn.close()
            self._conns = []
            # SQLite leaves the (empty) WAL and its index behind when it cannot read the schema;
            # remove them only if this store created them and the WAL holds nothing
            wal, shm = side
            if not any(had) and (not wal.exists() or wal.stat().st_size == 0):
                wal.unlink(missing_ok=True)
                shm.unlink(missing_ok=True)
            raise

    def _create_or_migrate(self) -> None:
        try:
            conn = self._conn()
            if self._check_ours(conn) == SCHEMA_VERSION:
                self._set_wal(conn)  # a no-op on our files, which are WAL from their creation
                return  # nothing to write: an existing cache is not touched by opening it
            self._set_wal(conn)
            with _write_transaction(conn):
                # re-read inside the write lock: another process may have created it meanwhile
                version = self._check_ours(conn)
                if version == 0:
                    conn.execute(f"PRAGMA application_id={_APP_ID}")
                    for stmt in _CREATE:
                        conn.execute(stmt)
                if version == 1:
                    for stmt in _MIGRATE_1:
                        conn.execute(stmt)
                if version in (1, 2):
                    for stmt in _MIGRATE_2:
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "opened") from exc

    def _check_ours(self, conn: sqlite3.Connection) -> int:
        """The schema version of our file (0 for an empty one); CacheCorrupt for anything else."""
        # One statement, so one read transaction: read in several, another process's creation
        # of the file can commit between them (an id of 0 read before it, its tables after).
        app_id, version, names = conn.execute(_READ_HEADER).fetchone()
        tables = set(json.loads(names))
        if not tables and app_id == 0:
            return 0
        if app_id != _APP_ID or "entries" not in tables:
            raise CacheCorrupt(f"{self.path} is not a bbox-lfm cache (an SQLite file of something else);"
                               " it was left untouched")
        if version > SCHEMA_VERSION:
            raise CacheCorrupt(f"{self.path} was written by a newer bbox-lfm (cache schema {version}, this one"
                               f" reads up to {SCHEMA_VERSION}); it was left untouched")
        return int(version)

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite does not always call
        # the busy handler for it, so several processes opening one new cache retry here.
        deadline = time.monotonic() + _BUSY_MS / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _translate(self, exc: sqlite3.Error, doing: str, *, answer: bool = False) -> CacheError:
        if _is_busy(exc):
            return CacheError(f"{self.path} stayed locked by another process for {_BUSY_MS // 1000} s ({exc})")
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(_DISK_ERRORS):
            # the file is fine, the disk is not: say so, and that the answer in hand was not kept
            why = "the disk is full" if name == "SQLITE_FULL" else (
                "the file or its folder is read-only" if name.startswith(("SQLITE_READONLY", "SQLITE_PERM",
                                                                          "SQLITE_CANTOPEN"))
                else "the disk refused the write")
            kept = " The answer just received was not stored." if answer else ""
            return CacheError(f"{self.path} could not be {doing}: {why} ({exc}).{kept} The run stops rather than"
                              " send queries whose answers cannot be kept. Free space or make it writable (or use"
                              " another --cache / BBOX_LFM_CACHE_DIR), then rerun: stored answers are reused.")
        return CacheCorrupt(f"{self.path} could not be {doing}: it is damaged or not a bbox-lfm cache ({exc});"
                            " it was left untouched")

    # -- the store interface ----------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry or None."""
        try:
            row = self._conn().execute("SELECT value, response FROM entries WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "read") from exc
        if row is None:
            return None
        entry: dict[str, Any] = self._loads(key, row[0])
        entry["response"] = self._loads(key, row[1])
        return entry

    def get_response(self, key: str) -> dict[str, Any] | None:
        """Only the stored response (JSON) of ``key``, or None: what a cache hit needs."""
        try:
            row = self._conn().execute("SELECT response FROM entries WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "read") from exc
        return None if row is None else self._loads(key, row[0])

    def _loads(self, key: str, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CacheCorrupt(f"{self.path}: the entry {key[:16]} is not valid JSON ({exc})") from exc

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` (committed before returning: a crash loses nothing already answered).

        Replacing an entry keeps its hit count.
        """
        rest = {k: v for k, v in entry.items() if k != "response"}
        value = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        response = json.dumps(entry.get("response"), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        query = entry.get("query") or {}
        row = (key, value, response, float(entry.get("created_at", 0.0)), float(entry.get("cost_usd") or 0.0),
               query.get("model"), query.get("endpoint"), entry.get("base_url"))
        try:
            self._conn().execute(_PUT, row)
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "written", answer=True) from exc

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every entry in key order."""
        return self.select(EntryFilter())

    def queries(self, limit: int, *, model: str | None = None, base_url: str | None = None
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` entries without their responses, those of ``model`` at ``base_url`` first
        (what a replay miss compares the asked query with; responses are the bulk of a cache)."""
        cur = self._conn().execute(
            "SELECT key, value FROM entries ORDER BY (model IS ? AND base_url IS ?) DESC, key LIMIT ?",
            (model, base_url, limit))
        for key, value in cur:
            yield key, json.loads(value)

    def describe_miss(self) -> str:
        """Nothing to add: the key names the query, the message names the file."""
        return ""

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        """Write buffered statistics and close every connection this store opened."""
        if self._closed:
            return
        self.flush_stats()
        self._closed = True
        atexit.unregister(self._atexit)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # -- statistics -----------------------------------------------------------------------------

    def note_hit(self, key: str) -> None:
        """Count a hit on ``key`` (buffered)."""
        with self._lock:
            self._pending_hits[key] = self._pending_hits.get(key, 0) + 1
            self._pending_n += 1
            due = self._flush_due()
        if due:
            self.flush_stats()

    def note_miss(self) -> None:
        """Count a lookup that found nothing (buffered)."""
        with self._lock:
            self._pending_misses += 1
            self._pending_n += 1
            due = self._flush_due()
        if due:
            self.flush_stats()

    def _flush_due(self) -> bool:
        return self._pending_n >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_s

    def flush_stats(self) -> None:
        """Write the buffered hit and miss counts (one short transaction)."""
        with self._lock:
            hits, self._pending_hits = self._pending_hits, {}
            misses, self._pending_misses = self._pending_misses, 0
            self._pending_n = 0
            self._last_flush = time.monotonic()
        if (not hits and not misses) or self._closed:
            return
        now = time.time()
        try:
            conn = self._conn()
            with _write_transaction(conn):
                conn.executemany("UPDATE entries SET hits = hits + ?, last_hit_at = ? WHERE key = ?",
                                 [(n, now, k) for k, n in hits.items()])
                if misses:
                    conn.execute("INSERT INTO counters (name, value) VALUES ('misses', ?)"
                                 " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (misses,))
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "written") from exc

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk, hits, misses, hit rate, dollars the hits saved, and more."""
        self.flush_stats()
        conn = self._conn()
        n, hits, saved, spent, oldest, newest, hit_entries = conn.execute(
            "SELECT COUNT(*), coalesce(SUM(hits), 0), coalesce(SUM(hits * cost_usd), 0), coalesce(SUM(cost_usd), 0),"
            " MIN(created_at), MAX(created_at), coalesce(SUM(hits > 0), 0) FROM entries").fetchone()
        row = conn.execute("SELECT value FROM counters WHERE name='misses'").fetchone()
        misses = int(row[0]) if row else 0
        models = dict(conn.execute("SELECT coalesce(model, ''), COUNT(*) FROM entries GROUP BY model ORDER BY model"))
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                   if p.exists())
        lookups = int(hits) + misses
        return {"path": str(self.path), "entries": int(n), "size_bytes": size, "hits": int(hits),
                "misses": misses, "hit_rate": (int(hits) / lookups) if lookups else None,
                "entries_hit": int(hit_entries), "saved_usd": round(float(saved), 8),
                "stored_cost_usd": round(float(spent), 8), "oldest": oldest, "newest": newest, "models": models,
                "schema": SCHEMA_VERSION}

    # -- selection --------------------------------------------------------------------------------

    def select(self, where: EntryFilter) -> Iterator[tuple[str, dict[str, Any]]]:
        """Entries that pass ``where``, in key order."""
        clause, params = where.sql()
        cur = self._conn().execute(f"SELECT key, value, response FROM entries WHERE {clause} ORDER BY key", params)
        for key, value, response in cur:
            yield key, {**json.loads(value), "response": json.loads(response)}

    def delete(self, where: EntryFilter, *, vacuum: bool = True) -> int:
        """Delete the entries that pass ``where``; return how many. ``vacuum`` gives the space back."""
        self.flush_stats()
        clause, params = where.sql()
        conn = self._conn()
        try:
            n = conn.execute(f"DELETE FROM entries WHERE {clause}", params).rowcount
            if n and vacuum:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "written") from exc
        return int(n)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
