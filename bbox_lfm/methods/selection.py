"""Which unlabeled texts to ask the teacher about: random samples or active rounds.

Active selection (Sener & Savarese, 2018, for the diversity part) spends a budget in rounds:
round 0 picks a diverse seed set by k-center greedy over frozen text embeddings; each later
round keeps the ``candidates`` x m texts where the current student is least sure (entropy or
margin) and picks m of them for diversity, so the m queries are uncertain and unlike each other
and unlike what is already labelled. ``diversity="kmeans"`` picks the medoids of m k-means
clusters of the shortlist instead (typical texts rather than k-center's outliers), ``"none"``
the m most uncertain; ``explore`` spends that share of every round on uniformly random texts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..errors import check

__all__ = ["DIVERSITIES", "SELECTIONS", "UNCERTAINTIES", "ActiveSelection", "k_center_greedy", "k_means_medoids",
           "normalize_text", "round_sizes", "uncertainty"]

SELECTIONS = ("random", "active")
UNCERTAINTIES = ("entropy", "margin")
DIVERSITIES = ("kcenter", "kmeans", "none")


def normalize_text(text: str) -> str:
    """Lowercase words and digits only: what two texts must share to count as duplicates."""
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def round_sizes(total: int, rounds: int) -> list[int]:
    """``total`` split into at most ``rounds`` near-equal positive parts."""
    rounds = max(1, min(rounds, total))
    base = total // rounds
    return [base + (1 if i < total - base * rounds else 0) for i in range(rounds)]


def uncertainty(proba: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Student uncertainty per row: entropy H(q) = -sum_k q_k log q_k, or 1 - (q_(1) - q_(2))."""
    check(kind in UNCERTAINTIES, "uncertainty", f"one of {UNCERTAINTIES}", kind)
    if kind == "entropy":
        return -(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(axis=1)
    top2 = np.sort(proba, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def k_center_greedy(emb: np.ndarray, candidates: Sequence[int] | np.ndarray, centers: Sequence[int], m: int,
                    rng: np.random.Generator) -> list[int]:
    """Pick ``m`` of ``candidates`` by k-center greedy: repeatedly the one farthest from every
    center chosen so far, i = argmax_j min_c ||e_j - e_c|| (the first at random when there are no
    centers). Returns indices into ``emb``."""
    cand = np.asarray(candidates, dtype=np.int64)
    m = min(m, len(cand))
    if m <= 0:
        return []
    E = emb[cand]
    d = np.full(len(cand), np.inf)
    for start in range(0, len(centers), 2048):  # chunked: pool x labelled distances stay small
        C = emb[np.asarray(centers[start:start + 2048], dtype=np.int64)]
        d = np.minimum(d, np.sqrt(np.maximum(((E[:, None, :] - C[None]) ** 2).sum(-1), 0)).min(1))
    chosen: list[int] = []
    for _ in range(m):
        j = int(rng.integers(len(cand))) if np.isinf(d).all() else int(np.argmax(d))
        chosen.append(j)
        d = np.minimum(d, np.sqrt(((E - E[j]) ** 2).sum(1)))
        d[j] = -1.0
    return [int(cand[j]) for j in chosen]


def k_means_medoids(emb: np.ndarray, candidates: Sequence[int] | np.ndarray, m: int, seed: int) -> list[int]:
    """Pick ``m`` of ``candidates``: cluster them into m groups (k-means) and take the member
    nearest each centroid -- diverse like k-center, but typical texts rather than outliers."""
    from sklearn.cluster import KMeans

    cand = np.asarray(candidates, dtype=np.int64)
    m = min(m, len(cand))
    if m <= 0:
        return []
    if m == len(cand):
        return [int(c) for c in cand]
    E = emb[cand]
    km = KMeans(n_clusters=m, n_init=1, random_state=seed).fit(E)
    d = ((E - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    chosen = []
    for c in range(m):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            chosen.append(int(cand[members[np.argmin(d[members])]]))
    return chosen


class ActiveSelection:
    """The state of active selection over ``emb``: rows ``0..n_known-1`` are already labelled
    (they count as centers), the rest form the pool. `pick` chooses one round's rows."""

    def __init__(self, emb: np.ndarray, n_known: int, *, uncertainty: str, candidates: int, diversity: str,
                 explore: float, rng: np.random.Generator) -> None:
        self.emb = emb
        self.labelled = list(range(n_known))
        self.unlabelled = np.arange(n_known, len(emb))
        self.kind = uncertainty
        self.candidates = candidates
        self.diversity = diversity
        self.explore = explore
        self.rng = rng

    def pick(self, m: int, proba: np.ndarray | None) -> list[int]:
        """``m`` rows of the pool to label next, moved to the labelled side. ``proba``: the
        student's class probabilities on `unlabelled`, in order; None picks a diverse seed set
        (nothing to be uncertain about yet)."""
        if proba is None:
            pick = (self._diverse(self.unlabelled, m) if self.diversity != "none" else
                    [int(i) for i in self.rng.choice(self.unlabelled, size=min(m, len(self.unlabelled)),
                                                      replace=False)])
        else:
            u = uncertainty(proba, self.kind)
            n_random = round(self.explore * m)
            short = self.unlabelled[np.argsort(-u, kind="stable")[:self.candidates * (m - n_random)]]
            pick = self._diverse(short, m - n_random)
            if n_random:
                rest = np.setdiff1d(self.unlabelled, pick)
                pick += [int(i) for i in self.rng.choice(rest, size=min(n_random, len(rest)), replace=False)]
        self.labelled += pick
        self.unlabelled = np.setdiff1d(self.unlabelled, pick)
        return pick

    def _diverse(self, shortlist: np.ndarray, m: int) -> list[int]:
        """m of the shortlist: k-center greedy, k-means medoids, or simply the m most uncertain."""
        if m <= 0:
            return []
        if self.diversity == "kcenter":
            return k_center_greedy(self.emb, shortlist, self.labelled, m, self.rng)
        if self.diversity == "kmeans":
            return k_means_medoids(self.emb, shortlist, m, int(self.rng.integers(2**31)))
        return [int(i) for i in shortlist[:m]]
