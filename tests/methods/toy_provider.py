"""A toy provider answering every query a registered method sends, for the conformance suite.

It stands in for bbox-lfm's server (profile ``bbox-lfm``): ``GET /models`` metadata, label-word
scores (``label_words``), next-token distributions (``next_token_logprobs``), top-k logprobs, generated text (completions and chat) and
hidden-state statistics (the ``hidden_stats`` query, ``POST /bbox/hidden_stats``). Every answer is a deterministic function of the whole query (text,
soft or deep prompt, sampling settings), so different prompts get different scores, a rerun gets
the same ones, and nothing depends on timing. A method that needs another route or extension
adds it here, one branch per feature, and the suite covers it from then on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.types import Query

__all__ = ["ToyProvider"]

D, L = 8, 3  # the toy model's hidden size and layer count


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _log_softmax(s: np.ndarray) -> np.ndarray:
    return s - np.logaddexp.reduce(s)


VOCAB = 64  # the toy model's vocabulary (next_token_logprobs)


def _next_token(text: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The ``next_token_logprobs`` extension's answer: a distribution over ``VOCAB`` tokens that
    depends on the text only (so the full answer and an ``ids`` answer agree), float16 base64."""
    import base64

    lp = _log_softmax(_rng("next", text).normal(0.0, 2.0, VOCAB))
    ids = spec.get("ids")
    if ids is None and spec.get("top_n") is not None:
        ids = np.argsort(-lp, kind="stable")[: spec["top_n"]].tolist()
    values = lp if ids is None else lp[np.asarray(ids)]

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")

    out = {"position": 0, "vocab_size": VOCAB, "n": len(values), "dtype": "float16", "logprobs": b64(
        values.astype("<f2")), "ids": None if ids is None else b64(np.asarray(ids).astype("<i4")),
           "mass": float(np.exp(values).sum())}
    if spec.get("ids") is not None:
        out["tokens"] = [f"t{i}" for i in spec["ids"]]
    return out


class ToyProvider(MockAdapter):
    """The toy model for a task whose label words are ``words``."""

    def __init__(self, words: tuple[str, ...]) -> None:
        super().__init__(self._answer)
        self.words = words

    def models(self) -> list[dict[str, Any]]:
        return [{"id": "toy", "metadata": {"hidden_size": D, "num_layers": L, "embedding_std": 0.5,
                                           "vocab_size": 64, "context_length": 512}}]

    def _answer(self, query: Query) -> dict[str, Any]:
        if query.endpoint == "hidden_stats":
            return {"object": "hidden_stats", "model": "toy", "layer_std": [0.5 * (layer + 1) for layer in range(L)],
                    "n_tokens": 10 * len(query.prompt)}
        extra = {k: v for k, v in query.extra.items() if k != "label_words"}
        texts = list(query.prompt) if query.endpoint == "completions" else [
            "\n".join(str(m.get("content", "")) for m in query.messages)]
        choices = []
        index = 0
        for text in texts:
            for sample in range(query.n):
                rng = _rng(text, extra, query.temperature, query.sample_id, sample)
                scores = _log_softmax(rng.normal(0.0, 1.0, len(self.words)))
                word = self.words[int(scores.argmax())].strip()
                content = f"{word} toy text {int(rng.integers(10**6))}" if query.max_tokens else ""
                choice: dict[str, Any] = {"index": index, "finish_reason": "length"}
                if query.endpoint == "chat":
                    choice["message"] = {"role": "assistant", "content": content}
                    if query.logprobs:
                        top = [{"token": w.strip(), "logprob": float(v)} for w, v in zip(self.words, scores)]
                        choice["logprobs"] = {"content": [{"token": word, "logprob": float(scores.max()),
                                                           "top_logprobs": top[:query.top_logprobs or 0]}]}
                else:
                    choice["text"] = content
                    if query.logprobs is not None:
                        top = {w: float(v) for w, v in zip(self.words, scores)}
                        choice["logprobs"] = {"tokens": [word], "token_logprobs": [float(scores.max())],
                                              "top_logprobs": [top], "text_offset": [0]}
                if "next_token_logprobs" in query.extra:
                    choice["next_token_logprobs"] = _next_token(text, dict(query.extra["next_token_logprobs"]))
                if "label_words" in query.extra:
                    words = query.extra["label_words"]
                    choice["label_logprobs"] = _log_softmax(_rng(text, extra, words).normal(0.0, 1.0, len(words))
                                                            ).tolist()
                choices.append(choice)
                index += 1
        tokens = sum(len(t.split()) for t in texts)
        return {"model": "toy", "choices": choices,
                "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}}
