"""Which cache entries a command acts on: ``bbox-lfm cache export --filter`` and ``prune``.

A filter is a conjunction of terms, each ``field=value`` (equal; for ``key`` a prefix) or
``field~text`` (contains). Fields: ``model``, ``endpoint``, ``base_url``, ``key``, ``prompt``
(the prompts or chat messages). Age limits come from ``--older-than`` / ``--newer-than``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import check

__all__ = ["FIELDS", "EntryFilter", "parse_filter"]

FIELDS = ("model", "endpoint", "base_url", "key", "prompt")
_TERM = re.compile(r"^(?P<field>[a-z_]+)(?P<op>=|~)(?P<value>.*)$", re.DOTALL)


@dataclass(frozen=True)
class EntryFilter:
    """Terms ``(field, op, value)`` plus optional creation-time bounds (Unix seconds)."""

    terms: tuple[tuple[str, str, str], ...] = ()
    created_before: float | None = None
    created_after: float | None = None

    def matches(self, key: str, entry: Mapping[str, Any]) -> bool:
        """True when the entry stored under ``key`` passes every term."""
        created = float(entry.get("created_at", 0.0))
        if self.created_before is not None and not created < self.created_before:
            return False
        if self.created_after is not None and not created >= self.created_after:
            return False
        for name, op, value in self.terms:
            got = _field_text(name, key, entry)
            if name == "key" and op == "=":
                if not got.startswith(value):
                    return False
            elif (op == "=" and got != value) or (op == "~" and value not in got):
                return False
        return True

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause over the SQLite store's columns, with its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.created_before is not None:
            clauses.append("created_at < ?")
            params.append(self.created_before)
        if self.created_after is not None:
            clauses.append("created_at >= ?")
            params.append(self.created_after)
        for name, op, value in self.terms:
            column = {"prompt": "json_extract(value, '$.query')"}.get(name, name)
            if name == "key" and op == "=":
                clauses.append("substr(key, 1, ?) = ?")
                params += [len(value), value]
            elif op == "=":
                clauses.append(f"{column} = ?")
                params.append(value)
            else:
                clauses.append(f"instr({column}, ?) > 0")
                params.append(value if name != "prompt" else _json_fragment(value))
        return (" AND ".join(clauses) or "1"), params


def _json_fragment(text: str) -> str:
    """``text`` as it appears inside a JSON string (quotes and escapes), for substring search."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _field_text(name: str, key: str, entry: Mapping[str, Any]) -> str:
    query = entry.get("query") or {}
    if name == "key":
        return key
    if name == "base_url":
        return str(entry.get("base_url", ""))
    if name == "prompt":
        return json.dumps({"messages": query.get("messages"), "prompt": query.get("prompt")},
                          ensure_ascii=False, sort_keys=True)
    return str(query.get(name, ""))


def parse_filter(terms: Sequence[str] = (), *, older_than_s: float | None = None,
                 newer_than_s: float | None = None, now: float) -> EntryFilter:
    """An :class:`EntryFilter` from command-line terms and ages in seconds before ``now``."""
    parsed = []
    for term in terms:
        m = _TERM.match(term)
        check(m is not None and m["field"] in FIELDS, "--filter",
              f"FIELD=VALUE or FIELD~TEXT with FIELD one of {FIELDS}", term)
        assert m is not None
        parsed.append((m["field"], m["op"], m["value"]))
    for name, value in (("--older-than", older_than_s), ("--newer-than", newer_than_s)):
        check(value is None or value >= 0, name, "a number of days >= 0", value)
    return EntryFilter(terms=tuple(parsed),
                       created_before=None if older_than_s is None else now - older_than_s,
                       created_after=None if newer_than_s is None else now - newer_than_s)
