"""Baselines every method must beat: zero-shot, in-context learning, best-of-N templates.

All of them score label words after a text prompt, so they run against any provider with
label-word scoring or top-k logprobs. None of them trains anything:

* ``zero-shot`` -- one manual template and its label words (the task's default unless given).
* ``calibrated`` -- zero-shot with contextual calibration (Zhao et al., 2021; see
  :mod:`bbox_lfm.tasks.calibration`): three content-free prompts are scored too, and each
  answer is divided by their label distribution. ``icl`` and ``zero-shot`` take
  ``calibrate=True`` for the same.
* ``icl`` -- in-context learning (Brown et al., 2020): k demonstrations per class drawn from
  the few-shot train split, in a seeded order, each written as the filled template followed by
  its label word, placed before the query.
* ``best-of-n`` -- N manual templates (the task's ``templates`` unless given), each scored on
  the few-shot dev split; the best by the task's metric is kept (ties: the earlier one).
  Scoring one candidate on the dev set counts as one call in ``curve_``, the way BBT counts one
  forward pass over its batch as one call; ``budget_spent_`` has the requests actually sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, check
from ..tasks import Example, Task, fill, macro_f1, score_prompts
from ..tasks.task import validate_template
from .base import Method, register

__all__ = ["ICL", "BestOfN", "Calibrated", "ZeroShot", "baseline_names"]


class _TextPromptBaseline(Method):
    """Shared scoring: ``prefix_ + fill(template_, example, prompt)``, label words ``label_words_``."""

    leaves_scores: ClassVar[bool] = True

    needs: ClassVar[tuple[str, ...]] = ("logprobs",)
    kind: ClassVar[str] = "baseline"

    template_: str
    label_words_: tuple[str, ...]
    prefix_: str = ""
    prompt: str = ""
    calibrate: bool = False
    extra: dict[str, Any] | None = None
    how: dict[str, Any]  # scoring strategy / endpoint / top_k (ZeroShot's; the others score by default)

    def _prompts(self, examples: Sequence[Example]) -> list[str]:
        return [self.prefix_ + fill(self.template_, ex, self.prompt) for ex in examples]

    def _content_free(self) -> list[str] | None:
        """The prompt filled with the content-free inputs, when calibrating."""
        if not self.calibrate:
            return None
        from ..tasks.calibration import content_free_examples

        return self._prompts(content_free_examples(getattr(self, "pair_", False)))

    def predict(self, client: Any, examples: Sequence[Example]) -> np.ndarray:
        """Index of the highest-scoring label word after each example's prompt (calibrated when
        ``calibrate``)."""
        client.require(*self.needs, needed_by=self.name)
        logprobs, misses = score_prompts(client, self._prompts(examples), self.label_words_, progress=False,
                                         extra=self.extra, content_free=self._content_free(),
                                         **getattr(self, "how", {}))
        self.predict_misses_ = getattr(self, "predict_misses_", 0) + misses
        self.last_scores_ = np.asarray(logprobs)  # the harness compares prompts on these (choose_ce)
        return np.asarray(logprobs.argmax(axis=1)) if len(logprobs) else np.zeros(0, dtype=np.int64)

    def _set_prompt(self, template: str, label_words: Sequence[str], task: Task) -> None:
        validate_template(template, pair=task.pair)
        check(len(label_words) == len(task.labels), "label_words",
              f"one word per label ({len(task.labels)}: {list(task.labels)})", list(label_words))
        self.template_ = template
        self.label_words_ = tuple(label_words)
        self.pair_ = task.pair

    def _no_search(self) -> None:
        self.budget_spent_ = Budget().summary()
        self.eval_spent_ = Budget().summary()
        self.curve_: list[dict[str, Any]] = []

    @property
    def best_prompt_(self) -> dict[str, Any]:
        """The prompt as JSON: template, label words, and the ICL prefix or discrete prompt."""
        out: dict[str, Any] = {"template": self.template_, "label_words": list(self.label_words_)}
        if self.prefix_:
            out["prefix"] = self.prefix_
        if self.prompt:
            out["prompt"] = self.prompt
        if self.extra:
            out.update(self.extra)
        if self.calibrate:
            out["calibrated"] = True
            out["pair"] = self.pair_
        return out

    def state(self) -> dict[str, Any]:
        """The chosen prompt."""
        return self.best_prompt_

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.template_ = state["template"]
        self.label_words_ = tuple(state["label_words"])
        self.prefix_ = state.get("prefix", "")
        self.pair_ = bool(state.get("pair", False))


@register
class ZeroShot(_TextPromptBaseline):
    """Zero-shot: ``template`` and ``label_words`` (default: the task's), with an optional
    discrete ``prompt`` filling the template's ``{prompt}`` slot (or prepended), request fields
    ``extra`` (an earlier run's ``soft_prompt`` or ``deep_prompt``), contextual calibration
    (``calibrate``), and the scoring ``strategy``, ``endpoint`` and ``top_k`` of
    :meth:`bbox_lfm.Client.score` (default: exact where the provider can, through completions)."""

    name = "zero-shot"
    tiny_config: ClassVar[dict[str, Any]] = {}
    contract_exempt: ClassVar[dict[str, str]] = {
        "budget_exhausted": "fit sends no query, so there is no run to cut short",
        "curve": "nothing is searched, so there are no calls to plot against",
    }

    def __init__(self, *, template: str | None = None, label_words: Sequence[str] | None = None, prompt: str = "",
                 calibrate: bool = False, extra: dict[str, Any] | None = None, strategy: str = "auto",
                 endpoint: str = "completions", top_k: int | None = None):
        check(template is None or isinstance(template, str), "template", "None or a string", template)
        check(strategy in ("auto", "exact", "topk"), "strategy", "one of ('auto', 'exact', 'topk')", strategy)
        check(endpoint in ("completions", "chat"), "endpoint", "'completions' or 'chat'", endpoint)
        check(top_k is None or (isinstance(top_k, int) and top_k >= 1), "top_k", "None or an integer >= 1", top_k)
        self.how = {"strategy": strategy, "endpoint": endpoint, "top_k": top_k}
        check(isinstance(prompt, str), "prompt", "a string", prompt)
        check(isinstance(calibrate, bool), "calibrate", "True or False", calibrate)
        check(extra is None or (isinstance(extra, dict) and set(extra) <= {"soft_prompt", "deep_prompt"}), "extra",
              "None or a dict of soft_prompt / deep_prompt fields", extra)
        self.template = template
        self.label_words = tuple(label_words) if label_words is not None else None
        self.prompt = prompt
        self.calibrate = calibrate
        self.extra = dict(extra) if extra else None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        out = {"template": self.template, "label_words": None if self.label_words is None
               else list(self.label_words), "prompt": self.prompt, "calibrate": self.calibrate, **self.how}
        if self.extra:
            out["extra"] = self.extra
        return out

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (with a soft or deep prompt it carried)."""
        super().set_state(state)
        self.extra = {k: state[k] for k in ("soft_prompt", "deep_prompt") if k in state} or None
        self.calibrate = bool(state.get("calibrated", self.calibrate))

    def fit(self, client: Any, task: Task) -> ZeroShot:
        """Nothing to search: take the template and label words."""
        self._set_prompt(self.template or task.template, self.label_words or task.label_words, task)
        self._no_search()
        return self


@register
class Calibrated(ZeroShot):
    """Zero-shot with contextual calibration (``ZeroShot(calibrate=True)``): the label
    distribution on the content-free inputs divides out of every answer."""

    name = "calibrated"
    tiny_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, template: str | None = None, label_words: Sequence[str] | None = None, prompt: str = "",
                 calibrate: bool = True, extra: dict[str, Any] | None = None, strategy: str = "auto",
                 endpoint: str = "completions", top_k: int | None = None):
        check(calibrate is True, "calibrate", "True (use zero-shot for an uncalibrated run)", calibrate)
        super().__init__(template=template, label_words=label_words, prompt=prompt, calibrate=True, extra=extra,
                         strategy=strategy, endpoint=endpoint, top_k=top_k)


@register
class ICL(_TextPromptBaseline):
    """In-context learning: ``k`` demonstrations per class from the few-shot train split of
    ``seed`` (``shot`` per class, default the task's), shuffled with ``seed``, joined by
    ``separator`` and placed before the query; ``calibrate``: contextual calibration, with the
    content-free inputs behind the same demonstrations."""

    name = "icl"
    tiny_config: ClassVar[dict[str, Any]] = {"k": 1}
    contract_exempt: ClassVar[dict[str, str]] = ZeroShot.contract_exempt

    def __init__(self, *, k: int = 4, seed: int = 13, shot: int | None = None, template: str | None = None,
                 label_words: Sequence[str] | None = None, separator: str = "\n\n", calibrate: bool = False):
        check(isinstance(calibrate, bool), "calibrate", "True or False", calibrate)
        self.calibrate = calibrate
        check(isinstance(k, int) and k >= 1, "k", "an integer >= 1", k)
        check(isinstance(seed, int), "seed", "an integer", seed)
        check(shot is None or (isinstance(shot, int) and shot >= k), "shot", f"None or an integer >= k ({k})", shot)
        self.k = k
        self.seed = seed
        self.shot = shot
        self.template = template
        self.label_words = tuple(label_words) if label_words is not None else None
        self.separator = separator

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"k": self.k, "seed": self.seed, "shot": self.shot, "template": self.template,
                "label_words": None if self.label_words is None else list(self.label_words),
                "separator": self.separator, "calibrate": self.calibrate}

    def fit(self, client: Any, task: Task) -> ICL:
        """Draw the demonstrations (no query is sent)."""
        self._set_prompt(self.template or task.template, self.label_words or task.label_words, task)
        train = task.few_shot(seed=self.seed, k=self.shot).train
        rng = np.random.default_rng(self.seed)
        chosen: list[int] = []
        for c in range(len(task.labels)):
            idx = [i for i, ex in enumerate(train) if ex.label == c]
            check(len(idx) >= self.k, "k", f"at most the {len(idx)} few-shot train examples of class {c}", self.k)
            chosen.extend(int(i) for i in rng.choice(idx, size=self.k, replace=False))
        demos = [train[i] for i in rng.permutation(chosen)]
        # a demonstration is exactly what the model is asked to complete, with the answer filled in
        self.prefix_ = "".join(fill(self.template_, d) + self.label_words_[d.label] + self.separator for d in demos)
        self.demos_ = demos
        self._no_search()
        return self


@register
class BestOfN(_TextPromptBaseline):
    """Best of N manual templates on the few-shot dev split of ``seed``. ``templates`` is a list
    of ``{"template": ..., "label_words": [...]}`` (default: the task's ``templates``)."""

    name = "best-of-n"
    tiny_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, templates: Sequence[dict[str, Any]] | None = None, seed: int = 13):
        check(templates is None or len(templates) >= 1, "templates", "None or at least one template", templates)
        check(isinstance(seed, int), "seed", "an integer", seed)
        self.templates = [dict(t) for t in templates] if templates is not None else None
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"templates": self.templates, "seed": self.seed}

    def fit(self, client: Any, task: Task) -> BestOfN:
        """Score every candidate on the few-shot dev split and keep the best."""
        client.require(*self.needs, needed_by=self.name)
        candidates = [(t["template"], tuple(t["label_words"])) for t in self.templates] if self.templates \
            else list(task.templates)
        dev = task.few_shot(seed=self.seed).dev
        search = client.with_budget(Budget())
        labels = np.array([ex.label for ex in dev])
        best, self.dev_scores_, self.curve_ = -1.0, [], []
        chosen = candidates[0]  # kept if the budget runs out before any candidate is scored
        self.stopped_by_ = "candidates"
        for i, (template, words) in enumerate(candidates):
            self._set_prompt(template, words, task)
            try:
                logprobs, _ = score_prompts(search, self._prompts(dev), words, progress=False)
            except BudgetExhausted:
                self.stopped_by_ = "BudgetExhausted"
                break
            pred = logprobs.argmax(axis=1)
            acc = float((pred == labels).mean())
            value = acc if task.metric == "accuracy" else macro_f1(labels, pred, len(task.labels))
            self.dev_scores_.append(value)
            if value > best:
                best, chosen = value, (template, words)
                best_acc = acc
            self.curve_.append({"calls": i + 1, "dev_accuracy": best_acc})
        self._set_prompt(chosen[0], chosen[1], task)
        self.budget_spent_ = search.budget.summary()
        # the dev split is what best-of-n searches on: its scoring is the search, counted above
        self.eval_spent_ = Budget().summary()
        return self



def baseline_names() -> list[str]:
    """The registered methods that are text-prompt baselines (no search of a prompt of their own)."""
    from . import get, names

    return [n for n in names() if issubclass(get(n), _TextPromptBaseline)]
