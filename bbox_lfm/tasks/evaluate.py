"""Scoring examples through any client: batched, concurrent, cached, with a progress bar."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import check
from .metrics import Metrics, metrics_from_predictions
from .task import Example, Task, subsample

__all__ = ["CHUNK", "content_free_prompts", "evaluate", "score_prompts"]

#: prompts per request. Fixed (not derived from the concurrency setting) so the same evaluation
#: always sends the same requests and a rerun replays from the cache.
CHUNK = 32


def score_prompts(client: Any, prompts: Sequence[str], label_words: Sequence[str], *,
                  extra: Mapping[str, Any] | None = None, progress: bool = True,
                  desc: str = "scoring", content_free: Sequence[str] | None = None,
                  **how: Any) -> tuple[np.ndarray, int]:
    """``(logprobs [n, K], misses)`` for ``label_words`` after each prompt, through the client's
    scoring primitive, ``CHUNK`` prompts of similar length per request and
    ``client.max_concurrency`` requests in flight (the local server batches concurrent requests into
    shared forward passes). ``how`` goes to :meth:`Client.score` (``strategy``, ``endpoint``,
    ``top_k``).

    ``content_free``: the prompt filled with content-free inputs; when given, they are scored as
    one query of their own (so a second calibration of the same prompt is a cache hit) and the
    returned scores are contextually calibrated (:mod:`bbox_lfm.tasks.calibration`)."""
    prompts = list(prompts)
    if content_free is not None:
        from .calibration import apply_calibration

        logprobs, misses = score_prompts(client, prompts, label_words, extra=extra, progress=progress, desc=desc,
                                         **how)
        if not len(prompts):
            return logprobs, misses
        cf = client.score(list(content_free), label_words, extra=extra, max_concurrency=1, **how)
        return apply_calibration(logprobs, cf.logprobs), misses + cf.misses
    # Requests of prompts of similar length: a batch is padded to its longest prompt, so chunks of
    # the split's own order would waste about half of every forward pass on padding.
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    chunks = [[prompts[i] for i in order[at:at + CHUNK]] for at in range(0, len(order), CHUNK)]
    if not chunks:
        return np.zeros((0, len(label_words))), 0

    def one(chunk: list[str]) -> Any:
        return client.score(chunk, label_words, extra=extra, max_concurrency=1, **how)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress, leave=False)

    def counted(chunk: list[str]) -> Any:
        scores = one(chunk)
        bar.update(len(chunk))
        return scores

    try:
        results = client.fan_out(counted, chunks, name="scoring")
    finally:
        bar.close()
    logprobs = np.empty((len(prompts), len(label_words)))
    logprobs[order] = np.concatenate([r.logprobs for r in results])
    return logprobs, sum(r.misses for r in results)


def content_free_prompts(task: Task, prompt: str = "", prefix: str = "") -> list[str]:
    """``task``'s template (behind ``prefix``, with ``prompt``) filled with each content-free
    input of :data:`~bbox_lfm.tasks.calibration.CONTENT_FREE`."""
    from .calibration import content_free_examples

    return [prefix + task.format(ex, prompt) for ex in content_free_examples(task.pair)]


def evaluate(client: Any, task: Task, examples: Sequence[Example] | str, *, prompt: str = "",
             extra: Mapping[str, Any] | None = None, limit: int | None = None, seed: int = 0,
             progress: bool = True, calibrate: bool = False, **how: Any) -> Metrics:
    """Score ``examples`` (or a split name: ``"eval"``, ``"dev"``...) with ``task``'s template,
    ``prompt`` and label words; ``limit`` takes a seeded subsample of that many examples;
    ``extra`` goes into every request (e.g. a ``soft_prompt``); ``calibrate`` applies contextual
    calibration (:mod:`bbox_lfm.tasks.calibration`); ``how`` chooses the scoring (``strategy``,
    ``endpoint``, ``top_k``: see :func:`score_prompts`)."""
    if isinstance(examples, str):
        examples = task.split(examples)
    check(limit is None or limit >= 1, "limit", "None or an integer >= 1", limit)
    examples = subsample(examples, limit, seed)
    prompts = [task.format(ex, prompt) for ex in examples]
    content_free = content_free_prompts(task, prompt) if calibrate else None
    logprobs, misses = score_prompts(client, prompts, task.label_words, extra=extra, progress=progress,
                                     desc=f"eval {task.name}", content_free=content_free, **how)
    return metrics_from_predictions([ex.label for ex in examples], logprobs.argmax(axis=1) if len(logprobs)
                                    else np.zeros(0, dtype=np.int64), len(task.labels),
                                    logprobs=logprobs, misses=misses)
