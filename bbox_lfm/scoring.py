"""Label-word scoring: log p(word | prompt) for every prompt and label word.

The strategy follows the provider's capabilities (``strategy="auto"``):

* ``exact`` -- the provider scores continuations itself (bbox-lfm's ``label_words``
  extension): exact log-probabilities, multi-token words included, many prompts per request.
* ``topk`` -- the provider only returns the top-k next tokens (legacy Completions ``logprobs``,
  or Chat ``top_logprobs`` <= 20). A word is matched against the returned tokens after
  stripping surrounding whitespace (``" great"`` and ``"great"`` both count; several matches are
  summed in probability). Only a word's first token can be seen this way.

  The documented floor: a word missing from the top k gets the lowest log-probability among
  the returned tokens. That is an upper bound on its true value (it ranks below all of them),
  so missing words are never scored as impossible, and the number of such misses is reported.
* ``echo`` -- the provider echoes a prompt's own token log-probabilities (legacy Completions
  ``echo``: vLLM, llama.cpp): ``prompt + word`` is sent for every label word and the word's
  score is the sum of its tokens' log-probabilities, read from the end of the echoed prompt.
  Exact, multi-token words included, at one sequence per (prompt, word); ``max_tokens`` is the
  profile's ``echo_max_tokens`` (llama.cpp generates one token, set aside).

``auto`` takes ``exact`` where the provider has it, else ``topk``; ``echo`` is asked for by
name, and only where the echoed log-probabilities are right (the profile's ``echo_logprobs``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CapabilityError, MalformedResponseError, check
from .types import Query, Response

if TYPE_CHECKING:
    from .client import Client

__all__ = ["STRATEGIES", "Scores", "echoed_prompt_tokens", "score"]

STRATEGIES = ("auto", "exact", "topk", "echo")


@dataclass(frozen=True)
class Scores:
    """``logprobs[i, k]`` = log p(label_words[k] | prompts[i]); ``misses`` counts (prompt, word)
    pairs filled with the top-k floor; ``responses`` are the raw answers (cache hits visible)."""

    logprobs: np.ndarray
    strategy: str
    misses: int = 0
    responses: tuple[Response, ...] = ()

    def predictions(self) -> np.ndarray:
        """Index of the most likely label word for each prompt."""
        return np.asarray(self.logprobs.argmax(axis=1))

    @property
    def cache_hits(self) -> int:
        """How many of the underlying requests were answered from the cache."""
        return sum(r.cache_hit for r in self.responses)


def _match(top: Mapping[str, float], word: str) -> float | None:
    target = word.strip()
    hits = [lp for tok, lp in top.items() if tok.strip() == target]
    if not hits:
        return None
    m = max(hits)
    return m + math.log(sum(math.exp(h - m) for h in hits))


def _from_top(top: Mapping[str, float], words: Sequence[str]) -> tuple[list[float], int]:
    if not top:
        raise MalformedResponseError("the provider returned no top logprobs for the answer position")
    floor = min(top.values())
    row, misses = [], 0
    for w in words:
        v = _match(top, w)
        if v is None:
            misses += 1
            v = floor
        row.append(v)
    return row, misses


def score(client: Client, prompts: Sequence[str], label_words: Sequence[str], *,
          extra: Mapping[str, Any] | None = None, strategy: str = "auto", endpoint: str = "completions",
          top_k: int | None = None, max_concurrency: int | None = None) -> Scores:
    """Score ``label_words`` after each of ``prompts`` through ``client`` (see module docstring).

    ``extra`` goes into every request body (e.g. a ``soft_prompt``). Prompts are packed into as
    few requests as the provider allows (``max_batch``) and the requests go out concurrently.
    """
    check(strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}", strategy)
    check(endpoint in ("completions", "chat"), "endpoint", "'completions' or 'chat'", endpoint)
    check(len(label_words) >= 1, "label_words", "at least one word", list(label_words))
    prompts = list(prompts)
    caps = client.capabilities
    if strategy == "auto":
        strategy = "exact" if caps.label_words else "topk"
    if strategy == "echo":
        if not (caps.echo and caps.echo_logprobs and caps.completions) or endpoint != "completions":
            raise CapabilityError("echo", client.profile.name, needed_by="echo scoring", hint="use strategy='topk'")
        return _echo_scores(client, list(prompts), list(label_words), dict(extra or {}), max_concurrency)
    if strategy == "exact" and not caps.label_words:
        raise CapabilityError("label_words", client.profile.name, needed_by="exact scoring",
                              hint="use strategy='topk'")
    # hosted chat APIs return up to 20 top tokens where their legacy Completions return 5
    has_lp, limit = ((caps.chat_logprobs, caps.chat_max_top_logprobs) if endpoint == "chat"
                     else (caps.logprobs, caps.max_top_logprobs))
    if strategy == "topk" and not (has_lp and limit >= 1):
        raise CapabilityError("chat_logprobs" if endpoint == "chat" else "logprobs", client.profile.name,
                              needed_by="label-word scoring")
    if not prompts:
        return Scores(np.zeros((0, len(label_words))), strategy)
    extra = dict(extra or {})
    k = min(top_k or limit, limit)

    if endpoint == "chat":
        queries = [Query(endpoint="chat", messages=({"role": "user", "content": p},), max_tokens=1,
                         logprobs=1 if strategy == "topk" else None, top_logprobs=k if strategy == "topk" else None,
                         extra={**extra, "label_words": list(label_words)} if strategy == "exact" else extra)
                   for p in prompts]
    else:
        batch = max(1, caps.max_batch)
        chunks = [tuple(prompts[i:i + batch]) for i in range(0, len(prompts), batch)]
        if strategy == "exact":
            queries = [Query(prompt=c, max_tokens=0, extra={**extra, "label_words": list(label_words)})
                       for c in chunks]
        else:
            queries = [Query(prompt=c, max_tokens=1, logprobs=k, extra=extra) for c in chunks]
    responses = client.send_many(queries, max_concurrency=max_concurrency)

    rows: list[list[float]] = []
    misses = 0
    for resp in responses:
        for choice in resp.choices:
            if strategy == "exact":
                lp = choice.extra.get("label_logprobs")
                if lp is None or len(lp) != len(label_words):
                    raise MalformedResponseError("the answer has no label_logprobs for every label word")
                rows.append([float(v) for v in lp])
            else:
                if choice.logprobs is None or not choice.logprobs.top_logprobs:
                    raise MalformedResponseError("the answer has no top logprobs; is logprobs supported?")
                row, m = _from_top(choice.logprobs.top_logprobs[0], label_words)
                rows.append(row)
                misses += m
    if len(rows) != len(prompts):
        raise MalformedResponseError(f"expected {len(prompts)} scored prompts, got {len(rows)}")
    return Scores(np.asarray(rows, dtype=np.float64), strategy, misses, tuple(responses))


def echoed_prompt_tokens(choice: Any, prompt: str, generated: int) -> int:
    """How many of an echoed answer's tokens are the prompt's: all of them, less the
    ``generated`` ones where the server lists those too (OpenAI's convention; llama-cpp-python
    0.3 leaves them out), told apart by whether the tokens spell more than the prompt."""
    tokens = choice.logprobs.tokens
    spelled = sum(len(t) for t in tokens)
    return len(tokens) - generated if generated and spelled > len(prompt) else len(tokens)


def _word_logprob(choice: Any, word: str, end: int | None) -> float:
    """Sum of the log-probabilities of the echoed tokens that spell ``word`` at the end of the
    prompt, whose last token is ``end - 1`` (None: the last echoed token)."""
    lp = choice.logprobs
    if lp is None or not lp.tokens:
        raise MalformedResponseError("the answer has no echoed prompt tokens; is echo supported?")
    end = len(lp.tokens) if end is None else min(end, len(lp.tokens))
    total, covered, i = 0.0, 0, end
    while covered < len(word) and i > 0:
        i -= 1
        value = lp.token_logprobs[i]
        if value is None:  # the first token of a sequence has no log-probability
            raise MalformedResponseError(f"the label word {word!r} reaches the first token of the prompt")
        total += float(value)
        covered += len(lp.tokens[i])
    if covered < len(word):
        raise MalformedResponseError(f"the echoed tokens do not spell the label word {word!r}")
    return total


def _echo_scores(client: Client, prompts: list[str], words: list[str], extra: dict[str, Any],
                 max_concurrency: int | None) -> Scores:
    if not prompts:
        return Scores(np.zeros((0, len(words))), "echo")
    caps = client.capabilities
    gen = max(0, caps.echo_max_tokens)
    texts = [p + w for p in prompts for w in words]
    batch = max(1, caps.max_batch) if gen == 0 else 1  # generated tokens are told apart per request
    queries = [Query(prompt=tuple(texts[i:i + batch]), max_tokens=gen, echo=True, logprobs=1, extra=extra)
               for i in range(0, len(texts), batch)]
    responses = client.send_many(queries, max_concurrency=max_concurrency)
    values: list[float] = []
    for resp in responses:
        for choice in resp.choices:
            text = texts[len(values)]
            end = echoed_prompt_tokens(choice, text, resp.usage.completion_tokens if gen else 0) \
                if choice.logprobs is not None and choice.logprobs.tokens else None
            values.append(_word_logprob(choice, words[len(values) % len(words)], end))
    if len(values) != len(texts):
        raise MalformedResponseError(f"expected {len(texts)} echoed sequences, got {len(values)}")
    return Scores(np.asarray(values, dtype=np.float64).reshape(len(prompts), len(words)), "echo", 0,
                  tuple(responses))
