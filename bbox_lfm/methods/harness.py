"""The one harness every method reports through: fit, then score dev and eval, then a RunResult.

The search budget and the evaluation budget are kept apart, as the papers count them: ``fit``
spends its search through ``client.with_budget(...)`` and reports ``budget_spent_``; the
harness scores the few-shot dev split and the eval split through ``client.with_budget(Budget())``
and reports that (plus the method's own ``eval_spent_``, e.g. BBT's periodic dev checks) as
``eval_spent``. ``eval_limit`` takes a seeded subsample (seed 0, the same rows for every method
and seed) of the eval split, and the results say so in ``extra``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..budget import Budget
from ..errors import ConfigError, check
from ..results import RunResult
from ..tasks import Example, Task, metrics_from_predictions, subsample
from .base import Method

__all__ = ["EVAL_SUBSAMPLE_SEED", "eval_examples", "run", "score_method"]

EVAL_SUBSAMPLE_SEED = 0
_CHUNK = 512  # examples per predict() call: a progress step; a multiple of the scoring chunk


def score_method(method: Method, client: Any, task: Task, examples: Sequence[Example], *, progress: bool = True,
                 desc: str = "eval") -> dict[str, Any]:
    """``{"accuracy", "f1", "n", "misses"}`` of ``method.predict`` on ``examples``; ``misses``
    counts label words scored at the top-k floor, for methods that track them (``predict_misses_``)."""
    from tqdm.auto import tqdm

    examples = list(examples)
    misses_before = int(getattr(method, "predict_misses_", 0))
    preds: list[np.ndarray] = []
    with tqdm(total=len(examples), desc=f"{desc} {task.name}", unit="ex", disable=not progress, leave=False) as bar:
        for i in range(0, len(examples), _CHUNK):
            chunk = examples[i:i + _CHUNK]
            preds.append(np.asarray(method.predict(client, chunk)))
            bar.update(len(chunk))
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    misses = int(getattr(method, "predict_misses_", 0)) - misses_before
    return metrics_from_predictions([ex.label for ex in examples], pred, len(task.labels), misses=misses).to_json()


def _add(a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v + (b or {}).get(k, 0) for k, v in a.items()}


def eval_examples(task: Task, *, eval_limit: int | None = None, eval_split: str = "eval") -> list[Example]:
    """The rows `run` scores: ``eval_split`` (``"eval"``: the task's own), seeded subsample of ``eval_limit``."""
    split = task.eval_split if eval_split == "eval" else eval_split
    return subsample(task.split(split), eval_limit, EVAL_SUBSAMPLE_SEED)


def run(method: Method, client: Any, task: Task, *, seed: int, eval_limit: int | None = None,
        eval_split: str = "eval", progress: bool = True, fit_kwargs: Mapping[str, Any] | None = None) -> RunResult:
    """Fit ``method`` on ``task`` through ``client``, score it on the few-shot dev split of
    ``seed`` and on ``eval_split``, and return the :class:`RunResult`.

    ``fit_kwargs`` go to ``fit`` beside the client and task (a method's data, e.g. distill's
    ``unlabeled`` texts).

    A method with a ``seed`` attribute must have been built with this ``seed`` (the seed names
    the few-shot split, so two different ones would be a silent mix-up). A task without few-shot
    data (no train split, no shipped split) gets ``dev`` metrics of None.
    """
    check(getattr(method, "seed", seed) == seed, "seed", f"the method's own seed ({getattr(method, 'seed', None)})",
          seed)
    client.require(*method.needs, needed_by=method.name)
    t0 = time.perf_counter()
    method.fit(client, task, **(fit_kwargs or {}))
    fit_s = time.perf_counter() - t0
    scorer = client.with_budget(Budget())
    try:
        dev_examples: list[Example] | None = task.few_shot(seed=seed).dev
    except ConfigError:
        dev_examples = None
    dev = score_method(method, scorer, task, dev_examples, progress=progress, desc="dev") if dev_examples \
        else {"accuracy": None, "f1": None, "n": 0, "misses": 0}
    split = task.eval_split if eval_split == "eval" else eval_split
    examples = eval_examples(task, eval_limit=eval_limit, eval_split=eval_split)
    ev = score_method(method, scorer, task, examples, progress=progress, desc="eval")
    wall_s = time.perf_counter() - t0
    return RunResult(
        method=method.name, config=method.get_config(), task=task.name, seed=seed, provider=client.profile.name,
        model=client.model or "", budget_spent=dict(getattr(method, "budget_spent_", Budget().summary())),
        eval_spent=_add(scorer.budget.summary(), getattr(method, "eval_spent_", None)), wall_s=round(wall_s, 3),
        dev=dev, eval=ev, curve=list(getattr(method, "curve_", [])), prompt=getattr(method, "best_prompt_", None),
        extra={"eval_split": split, "eval_limit": eval_limit, "eval_n": len(examples),
               "eval_subsample_seed": EVAL_SUBSAMPLE_SEED if eval_limit is not None else None,
               "task_source": task.source, "metric": task.metric, "fit_s": round(fit_s, 3)})
