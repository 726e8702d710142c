"""A corrupt or foreign cache is reported by name and left untouched; a full or read-only disk
gives a clear error, and no answer is lost silently."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bbox_lfm import Client, MockAdapter, Query
from bbox_lfm.errors import CacheCorrupt, CacheError
from bbox_lfm.stores import SQLiteStore


def _answer(q: Query) -> dict:
    return {"model": "m", "choices": [{"index": 0, "text": " " + q.prompt[0], "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def _client(cache: Path) -> Client:
    return Client("http://mock/v1", adapter=MockAdapter(_answer), provider="generic", model="m", cache=cache)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos VALUES (1, 'holiday.jpg')")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()


def _damaged(path: Path) -> None:
    store = SQLiteStore(path)
    for i in range(200):
        store.put(str(i), {"query": {}, "response": {"text": "x" * 100}})
    store.close()
    data = bytearray(path.read_bytes())
    # the schema page overwritten after its 100-byte header; damage deeper in the file is found
    # only when that page is read (a full check at every opening would read gigabytes)
    data[100:4096] = b"\xff" * 3996
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make,says", [
    (lambda p: p.write_bytes(b"%PDF-1.7 not a cache at all\n" * 100), "not an SQLite file"),
    (lambda p: p.write_text('{"key": "value"}\n'), "not an SQLite file"),
    (_foreign, "SQLite file of something else"),
    (_newer, "newer bbox-lfm"),
    (_damaged, "damaged"),
], ids=["pdf", "json", "foreign-sqlite", "newer-schema", "damaged-page"])
def test_a_bad_cache_is_named_and_left_untouched(tmp_path: Path, make, says: str) -> None:
    path = tmp_path / "cache.sqlite"
    make(path)
    before = _snapshot(tmp_path)
    with pytest.raises(CacheCorrupt) as info, _client(path) as client:
        client.send(Query(prompt="hello", max_tokens=1))
        SQLiteStore(path).stats()
    assert str(path) in str(info.value) and says in str(info.value), str(info.value)
    assert _snapshot(tmp_path) == before  # not modified, not replaced, no side files left


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from bbox_lfm import Client, MockAdapter, Query
    from bbox_lfm.errors import CacheError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) like a full disk
    cache = sys.argv[1]
    answered = []
    def provider(q):
        answered.append(q.prompt[0])
        return {"model": "m", "choices": [{"index": 0, "text": "x" * 2000, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    client = Client("http://mock/v1", adapter=MockAdapter(provider), provider="generic", model="m", cache=cache)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    try:
        for i in range(10_000):
            client.send(Query(prompt=f"q{i}", max_tokens=1))
    except CacheError as exc:
        print(len(answered), file=sys.stdout)
        print(exc, file=sys.stderr)
        sys.exit(3)
""")


def test_a_full_disk_stops_the_run_with_a_clear_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(cache)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 3, out.stderr  # a CacheError, not a crash, not a run that went on uncached
    assert str(cache) in out.stderr and "disk" in out.stderr and "was not stored" in out.stderr, out.stderr
    answered = int(out.stdout.split()[0])
    # every answer but the one in hand when the disk filled is in the cache, readable
    store = SQLiteStore(cache)
    assert len(store) == answered - 1 > 0
    store.close()


@pytest.fixture()
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A cache with two answers, then made read-only even for root (chattr +i)."""
    path = tmp_path / "ro" / "c.sqlite"
    with _client(path) as client:
        client.send(Query(prompt="a", max_tokens=1))
        client.send(Query(prompt="b", max_tokens=1))
    files = [path.parent, *path.parent.iterdir()]
    done = subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr!r}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], check=False)


def test_a_read_only_cache_is_a_clear_error(immutable: Path) -> None:
    before = _snapshot(immutable.parent)
    with pytest.raises(CacheError) as info, _client(immutable) as client:
        client.send(Query(prompt="c", max_tokens=1))
    assert not isinstance(info.value, CacheCorrupt), info.value  # the file is fine; the disk is read-only
    assert str(immutable) in str(info.value) and "read-only" in str(info.value), info.value
    assert _snapshot(immutable.parent) == before
