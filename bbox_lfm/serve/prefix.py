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

__all__ = ["MIN_SHARED_PREFIX", "PrefixCache", "cut_by_length", "plan", "shared_prefix", "soft_key"]

# Shorter common prefixes are not worth a pass of their own plus a copy of keys/values per row.
MIN_SHARED_PREFIX = 24
# Rows x prefix positions of a shared-prefix pass: the prefix's keys/values are copied per row.
MAX_SHARED_POSITIONS = 8192
# What one more forward pass costs beyond its tokens, in padded positions (a pass over the layers
# has a fixed price in launches and small matrix products); see `cut_by_length`.
PASS_OVERHEAD_POSITIONS = 48
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


def cut_by_length(lengths: list[int], max_rows: int, overhead: int = PASS_OVERHEAD_POSITIONS,
                  min_rows: int = 1) -> list[int]:
    """Where to cut rows sorted by ``lengths`` (ascending) into passes of ``min_rows`` to ``max_rows``.

    A pass costs its rows times its longest row (every row is padded to it) plus ``overhead``;
    the cut with the least total cost is found exactly (dynamic programming over the sorted
    rows). One pass of 32 sentences of 5 to 50 tokens pads to 50 and spends about half its
    positions on padding; a few passes of similar lengths spend almost none. Returns the end
    index of every pass.
    """
    n = len(lengths)
    min_rows = max(1, min(min_rows, n, max_rows))
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_rows), j - min_rows + 1):
            cost = best[i] + (j - i) * lengths[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    if best[n] == float("inf"):  # e.g. 3 rows, 2 to 2 a pass: no cut has every pass in range
        return cut_by_length(lengths, max_rows, overhead)
    ends: list[int] = []
    j = n
    while j > 0:
        ends.append(j)
        j = cut[j]
    return ends[::-1]


def _passes(order: list[int], seqs: list[Sequence], max_rows: int, skip: int, by_length: bool) -> list[list[int]]:
    """``order`` (row indices sorted by length) cut by `cut_by_length` on the lengths past ``skip``
    (rows sharing a prefix, ``skip`` > 0, go at least two a pass, or the pass could not reuse it);
    without ``by_length``, ``max_rows`` a pass whatever their lengths."""
    if not by_length:
        return [order[i:i + max_rows] for i in range(0, len(order), max_rows)]
    ends = cut_by_length([len(seqs[i].ids) - skip for i in order], max_rows, min_rows=2 if skip else 1)
    return [order[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def plan(seqs: list[Sequence], max_batch: int, *, by_length: bool = True) -> list[list[int]]:
    """Cut a merged batch into forward passes: rows sharing a long prefix (same soft prompt,
    same leading ids) go together, sorted by length; the rest by length. ``by_length`` cuts
    each where padding costs more than a pass (`cut_by_length`); ``False`` (how the server cut
    before, kept for `benchmarks/padding.py`) fills passes of the most rows allowed."""
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
            passes += _passes(group, seqs, rows, shared, by_length)
        else:
            rest += group
        start = stop
    rest.sort(key=lambda i: len(seqs[i].ids))
    passes += _passes(rest, seqs, max_batch, 0, by_length)
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
