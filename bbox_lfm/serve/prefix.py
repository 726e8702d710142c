"""Prefix planning: which rows share leading positions, and the keys/values kept for them.

Rows sharing at least `MIN_SHARED_PREFIX` leading positions (same ids, same soft prompt) have
their common prefix run once and its keys/values reused: the demonstrations of in-context
learning, a soft prompt and a template's head cost one pass instead of one per row.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from .tokenization import Sequence

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_SHARED_PREFIX", "PrefixCache", "plan", "shared_prefix", "soft_key"]

# Shorter common prefixes are not worth a pass of their own plus a copy of keys/values per row.
MIN_SHARED_PREFIX = 24
# Rows x prefix positions of a shared-prefix pass: the prefix's keys/values are copied per row.
MAX_SHARED_POSITIONS = 8192
# How many computed prefixes (keys/values for one row) are kept for later batches and requests.
PREFIX_CACHE_SIZE = 4

KeysValues = list[tuple["torch.Tensor", "torch.Tensor"]]


def soft_key(seq: Sequence) -> bytes:
    """The key of a row's soft prompt (empty without one): rows share a prefix only if equal."""
    return b"" if seq.soft is None else seq.soft.key


def shared_prefix(seqs: list[Sequence]) -> int:
    """How many leading positions all ``seqs`` can share (0 when fewer than the minimum).

    The rows must have the same soft prompt, lying wholly inside the prefix, and every kept
    position must lie after it.
    """
    if len(seqs) < 2:
        return 0
    first = seqs[0]
    key = soft_key(first)
    limit = min(len(s.ids) - s.keep for s in seqs)
    if any(soft_key(s) != key for s in seqs[1:]):
        return 0
    n = 0
    for position in range(limit):
        token = first.ids[position]
        if any(s.ids[position] != token for s in seqs[1:]):
            break
        n = position + 1
    if first.soft is not None and first.soft.start + first.soft.values.shape[0] > n:
        return 0
    return n if n >= MIN_SHARED_PREFIX else 0


def plan(seqs: list[Sequence], max_batch: int) -> list[list[int]]:
    """Cut a merged batch into forward passes: rows sharing a long prefix (same soft prompt,
    same leading ids) go together, sorted by length; the rest by length, ``max_batch`` a pass."""
    order = sorted(range(len(seqs)), key=lambda i: (soft_key(seqs[i]), seqs[i].ids))
    passes: list[list[int]] = []
    rest: list[int] = []
    start = 0
    while start < len(order):
        stop = start + 1
        head = seqs[order[start]].ids[:MIN_SHARED_PREFIX]
        key = soft_key(seqs[order[start]])
        while (stop < len(order) and seqs[order[stop]].ids[:MIN_SHARED_PREFIX] == head
               and soft_key(seqs[order[stop]]) == key):
            stop += 1
        group = order[start:stop]
        shared = shared_prefix([seqs[i] for i in group]) if len(head) == MIN_SHARED_PREFIX else 0
        if shared:
            group.sort(key=lambda i: len(seqs[i].ids))
            rows = max(2, min(max_batch, MAX_SHARED_POSITIONS // shared))
            passes += [group[i : i + rows] for i in range(0, len(group), rows)]
        else:
            rest += group
        start = stop
    rest.sort(key=lambda i: len(seqs[i].ids))
    passes += [rest[i : i + max_batch] for i in range(0, len(rest), max_batch)]
    return passes


class PrefixCache:
    """The last few computed prefixes' keys/values (one row each), least recently used first out."""

    def __init__(self, size: int = PREFIX_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[bytes, tuple[int, ...]], KeysValues] = OrderedDict()
        self.stats = {"shared_passes": 0, "prefix_hits": 0, "prefix_positions_saved": 0}

    def longest(self, seq: Sequence, n: int) -> tuple[int, KeysValues] | None:
        """The longest cached prefix that starts ``seq``'s first ``n`` ids with its soft prompt.

        A shorter one than ``n`` is reused too: one pass of a merged batch may share a few more
        tokens than the batch as a whole, and recomputing the whole prefix for it would cost
        more than running those few per row.
        """
        soft = soft_key(seq)
        head = seq.ids[:n]
        best = max((key for key in self._entries if key[0] == soft and head[:len(key[1])] == key[1]),
                   key=lambda key: len(key[1]), default=None)
        if best is None:
            return None
        self._entries.move_to_end(best)
        self.stats["prefix_hits"] += 1
        return len(best[1]), self._entries[best]

    def put(self, seq: Sequence, n: int, kv: KeysValues) -> None:
        """Keep the keys/values of ``seq``'s first ``n`` positions."""
        self._entries[soft_key(seq), seq.ids[:n]] = kv
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every prefix and zero the counters."""
        self._entries.clear()
        self.stats = dict.fromkeys(self.stats, 0)
