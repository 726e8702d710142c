"""The ``next_token_logprobs`` extension: the next-token distribution at one prompt position.

PromptBoosting screens the whole vocabulary for verbalizer tokens, which needs p(v | prompt) for
every token v at the answer position; a hosted API shows at most the top 20. A completions
request (``max_tokens=0``) may carry::

    "next_token_logprobs": {"position": -1, "top_n": null}      # the full vocabulary
    "next_token_logprobs": {"top_n": 1000}                      # the 1,000 most likely tokens
    "next_token_logprobs": {"ids": [1234, 5678]}                # just these tokens (with their text)

``position`` indexes the prompt's tokens (negative from the end; -1, the default, is the last
one, so the answer is the distribution of the token that follows the prompt). Each choice then
carries ``next_token_logprobs``::

    {"position": 17, "vocab_size": 49152, "n": 49152, "dtype": "float16",
     "logprobs": base64 of little-endian float16, "ids": base64 of little-endian int32 or null,
     "mass": 1.0, "tokens": [texts] (only when ids were asked for)}

With neither ``top_n`` nor ``ids`` (or ``top_n`` >= the vocabulary) the log-probabilities come in
token-id order and ``ids`` is null; with ``top_n`` they are the most likely first; with ``ids``
they follow the request. ``mass`` is the probability the returned tokens hold together, computed
before rounding to float16. Float16 keeps log-probabilities to about 3 significant digits
(|error| <= 0.008 at -16), which is far finer than the screening needs, and makes a full
SmolLM2 distribution 96 KiB before base64.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .engine import Sequence
from .errors import InvalidRequest

if TYPE_CHECKING:
    from .service import Service

__all__ = ["NextTokenRequest", "answer"]

PARAM = "next_token_logprobs"


class NextTokenRequest(BaseModel):
    """The extension's request object (unknown keys are errors, not silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    position: int = -1
    top_n: int | None = None
    ids: list[int] | None = None


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _check(spec: NextTokenRequest, vocab_size: int) -> None:
    if spec.top_n is not None and spec.ids is not None:
        raise InvalidRequest(f"{PARAM} must name top_n or ids, not both", param=PARAM)
    if spec.top_n is not None and spec.top_n < 1:
        raise InvalidRequest(f"{PARAM}.top_n must be >= 1; got {spec.top_n}", param=f"{PARAM}.top_n")
    if spec.ids is not None:
        if not spec.ids:
            raise InvalidRequest(f"{PARAM}.ids must list at least one token id", param=f"{PARAM}.ids")
        bad = [i for i in spec.ids if not 0 <= i < vocab_size]
        if bad:
            raise InvalidRequest(f"{PARAM}.ids must be token ids in 0..{vocab_size - 1}; got {bad[:5]}",
                                 param=f"{PARAM}.ids")


def answer(service: Service, seqs: Seq[Sequence], spec: NextTokenRequest) -> list[dict[str, Any]]:
    """The extension's answer for each prompt (its ids and soft prompt as built), in one batched pass."""
    engine = service.engine
    _check(spec, engine.vocab_size)
    rows = []
    for index, seq in enumerate(seqs):
        n = len(seq.ids)
        if not -n <= spec.position < n:
            raise InvalidRequest(f"{PARAM}.position must be in {-n}..{n - 1} for prompt {index} ({n} tokens); "
                                 f"got {spec.position}", param=f"{PARAM}.position")
        at = spec.position % n
        # keep the positions from `at` to the end; the first of them is the one asked for
        rows.append(Sequence(seq.ids, n - at, seq.soft))
    computed = service.batcher.score(rows)
    out = []
    for row, logp in zip(rows, computed):
        dist = logp[0].float().numpy().astype(np.float32)
        vocab = dist.shape[0]
        if spec.ids is not None:
            chosen = np.asarray(spec.ids, dtype=np.int64)
        elif spec.top_n is not None and spec.top_n < vocab:
            chosen = np.argsort(-dist, kind="stable")[: spec.top_n]
        else:
            chosen = None
        values = dist if chosen is None else dist[chosen]
        item: dict[str, Any] = {
            "position": len(row.ids) - row.keep,
            "vocab_size": vocab,
            "n": int(values.shape[0]),
            "dtype": "float16",
            "logprobs": _b64(values.astype("<f2")),
            "ids": None if chosen is None else _b64(chosen.astype("<i4")),
            "mass": float(np.exp(values.astype(np.float64)).sum()),
        }
        if spec.ids is not None:
            item["tokens"] = [engine.token_text(int(i)) for i in spec.ids]
        out.append(item)
    return out

