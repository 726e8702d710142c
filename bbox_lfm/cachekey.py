"""Cache keys: sha256 of the canonical JSON of a query plus the provider's base URL.

Canonical = sorted keys, no whitespace, UTF-8, NaN refused; Python writes floats in their
shortest exact round-trip form and tensors travel as base64 strings, so equal queries give equal
bytes in every process, whatever ``PYTHONHASHSEED`` is. Credentials and headers are not part of
a :class:`~bbox_lfm.types.Query`, so they cannot enter a key.

Two normalisations make equal requests equal keys:

- ``temperature`` and ``top_p`` are floats (``temperature=1`` and ``temperature=1.0`` are one
  request to the provider, so they are one key).
- ``sample_id`` only matters for sampling queries (temperature > 0 and something generated).
  A greedy answer is the same whatever the sample, so a non-sampling query drops it.

The ``sample_id`` rule for sampling queries: an explicit ``sample_id`` is part of the key, so
``Client.generate(..., sample_id=i)`` gives sample i. A sampling query *without* one is numbered
by the cache layer: the k-th identical unlabelled sampling query it sees (counting from 0) is
keyed as if it carried ``sample_id=k`` (see :func:`occurrence_query`). Repeats within a run are
therefore distinct entries, and a rerun of the same program asks for samples 0, 1, 2, ... again
and replays them, which is what resuming a crashed run needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from .types import Query

__all__ = ["cache_key", "canonical_json", "key_payload", "occurrence_query"]


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def key_payload(query: Query, base_url: str) -> dict[str, Any]:
    """What the key hashes: the normalised query and the provider's base URL (or namespace)."""
    q = query.to_json()
    q["temperature"] = float(q["temperature"])
    if q["top_p"] is not None:
        q["top_p"] = float(q["top_p"])
    if not query.sampling:
        q["sample_id"] = None
    return {"base_url": base_url.rstrip("/"), "query": q}


def cache_key(query: Query, base_url: str) -> str:
    """Hex sha256 naming the answer to ``query`` at ``base_url`` (model is inside the query)."""
    payload = canonical_json(key_payload(query, base_url))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def occurrence_query(query: Query, occurrence: int) -> Query:
    """The query an unlabelled sampling query stands for on its ``occurrence``-th repeat (from 0)."""
    return dataclasses.replace(query, sample_id=occurrence)
