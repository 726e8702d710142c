"""Candidate vocabularies for discrete prompts: frequent, high-PMI n-grams of the training text.

BDPL (Diao et al., TMLR 2023) restricts each prompt position to N candidates mined from the
task's own text, so the search space is small and on-topic. The miner works on strings only
(no tokenizer), so it serves any provider. It follows the authors' ``pmi_ngram.py``:

1. Split each text into words (whitespace, lower-cased); punctuation ends a segment, so no
   pair spans it: a token with no letter or digit, and punctuation attached to a word
   ("big." ends a segment after "big", "(great" starts one before "great").
2. Count words and adjacent word pairs; keep those seen more than ``min_count`` times.
3. A pair (a, b) is *strong* when log PMI = log(T * c(a, b) / (c(a) * c(b))) >= ``min_pmi``,
   T being the number of pairs.
4. Merge runs of strong pairs into n-grams; an n-gram of more than ``max_n`` words is dropped.
5. Recount every kept n-gram wherever it occurs; keep those seen more than ``min_count`` times,
   most frequent first (ties: alphabetical, so the list is deterministic).

Defaults are the paper's: count > 5, log PMI >= 1, up to 5 words.

**Tiny few-shot text.** A 16-shot training set has a few hundred words: hardly any pair occurs
more than five times, so step 5 leaves a few dozen n-grams at most (mostly function words).
The list is then topped up with the remaining words in order of frequency (ties: first
appearance) until it has ``size`` entries. If the whole text has fewer distinct words than
``size``, the list is shorter; a caller that needs exactly ``size`` must check its length.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import check

__all__ = ["candidate_vocabulary", "load_candidates", "pmi_ngrams"]

_HAS_WORD_CHAR = re.compile(r"[^\W_]")
_LEAD_PUNCT = re.compile(r"^[^\w']+")
_TRAIL_PUNCT = re.compile(r"[^\w]+$")


def _segments(text: str) -> list[list[str]]:
    """Lower-cased word runs of ``text``, split wherever punctuation stands (see step 1)."""
    out: list[list[str]] = []
    run: list[str] = []

    def end() -> None:
        nonlocal run
        if run:
            out.append(run)
        run = []

    for raw in text.lower().split():
        lead, trail = _LEAD_PUNCT.search(raw), _TRAIL_PUNCT.search(raw)
        word = raw[lead.end() if lead else 0:trail.start() if trail else len(raw)]
        if not _HAS_WORD_CHAR.search(word):
            end()
            continue
        if lead:
            end()
        run.append(word)
        if trail:
            end()
    end()
    return out


def pmi_ngrams(texts: Iterable[str], *, min_count: int = 5, min_pmi: float = 1.0,
               max_n: int = 5) -> list[tuple[str, int]]:
    """Frequent, high-PMI n-grams of ``texts`` with their counts, most frequent first.

    Steps 1-5 of the module docstring; no top-up (see :func:`candidate_vocabulary`).
    """
    check(min_count >= 0, "min_count", ">= 0", min_count)
    check(max_n >= 1, "max_n", ">= 1", max_n)
    segments = [seg for t in texts for seg in _segments(t)]

    # step 2: unigram and adjacent-pair counts, T = number of pairs
    words: Counter[str] = Counter(w for seg in segments for w in seg)
    pairs: Counter[tuple[str, str]] = Counter(p for seg in segments for p in itertools.pairwise(seg))
    total = sum(pairs.values())
    words = Counter({w: c for w, c in words.items() if c > min_count})

    # step 3: strong pairs, log PMI = log(T c(a,b) / (c(a) c(b))) >= min_pmi
    strong = {(a, b) for (a, b), c in pairs.items()
              if c > min_count and a in words and b in words
              and math.log(total * c / (words[a] * words[b])) >= min_pmi}

    # step 4: merge runs joined by strong pairs
    merged: Counter[tuple[str, ...]] = Counter()
    for seg in segments:
        gram = [seg[0]]
        for a, b in itertools.pairwise(seg):
            if (a, b) in strong:
                gram.append(b)
            else:
                merged[tuple(gram)] += 1
                gram = [b]
        merged[tuple(gram)] += 1
    kept = {g for g, c in merged.items() if c > min_count and len(g) <= max_n}

    # step 5: recount each kept n-gram wherever it occurs
    recount: Counter[tuple[str, ...]] = Counter()
    for seg in segments:
        for i in range(len(seg)):
            for n in range(1, max_n + 1):
                ngram = tuple(seg[i:i + n])
                if len(ngram) == n and ngram in kept:
                    recount[ngram] += 1
    found = [(" ".join(g), c) for g, c in recount.items() if c > min_count]
    found.sort(key=lambda gc: (-gc[1], gc[0]))
    return found


def candidate_vocabulary(texts: Sequence[str], size: int = 200, *, min_count: int = 5, min_pmi: float = 1.0,
                         max_n: int = 5) -> list[str]:
    """Up to ``size`` prompt candidates from ``texts``: PMI n-grams, then frequent words.

    See the module docstring for the top-up on tiny text; the result has no duplicates.
    """
    check(size >= 1, "size", ">= 1", size)
    texts = list(texts)
    out = [g for g, _ in pmi_ngrams(texts, min_count=min_count, min_pmi=min_pmi, max_n=max_n)][:size]
    if len(out) < size:
        seen = set(out)
        counts: Counter[str] = Counter()
        first: dict[str, int] = {}
        for seg in (s for t in texts for s in _segments(t)):
            for w in seg:
                counts[w] += 1
                first.setdefault(w, len(first))
        for w in sorted(counts, key=lambda w: (-counts[w], first[w])):
            if len(out) == size:
                break
            if w not in seen:
                out.append(w)
                seen.add(w)
    return out


def load_candidates(source: str | Path | Sequence[str]) -> list[str]:
    """A user-supplied candidate list: a sequence of strings, or a text file with one per line.

    Blank lines and surrounding whitespace are dropped, duplicates removed (first kept).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        check(path.is_file(), "candidates", "a list of strings or a path to a text file", str(source))
        items: Sequence[str] = path.read_text(encoding="utf-8").splitlines()
    else:
        items = source
    check(all(isinstance(c, str) for c in items), "candidates", "strings", list(items)[:5])
    out = list(dict.fromkeys(c.strip() for c in items if c.strip()))
    check(len(out) >= 2, "candidates", "at least 2 distinct non-empty strings", out)
    return out
