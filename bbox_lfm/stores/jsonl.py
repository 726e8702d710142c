"""Cassettes: cache entries as JSON Lines, for tests and notebooks that replay offline.

One entry a line, ``{"key": ..., "base_url": ..., "query": ..., "response": ..., ...}`` with
sorted keys, lines sorted by key, so that re-recording a cassette gives a readable diff.
Secrets are scrubbed on the way out (:func:`bbox_lfm._secrets.redact`: the given secrets and
anything key-shaped). The stored ``key`` is authoritative: if scrubbing touched a query, the
entry still replays under the key it was recorded with.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .._secrets import redact
from ..errors import CacheCorrupt
from .memory import MemoryStore

__all__ = ["JSONLStore", "read_cassette", "write_cassette"]


def read_cassette(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, entry)`` for every line of the cassette at ``path``."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                key = obj.pop("key")
            except (ValueError, KeyError, AttributeError, TypeError) as exc:
                raise CacheCorrupt(f"{path}:{lineno} is not a cassette entry ({exc}); it was left untouched") from exc
            if not isinstance(key, str) or not isinstance(obj.get("response"), dict):
                raise CacheCorrupt(f"{path}:{lineno} is not a cassette entry (needs a string 'key' and a"
                                   " 'response' object); it was left untouched")
            yield key, obj


def cassette_line(key: str, entry: Mapping[str, Any], secrets: Iterable[str | None] = ()) -> str:
    """One scrubbed, sorted JSON line (no newline)."""
    text = json.dumps({"key": key, **entry}, sort_keys=True, ensure_ascii=False, allow_nan=False,
                      separators=(", ", ": "))
    return redact(text, secrets)


def write_cassette(path: str | os.PathLike[str], entries: Iterable[tuple[str, Mapping[str, Any]]],
                   secrets: Iterable[str | None] = ()) -> int:
    """Write ``entries`` sorted by key, atomically (a reader never sees half a file); return the count."""
    secrets = list(secrets)
    lines = [cassette_line(k, e, secrets) for k, e in sorted(entries, key=lambda kv: kv[0])]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines)


class JSONLStore(MemoryStore):
    """A cassette held in memory: loaded from ``path`` when it exists, written by :meth:`save`.

    ``secrets`` are scrubbed from what :meth:`save` writes (the client's API key, say).
    """

    def __init__(self, path: str | os.PathLike[str], *, secrets: Iterable[str | None] = ()):
        super().__init__()
        self.path = Path(path)
        self.secrets = list(secrets)
        self.existed = self.path.exists()
        if self.existed:
            for key, entry in read_cassette(self.path):
                self._data[key] = entry

    def save(self) -> int:
        """Write every entry to :attr:`path`; return how many."""
        return write_cassette(self.path, self.items(), self.secrets)

    def describe_miss(self) -> str:
        """What a replay miss should tell the user about where answers come from."""
        state = "has no answer for it" if self.existed else "does not exist"
        return f"the cassette {self.path} {state}"

    def __repr__(self) -> str:
        return f"JSONLStore({str(self.path)!r})"
