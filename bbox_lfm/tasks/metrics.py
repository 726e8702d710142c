"""Accuracy and macro-F1, and the :class:`Metrics` an evaluation returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Metrics", "accuracy", "macro_f1", "metrics_from_predictions"]


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of predictions equal to the labels (0.0 for no examples)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if len(t) else 0.0


def macro_f1(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_labels: int) -> float:
    """Unweighted mean over all ``n_labels`` classes of F1 = 2 TP / (2 TP + FP + FN); a class with
    no true and no predicted examples counts as 0 (scikit-learn's ``zero_division=0``)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if not len(t):
        return 0.0
    f1s = []
    for c in range(n_labels):
        tp = int(((p == c) & (t == c)).sum())
        denom = 2 * tp + int(((p == c) & (t != c)).sum()) + int(((p != c) & (t == c)).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


@dataclass(frozen=True)
class Metrics:
    """The result of scoring examples: ``predictions[i]`` is the argmax of ``logprobs[i]``;
    ``misses`` counts label words filled with the top-k floor (see :mod:`bbox_lfm.scoring`)."""

    accuracy: float
    f1: float
    n: int
    predictions: np.ndarray = field(repr=False)
    logprobs: np.ndarray = field(repr=False)
    misses: int = 0

    def get(self, metric: str) -> float:
        """``accuracy`` or ``f1`` by name (a task's ``metric``)."""
        return float(getattr(self, metric))

    def to_json(self) -> dict[str, Any]:
        """``{"accuracy", "f1", "n", "misses"}``."""
        return {"accuracy": self.accuracy, "f1": self.f1, "n": self.n, "misses": self.misses}


def metrics_from_predictions(labels: Sequence[int], predictions: Sequence[int] | np.ndarray, n_labels: int, *,
                             logprobs: np.ndarray | None = None, misses: int = 0) -> Metrics:
    """:class:`Metrics` from predicted label indices (``logprobs`` empty when not known)."""
    pred = np.asarray(predictions, dtype=np.int64)
    lp = logprobs if logprobs is not None else np.zeros((len(pred), 0))
    return Metrics(accuracy=accuracy(labels, pred), f1=macro_f1(labels, pred, n_labels), n=len(pred),
                   predictions=pred, logprobs=lp, misses=misses)
