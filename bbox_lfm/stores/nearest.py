"""Why a replayed query missed: the nearest recorded query and what differs from it.

A replay miss after editing a prompt, changing a model or a parameter should say which, not
only that a hash was not found. The stores keep each entry's query, so the miss compares the
asked query field by field with every stored one (up to a limit, the cache may be large) and
reports the differences from the closest: fewest differing fields, then the longest common
prompt prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..types import Query

if TYPE_CHECKING:
    from .base import Store

__all__ = ["nearest_difference"]

SCAN_LIMIT = 5_000  # entries compared at most: a miss in a huge cache stays under a second
_FIRST = ("namespace", "model", "endpoint", "prompt", "messages")  # reported before the rest
_SNIPPET = 30  # characters shown on either side of where two strings part


def _fields(namespace: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """A query as its key sees it (see ``cachekey.key_payload``), ``extra`` spread into ``extra.NAME``."""
    q = dict(query)
    if q.get("temperature") is not None:
        q["temperature"] = float(q["temperature"])
    if q.get("top_p") is not None:
        q["top_p"] = float(q["top_p"])
    if not ((q.get("temperature") or 0) > 0 and (q.get("max_tokens") or 0) > 0):
        q["sample_id"] = None  # greedy: the sample does not matter
    out: dict[str, Any] = {"namespace": namespace}
    for name, value in q.items():
        if name == "extra" and isinstance(value, Mapping):
            out.update({f"extra.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


def _order(name: str) -> tuple[int, str]:
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name)


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted((k for k in a.keys() | b.keys() if a.get(k) != b.get(k)), key=_order)


def _prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _text(fields: Mapping[str, Any]) -> str:
    return json.dumps([fields.get("prompt"), fields.get("messages")], ensure_ascii=False)


def _first_difference(path: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """Walk into lists and objects down to the first place where ``a`` and ``b`` differ."""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(f"{path}[{i}]", x, y)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            if a.get(k) != b.get(k):
                return _first_difference(f"{path}.{k}", a.get(k), b.get(k))
    return path, a, b


def _show(a: Any, b: Any) -> tuple[str, str]:
    if isinstance(a, str) and isinstance(b, str):
        i = _prefix(a, b)
        start = max(0, i - _SNIPPET)

        def cut(s: str) -> str:
            return ("..." if start else "") + s[start:i + _SNIPPET] + ("..." if len(s) > i + _SNIPPET else "")

        return repr(cut(a)), repr(cut(b))
    if isinstance(a, list) and isinstance(b, list):
        return f"{len(a)} items", f"{len(b)} items"

    def short(v: Any) -> str:
        if v is None:
            return "nothing"
        text = json.dumps(v, ensure_ascii=False)
        return text if len(text) <= 2 * _SNIPPET else text[:2 * _SNIPPET] + "..."

    return short(a), short(b)


def nearest_difference(store: Store, query: Query, namespace: str, *, limit: int = SCAN_LIMIT) -> str | None:
    """``"the nearest recorded query differs in prompt[0] (recorded '...', asked '...')"``, or None
    when ``store`` holds no recorded query to compare with."""
    from ..layers.cache import compact

    # the store skips the responses where it can, and looks first where a match is likeliest
    rows: Iterator[tuple[str, Mapping[str, Any]]] = store.queries(limit, model=query.model, base_url=namespace)
    qjson = query.to_json()
    asked = _fields(namespace, {**qjson, "extra": compact(qjson["extra"])})
    asked_text = _text(asked)
    best: tuple[tuple[int, int], list[str], dict[str, Any]] | None = None
    for _, entry in rows:
        stored = entry.get("query")
        if not isinstance(stored, Mapping):
            continue  # a provider fact, not a query
        recorded = _fields(str(entry.get("base_url") or ""), stored)
        diff = _differing(recorded, asked)
        rank = (len(diff), -_prefix(_text(recorded), asked_text))
        if diff and (best is None or rank < best[0]):
            best = (rank, diff, recorded)
    if best is None:
        return None
    _, diff, recorded = best
    parts = []
    for name in diff[:3]:
        where, was, now = _first_difference(name, recorded.get(name), asked.get(name))
        shown_was, shown_now = _show(was, now)
        parts.append(f"{where} (recorded {shown_was}, asked {shown_now})")
    more = f" and {len(diff) - 3} more field(s)" if len(diff) > 3 else ""
    return "the nearest recorded query differs in " + "; ".join(parts) + more
