"""Cassettes: cache entries as JSON Lines, for tests and notebooks that replay offline.

The first line is a header naming what the entries were recorded against::

    {"bbox_lfm_cassette": 1, "recorded_against": {"model": ..., "namespace": ..., "provider": ...}}

(``namespace`` is what identifies the provider in the cache keys: the base URL, or for
bbox-lfm's local server ``bbox-lfm-local:<model id>`` whatever port it ran on; ``base_url`` is
kept only for a non-local provider, without user name, password or query string). No credential
is ever part of it. Then one entry a line, ``{"key": ..., "base_url": ..., "query": ...,
"response": ..., ...}`` with sorted keys, lines sorted by key, so that re-recording a cassette
gives a readable diff. Secrets are scrubbed on the way out (:func:`bbox_lfm._secrets.redact`:
the given secrets and anything key-shaped). The stored ``key`` is authoritative: if scrubbing
touched a query, the entry still replays under the key it was recorded with.

Cassettes written before the header existed still read: :func:`recorded_against` infers the
namespace and model from their entries.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._secrets import redact
from ..errors import CacheCorrupt
from .memory import MemoryStore

__all__ = ["HEADER_KEY", "LOCAL_NAMESPACE_PREFIX", "RECORDED_FIELDS", "JSONLStore", "infer_recorded_against",
           "public_url", "read_cassette", "read_header", "recorded_against", "write_cassette"]

HEADER_KEY = "bbox_lfm_cassette"
FORMAT_VERSION = 1
RECORDED_FIELDS = ("base_url", "namespace", "provider", "model")
LOCAL_NAMESPACE_PREFIX = "bbox-lfm-local:"


def public_url(url: str) -> str:
    """``url`` without user name, password, query string or fragment (where credentials hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _header_of(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, dict) and HEADER_KEY in obj:
        against = obj.get("recorded_against") or {}
        return {k: v for k, v in against.items() if k in RECORDED_FIELDS and isinstance(v, str) and v}
    return None


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CacheCorrupt(f"{path}:{lineno} is not a cassette entry ({exc}); it was left untouched") from exc
            yield lineno, obj


def read_header(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The cassette's ``recorded_against`` settings, or None when it has no header (an old one)."""
    for _, obj in _lines(path):
        return _header_of(obj)
    return None


def read_cassette(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, entry)`` for every entry of the cassette at ``path`` (the header is skipped)."""
    for lineno, obj in _lines(path):
        if _header_of(obj) is not None:
            continue
        key = obj.pop("key", None) if isinstance(obj, dict) else None
        # an answer has a 'response'; a provider fact (model metadata, hidden-state statistics) a 'fact'
        if not isinstance(key, str) or not (isinstance(obj.get("response"), dict) or "fact" in obj):
            raise CacheCorrupt(f"{path}:{lineno} is not a cassette entry (needs a string 'key' and a"
                               " 'response' object); it was left untouched")
        yield key, obj


def infer_recorded_against(entries: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """What entries were recorded against, as far as they tell: the namespace and the model when
    every entry shares one, the provider and base URL where the namespace implies them."""
    namespaces: set[str] = set()
    models: set[str] = set()
    for _, entry in entries:
        if entry.get("base_url"):
            namespaces.add(str(entry["base_url"]))
        query = entry.get("query")
        if isinstance(query, dict) and query.get("model"):
            models.add(str(query["model"]))
    out: dict[str, str] = {}
    if len(models) == 1:
        out["model"] = models.pop()
    if len(namespaces) == 1:
        ns = out["namespace"] = namespaces.pop()
        if ns.startswith(LOCAL_NAMESPACE_PREFIX):
            out["provider"] = "bbox-lfm"
        elif ns.startswith(("http://", "https://")):
            if not _is_loopback(ns):
                out["base_url"] = public_url(ns)
            if "api.openai.com" in ns:
                out["provider"] = "openai"
    return out


def recorded_against(path: str | os.PathLike[str]) -> dict[str, str]:
    """The cassette's header, else (a cassette from before headers) what its entries tell."""
    header = read_header(path)
    return header if header is not None else infer_recorded_against(read_cassette(path))


def cassette_line(key: str, entry: Mapping[str, Any], secrets: Iterable[str | None] = ()) -> str:
    """One scrubbed, sorted JSON line (no newline)."""
    return _dumps({"key": key, **entry}, secrets)


def _dumps(obj: Mapping[str, Any], secrets: Iterable[str | None]) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    return redact(text, secrets)


def header_line(against: Mapping[str, str | None], secrets: Iterable[str | None] = ()) -> str:
    """The header line for settings ``against`` (empty values dropped, the base URL made public
    and left out when it is a loopback address)."""
    clean = {k: v for k, v in against.items() if k in RECORDED_FIELDS and v}
    if clean.get("base_url"):
        # a local server's URL (a random port, often) means nothing on another machine
        clean["base_url"] = public_url(clean["base_url"])
        if _is_loopback(clean["base_url"]):
            del clean["base_url"]
    return _dumps({HEADER_KEY: FORMAT_VERSION, "recorded_against": clean}, secrets)


def write_cassette(path: str | os.PathLike[str], entries: Iterable[tuple[str, Mapping[str, Any]]],
                   secrets: Iterable[str | None] = (), *,
                   recorded: Mapping[str, str | None] | None = None) -> int:
    """Write ``entries`` sorted by key, atomically (a reader never sees half a file); return the count.

    The header names ``recorded`` (base_url, namespace, provider, model); by default, what the
    entries themselves tell (:func:`infer_recorded_against`).
    """
    secrets = list(secrets)
    ordered = sorted(entries, key=lambda kv: kv[0])
    against = dict(recorded) if recorded is not None else infer_recorded_against(ordered)
    lines = [header_line(against, secrets)] + [cassette_line(k, e, secrets) for k, e in ordered]
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
    return len(ordered)


class JSONLStore(MemoryStore):
    """A cassette held in memory: loaded from ``path`` when it exists, written by :meth:`save`.

    ``secrets`` are scrubbed from what :meth:`save` writes (the client's API key, say).
    ``recorded`` (base_url, namespace, provider, model) goes into the header :meth:`save`
    writes; by default the header the file had, else what the entries tell. With
    ``autosave=True`` every new answer is written at once (a recording interrupted at any point
    keeps what it received).
    """

    def __init__(self, path: str | os.PathLike[str], *, secrets: Iterable[str | None] = (),
                 recorded: Mapping[str, str | None] | None = None, autosave: bool = False):
        super().__init__()
        self.path = Path(path)
        self.secrets = list(secrets)
        self.autosave = autosave
        self._save_lock = threading.Lock()
        self.existed = self.path.exists()
        self.recorded: dict[str, str | None] | None = dict(recorded) if recorded is not None else None
        if self.existed:
            for key, entry in read_cassette(self.path):
                self._data[key] = entry
            if self.recorded is None:
                header = read_header(self.path)
                self.recorded = dict(header) if header is not None else None

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` under ``key`` (and write the file, with ``autosave``)."""
        super().put(key, entry)
        if self.autosave:
            self.save()

    def save(self) -> int:
        """Write every entry to :attr:`path`; return how many."""
        with self._save_lock:
            return write_cassette(self.path, self.items(), self.secrets, recorded=self.recorded)

    def describe_miss(self) -> str:
        """What a replay miss should tell the user about where answers come from."""
        state = "has no answer for it" if self.existed else "does not exist"
        return f"the cassette {self.path} {state}"

    def __repr__(self) -> str:
        return f"JSONLStore({str(self.path)!r})"
