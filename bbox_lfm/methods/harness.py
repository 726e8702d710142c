"""The one harness every method reports through: fit, then score dev and eval, then a RunResult.

The search budget and the evaluation budget are kept apart, as the papers count them: ``fit``
spends its search through ``client.with_budget(...)`` and reports ``budget_spent_``; the
harness scores the few-shot dev split and the eval split through ``client.with_budget(Budget())``
and reports that (plus the method's own ``eval_spent_``, e.g. BBT's periodic dev checks) as
``eval_spent``. ``eval_limit`` takes a seeded subsample (seed 0, the same rows for every method
and seed) of the eval split, and the results say so in ``extra``.

**Where a run starts.** ``start`` (:func:`bbox_lfm.tasks.start_point`: the user's template, one
of the task's, an earlier run's) sets the task's template; without it the run starts from the
task's own template. ``config["start"]`` records it. For a prompt search (``kind == "prompt"``)
the start prompt is scored on dev and eval too (``extra["start"]``), calibrated when the method
calibrates, so every results file shows its own gain (``extra["gain"]``).

**The start is a candidate like any other.** A 32-row dev split cannot tell a better prompt from
a lucky one, and the search's dev figure is the best of many checks. So the searched prompt
replaces the start only when, on the dev rows, the rows it gets right and the start gets wrong
(``fixed``) outnumber the reverse (``broken``) by a clear margin: ``fixed - broken >=
max(MIN_NET_ROWS, sqrt(fixed + broken))``, a one-sided sign test at one standard deviation,
never fewer than two rows. Otherwise the run reports the start prompt (``extra["selection"]``
says which was chosen and why, and ``rows_chosen`` what the row count chose where another rule
decided; ``extra["search"]`` keeps the searched prompt's own figures).
``guard=False`` reports the searched prompt whatever it scores.

Rows right or wrong are a coarse measure on 32 rows: a prompt that moves every dev row's
probability of its gold label up may still flip none. So the run also records a second,
finer comparison (``extra["selection_ce"]``, :func:`choose_ce`): the paired difference in the
dev rows' log-probability of the gold label (normalised over the label words: the cross-entropy
BBT and BDPL minimise), the searched prompt preferred when its mean gain is at least one standard
error above zero. It is recorded beside the row-count rule for methods whose ``predict`` leaves
its label scores in ``last_scores_``, and it decides by default for them (``guard="auto"``; the
row-count rule decides for methods that give labels only). It became the default by a check fixed
before its out-of-sample runs came in (docs/benchmarks.md, "The switching criterion";
``benchmarks/guard_compare.py``): on the leaderboard's out-of-sample runs it picked the prompt
with the better eval accuracy in more of the cases where the two rules differ, and its mean eval
accuracy was the higher. ``guard=True`` (or ``"rows"``) asks for the row-count rule.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..budget import Budget
from ..errors import ConfigError, check
from ..results import RunResult
from ..tasks import Example, Start, Task, metrics_from_predictions, subsample
from .base import Method

__all__ = ["CE_RULE", "EVAL_SUBSAMPLE_SEED", "MIN_NET_ROWS", "OFF_RULE", "ROWS_RULE", "choose", "choose_ce",
           "choose_counts", "eval_examples", "run", "score_method"]

EVAL_SUBSAMPLE_SEED = 0
#: the searched prompt must fix at least this many more dev rows than it breaks to replace the start
MIN_NET_ROWS = 2
#: the two guards' rules, as the results state them (``extra.selection.rule``, ``extra.selection_ce.rule``)
ROWS_RULE = "search replaces start iff fixed - broken >= max(2, ceil(sqrt(fixed + broken))) on the few-shot dev rows"
CE_RULE = ("search replaces start iff the mean gain in the dev rows' gold-label log-probability (normalised over "
           "the labels) is > 0 and >= one standard error")
OFF_RULE = "guard off: the searched prompt is kept"
_CHUNK = 512  # examples per predict() call: a progress step; a multiple of the scoring chunk


def score_method(method: Method, client: Any, task: Task, examples: Sequence[Example], *, progress: bool = True,
                 desc: str = "eval") -> dict[str, Any]:
    """``{"accuracy", "f1", "n", "misses"}`` of ``method.predict`` on ``examples``; ``misses``
    counts label words scored at the top-k floor, for methods that track them (``predict_misses_``)."""
    return _predict(method, client, task, examples, progress=progress, desc=desc)[0]


def _predict(method: Method, client: Any, task: Task, examples: Sequence[Example], *, progress: bool = True,
             desc: str = "eval") -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """:func:`score_method`'s metrics, the predictions themselves, and the label scores behind
    them (rows x labels) where the method leaves them in ``last_scores_`` after each ``predict``;
    else None."""
    from tqdm.auto import tqdm

    examples = list(examples)
    misses_before = int(getattr(method, "predict_misses_", 0))
    preds: list[np.ndarray] = []
    scores: list[np.ndarray] | None = []
    with tqdm(total=len(examples), desc=f"{desc} {task.name}", unit="ex", disable=not progress, leave=False) as bar:
        for i in range(0, len(examples), _CHUNK):
            chunk = examples[i:i + _CHUNK]
            preds.append(np.asarray(method.predict(client, chunk)))
            last = getattr(method, "last_scores_", None)
            if scores is not None and last is not None and np.shape(last)[:1] == (len(chunk),):
                scores.append(np.asarray(last, dtype=np.float64))
            else:
                scores = None
            bar.update(len(chunk))
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    misses = int(getattr(method, "predict_misses_", 0)) - misses_before
    metrics = metrics_from_predictions([ex.label for ex in examples], pred, len(task.labels), misses=misses)
    return metrics.to_json(), pred, (np.concatenate(scores) if scores else None)


def choose(y: Sequence[int] | np.ndarray, start_pred: Sequence[int] | np.ndarray | None,
           search_pred: Sequence[int] | np.ndarray | None) -> dict[str, Any]:
    """Whether the searched prompt replaces the start, from both prompts' dev predictions
    (see the module docstring): ``{"chosen": "search" | "start", "fixed", "broken", "needed", "rule"}``."""
    truth, a, b = np.asarray(y), np.asarray(start_pred), np.asarray(search_pred)
    return choose_counts(int(np.sum((b == truth) & (a != truth))), int(np.sum((a == truth) & (b != truth))))


def choose_counts(fixed: int, broken: int) -> dict[str, Any]:
    """:func:`choose`'s decision from its two counts: the dev rows the searched prompt gets right
    and the start wrong (``fixed``), and the reverse (``broken``)."""
    needed = max(MIN_NET_ROWS, int(np.ceil(np.sqrt(fixed + broken))))
    return {"chosen": "search" if fixed - broken >= needed else "start", "fixed": fixed, "broken": broken,
            "needed": needed, "rule": ROWS_RULE}


def choose_ce(y: Sequence[int] | np.ndarray, start_scores: np.ndarray, search_scores: np.ndarray) -> dict[str, Any]:
    """Whether the searched prompt replaces the start by the dev rows' gold-label log-probability.

    Each prompt's label scores (rows x labels, log-probabilities or calibrated ones) are
    normalised over the labels; ``gain`` per row is the searched prompt's log-probability of the
    gold label minus the start's. The search is chosen iff the mean gain is positive and at least
    one standard error (sample std / sqrt(n)): ``{"chosen", "mean_gain_nats", "se_nats", "n", "rule"}``.
    """
    truth = np.asarray(y, dtype=np.int64)
    a, b = np.asarray(start_scores, dtype=np.float64), np.asarray(search_scores, dtype=np.float64)
    check(a.shape == b.shape and a.ndim == 2 and a.shape[0] == len(truth), "scores",
          f"two arrays of shape ({len(truth)}, labels)", f"{a.shape} and {b.shape}")

    def gold(s: np.ndarray) -> np.ndarray:
        s = s - s.max(axis=1, keepdims=True)
        return (s - np.log(np.exp(s).sum(axis=1, keepdims=True)))[np.arange(len(truth)), truth]

    gain = gold(b) - gold(a)
    n = len(gain)
    mean = float(gain.mean()) if n else 0.0
    se = float(gain.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return {"chosen": "search" if n > 1 and mean > 0 and mean >= se else "start", "mean_gain_nats": mean,
            "se_nats": se, "n": n, "rule": CE_RULE}


def _add(a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v + (b or {}).get(k, 0) for k, v in a.items()}


def eval_examples(task: Task, *, eval_limit: int | None = None, eval_split: str = "eval") -> list[Example]:
    """The rows `run` scores: ``eval_split`` (``"eval"``: the task's own), seeded subsample of ``eval_limit``."""
    split = task.eval_split if eval_split == "eval" else eval_split
    return subsample(task.split(split), eval_limit, EVAL_SUBSAMPLE_SEED)


def run(method: Method, client: Any, task: Task, *, seed: int, eval_limit: int | None = None,
        eval_split: str = "eval", progress: bool = True, fit_kwargs: Mapping[str, Any] | None = None,
        start: Start | None = None, guard: bool | str = "auto") -> RunResult:
    """Fit ``method`` on ``task`` through ``client``, score it on the few-shot dev split of
    ``seed`` and on ``eval_split``, and return the :class:`RunResult`.

    ``fit_kwargs`` go to ``fit`` beside the client and task (a method's data, e.g. distill's
    ``unlabeled`` texts).

    ``start`` sets where the run starts (default: the task's own template); a prompt search is
    compared with it and keeps it unless the search clearly beats it (``guard``: ``"auto"``, the
    default, the gold-label log-probability rule where the method leaves label scores, else the
    row-count rule; ``"ce"``, that rule (refused for a method that gives labels only); True or
    ``"rows"``, the row-count rule; False, no guard; see the module docstring). A method with a
    ``seed`` attribute must have been built with this ``seed`` (the seed names the few-shot split,
    so two different ones would be a silent mix-up). A task
    without few-shot data (no train split, no shipped split) gets ``dev`` metrics of None.
    """
    from .baselines import ZeroShot

    check(guard in (True, False, "auto", "rows", "ce"), "guard", '"auto", "ce", "rows" (or True) or False', guard)
    if guard == "ce" and method.kind == "prompt":
        check(method.leaves_scores, "guard", f"True or False for {method.name}, whose predict gives labels only "
              "(\"ce\" compares the label scores)", guard)
    check(getattr(method, "seed", seed) == seed, "seed", f"the method's own seed ({getattr(method, 'seed', None)})",
          seed)
    client.require(*method.needs, needed_by=method.name)
    if start is None:
        start = Start(template=task.template, label_words=tuple(task.label_words), origin="the task's template")
    task = start.apply(task)
    t0 = time.perf_counter()
    method.fit(client, task, **(fit_kwargs or {}))
    fit_s = time.perf_counter() - t0
    scorer = client.with_budget(Budget())
    try:
        dev_examples: list[Example] | None = task.few_shot(seed=seed).dev
    except ConfigError:
        dev_examples = None
    none = {"accuracy": None, "f1": None, "n": 0, "misses": 0}
    dev, dev_pred, dev_scores = _predict(method, scorer, task, dev_examples, progress=progress, desc="dev") \
        if dev_examples else (none, None, None)
    split = task.eval_split if eval_split == "eval" else eval_split
    examples = eval_examples(task, eval_limit=eval_limit, eval_split=eval_split)
    ev = score_method(method, scorer, task, examples, progress=progress, desc="eval")
    prompt = getattr(method, "best_prompt_", None)
    extra: dict[str, Any] = {}
    if method.kind == "prompt":
        # scored as the method scores: calibrated or not, through the same endpoint and strategy
        how = {k: getattr(method, k) for k in ("strategy", "endpoint", "top_k") if hasattr(method, k)}
        base = ZeroShot(template=start.template, label_words=start.label_words, extra=start.extra or None,
                        calibrate=bool(getattr(method, "calibrate", False)), **how).fit(scorer, task)
        start_dev, start_pred, start_scores = _predict(base, scorer, task, dev_examples, progress=progress,
                                                       desc="start dev") if dev_examples else (none, None, None)
        start_eval = score_method(base, scorer, task, examples, progress=progress, desc="start eval")
        extra["start"] = {"dev": start_dev, "eval": start_eval, "prompt": base.best_prompt_}
        dev_y = [ex.label for ex in dev_examples or []]
        selection = choose(dev_y, start_pred, dev_pred) if dev_examples \
            else {"chosen": "search", "rule": "no dev data: the searched prompt is kept"}
        if dev_examples and start_scores is not None and dev_scores is not None:
            extra["selection_ce"] = choose_ce(dev_y, start_scores, dev_scores)
            if guard == "ce" or (guard == "auto" and method.leaves_scores):
                selection = {**selection, "rows_chosen": selection["chosen"], "chosen": extra["selection_ce"]["chosen"],
                             "rule": "guard 'ce': " + extra["selection_ce"]["rule"]}
        if guard is False:
            selection = {**selection, "rows_chosen": selection.get("rows_chosen", selection["chosen"]),
                         "chosen": "search", "rule": OFF_RULE}
        extra["selection"] = selection
        extra["search"] = {"dev": dev, "eval": ev}
        if selection["chosen"] == "start":
            dev, ev, prompt = start_dev, start_eval, base.best_prompt_
        if ev.get("accuracy") is not None and start_eval.get("accuracy") is not None:
            extra["gain"] = {"eval_accuracy": ev["accuracy"] - start_eval["accuracy"],
                             "eval_f1": ev["f1"] - start_eval["f1"]}
    wall_s = time.perf_counter() - t0
    return RunResult(
        method=method.name, config={**method.get_config(), "start": start.to_json()}, task=task.name, seed=seed,
        provider=client.profile.name, model=client.model or "",
        budget_spent=dict(getattr(method, "budget_spent_", Budget().summary())),
        eval_spent=_add(scorer.budget.summary(), getattr(method, "eval_spent_", None)), wall_s=round(wall_s, 3),
        dev=dev, eval=ev, curve=list(getattr(method, "curve_", [])), prompt=prompt,
        extra={"eval_split": split, "eval_limit": eval_limit, "eval_n": len(examples),
               "eval_subsample_seed": EVAL_SUBSAMPLE_SEED if eval_limit is not None else None,
               "task_source": task.source, "metric": task.metric, "fit_s": round(fit_s, 3), **extra})
