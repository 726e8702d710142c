"""Contextual calibration (Zhao et al., ICML 2021): divide out the label bias of a prompt.

A small model often prefers one label word whatever the input (SmolLM2 answers " Business" to
nearly every AG News prompt with demonstrations). Contextual calibration measures that bias on
*content-free* inputs and removes it:

1. fill the prompt with each content-free input ("N/A", "", "[MASK]"; both slots of a pair
   task) and score the label words; renormalise each row over the labels and average the rows:
   p_cf;
2. for an input whose label-word probabilities, renormalised over the labels, are p, predict
   argmax W p with W = diag(p_cf)^-1 (b = 0): each label's probability divided by its
   content-free share.

The content-free prompts carry exactly what the real prompts carry (template, demonstrations,
a discrete prompt, a soft prompt in the request), so each prompt gets its own p_cf. They go
out as queries of their own through the client: cached, counted in whichever budget scores them,
and answered from the cache when the same prompt is calibrated again.

The calibrated scores are returned as log(W p) = log p - log p_cf: their argmax is the
calibrated prediction, and their softmax is W p renormalised, so they serve as logits for a
loss as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .task import Example

__all__ = ["CONTENT_FREE", "apply_calibration", "content_free_examples", "content_free_probs", "label_probs"]

#: the content-free inputs of the paper
CONTENT_FREE = ("N/A", "", "[MASK]")


def content_free_examples(pair: bool = False, inputs: Sequence[str] = CONTENT_FREE) -> list[Example]:
    """One example per content-free input (the same string in both slots of a pair task)."""
    return [Example(text=s, label=0, text_pair=s if pair else None) for s in inputs]


def label_probs(logprobs: np.ndarray) -> np.ndarray:
    """Label-word log-probabilities [n, K] renormalised over the K labels: probabilities [n, K]."""
    S = np.asarray(logprobs, dtype=np.float64)
    S = S - S.max(axis=1, keepdims=True)
    P = np.exp(S)
    return P / P.sum(axis=1, keepdims=True)


def content_free_probs(cf_logprobs: np.ndarray) -> np.ndarray:
    """p_cf [K]: the mean over the content-free rows of their renormalised label probabilities."""
    return label_probs(cf_logprobs).mean(axis=0)


def apply_calibration(logprobs: np.ndarray, cf_logprobs: np.ndarray) -> np.ndarray:
    """log(W p) = log p - log p_cf for every row of ``logprobs`` [n, K] (p renormalised over the
    labels), with p_cf from ``cf_logprobs`` [m, K]."""
    if not len(logprobs):
        return np.asarray(logprobs, dtype=np.float64)
    p_cf = content_free_probs(cf_logprobs)
    with np.errstate(divide="ignore"):  # a label word of probability 0 stays impossible
        return np.log(label_probs(logprobs)) - np.log(p_cf)[None, :]
