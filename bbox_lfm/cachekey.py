"""Cache keys: sha256 of the canonical JSON of a query plus the provider's base URL.

Canonical = sorted keys, no whitespace, UTF-8, NaN refused; Python writes floats in their
shortest exact round-trip form and tensors travel as base64 strings, so equal queries give equal
bytes in every process, whatever ``PYTHONHASHSEED`` is. Credentials and headers are not part of
a :class:`~bbox_lfm.types.Query`, so they cannot enter a key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .types import Query

__all__ = ["cache_key", "canonical_json"]


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(query: Query, base_url: str) -> str:
    """Hex sha256 naming the answer to ``query`` at ``base_url`` (model is inside the query)."""
    payload = canonical_json({"base_url": base_url.rstrip("/"), "query": query.to_json()})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
