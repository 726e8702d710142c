"""A task = data + template + verbalizer (label words) + metric.

Templates are causal-LM templates with the answer at the end: the label words (each with its
leading space, e.g. ``" great"``) are scored right after the filled template. Three slots exist:

* ``{text}`` (required) and ``{text_pair}`` (sentence-pair tasks);
* ``{prompt}``, where a learned discrete prompt goes. When a template has no ``{prompt}``, a
  non-empty prompt is prepended with one space; an empty prompt fills the slot with nothing
  and swallows one space next to it, so ``"{prompt} {text} It was"`` and ``"{text} It was"``
  give the same text when there is no prompt.

Soft prompts (BBT's ``soft_prompt`` extension) are not text: the server inserts them at the
start of every prompt (right after BOS) by default. A task may declare a
``soft_prompt_placeholder`` string that appears literally in its template; methods pass it to
the server as ``soft_prompt.placeholder`` to insert the soft prompt there instead.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, check

__all__ = ["Example", "FewShot", "Task", "fill", "subsample", "validate_template"]

METRICS = ("accuracy", "f1")
SPLITS = ("train", "dev", "test")
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SLOTS = ("text", "text_pair", "prompt")


@dataclass(frozen=True)
class Example:
    """One labelled example; ``label`` indexes the task's ``labels``."""

    text: str
    label: int
    text_pair: str | None = None


@dataclass(frozen=True)
class FewShot:
    """A few-shot split: k per class for training and a disjoint k per class for dev."""

    train: list[Example]
    dev: list[Example]


def validate_template(template: str, *, pair: bool = False, what: str = "template") -> None:
    """Raise :class:`ConfigError` unless ``template`` has ``{text}`` (and ``{text_pair}`` for a
    pair task), only known slots, and ends where the answer goes (no trailing whitespace, since
    label words carry their own leading space)."""
    check(isinstance(template, str) and "{text}" in template, what, "a string containing {text}", template)
    unknown = sorted({m for m in _SLOT.findall(template) if m not in _SLOTS})
    check(not unknown, what, f"free of slots other than {{{'}, {'.join(_SLOTS)}}}", template)
    if pair:
        check("{text_pair}" in template, what, "a string containing {text_pair} for a sentence-pair task", template)
    check(template == template.rstrip(), what,
          "a string ending where the answer goes (no trailing whitespace)", template)


def fill(template: str, example: Example, prompt: str = "") -> str:
    """The template filled with ``example`` and ``prompt`` (see the module docstring)."""
    if prompt and "{prompt}" not in template:
        template = "{prompt} " + template
    if not prompt:
        # swallow one space next to the empty slot: "{prompt} {text}" -> "{text}"
        template = template.replace("{prompt} ", "", 1) if "{prompt} " in template \
            else template.replace(" {prompt}", "", 1)
    values = {"text": example.text, "text_pair": example.text_pair or "", "prompt": prompt}
    # one pass, so a "{text}" inside the example's own text is never substituted again
    return _SLOT.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def subsample(examples: Sequence[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A seeded subsample of ``limit`` examples (original order kept); all of them when
    ``limit`` is None or not smaller than their number."""
    examples = list(examples)
    if limit is None or limit >= len(examples):
        return examples
    check(limit >= 1, "limit", "None or an integer >= 1", limit)
    idx = np.sort(np.random.default_rng(seed).choice(len(examples), size=limit, replace=False))
    return [examples[i] for i in idx]


@dataclass(frozen=True)
class Task:
    """A classification task. Build one with :func:`bbox_lfm.tasks.load_task`.

    ``templates`` are the manual (template, label words) pairs the baselines use (zero-shot
    and best-of-N); the first is ``(template, label_words)``. ``best_template`` indexes the one
    that scored best as measured (built-in tasks: ``benchmarks/results/baselines.json``), where
    prompt methods start by default (:mod:`bbox_lfm.tasks.start`); None when unmeasured.
    ``shot`` is the default k of :meth:`few_shot`. ``single_token`` says the label words must
    be one token each (checked against a provider by :meth:`check_label_words`).
    """

    name: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    template: str
    metric: str = "accuracy"
    eval_split: str = "test"
    templates: tuple[tuple[str, tuple[str, ...]], ...] = ()
    pair: bool = False
    shot: int = 16
    single_token: bool = True
    soft_prompt_placeholder: str | None = None
    best_template: int | None = None
    source: str = field(default="", compare=False)
    loaders: dict[str, Callable[[], list[Example]]] = field(default_factory=dict, repr=False, compare=False)
    kshot_loader: Callable[[int, int], FewShot | None] | None = field(default=None, repr=False, compare=False)
    _cache: dict[str, list[Example]] = field(default_factory=dict, repr=False, compare=False)
    _kshot: dict[str, FewShot | None] = field(default_factory=dict, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "a non-empty string", self.name)
        check(len(self.labels) >= 2, "labels", "at least two label names", list(self.labels))
        check(len(set(self.labels)) == len(self.labels), "labels", "distinct names", list(self.labels))
        check(self.metric in METRICS, "metric", f"one of {METRICS}", self.metric)
        check(self.shot >= 1, "shot", "an integer >= 1", self.shot)
        check(self.eval_split in SPLITS, "eval_split", f"one of {SPLITS}", self.eval_split)
        self._check_words(self.label_words, "label_words")
        validate_template(self.template, pair=self.pair)
        if not self.templates:
            object.__setattr__(self, "templates", ((self.template, tuple(self.label_words)),))
        for i, (tpl, words) in enumerate(self.templates):
            validate_template(tpl, pair=self.pair, what=f"templates[{i}].template")
            self._check_words(words, f"templates[{i}].label_words")
        if self.best_template is not None:
            check(isinstance(self.best_template, int) and 0 <= self.best_template < len(self.templates),
                  "best_template", f"None or an index into the {len(self.templates)} templates", self.best_template)
        if self.soft_prompt_placeholder is not None:
            check(self.soft_prompt_placeholder in self.template, "soft_prompt_placeholder",
                  f"a string that appears in the template {self.template!r}", self.soft_prompt_placeholder)

    def _check_words(self, words: Sequence[str], what: str) -> None:
        check(len(words) == len(self.labels), what, f"one word per label ({len(self.labels)}: {list(self.labels)})",
              list(words))
        check(all(isinstance(w, str) and w.strip() for w in words), what, "non-empty strings", list(words))
        check(len(set(words)) == len(words), what, "distinct words", list(words))

    # -- data -------------------------------------------------------------------------------

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this task has data for (``eval`` is an alias of ``eval_split``)."""
        return tuple(s for s in SPLITS if s in self.loaders)

    def split(self, name: str) -> list[Example]:
        """The examples of ``name``: ``train``, ``dev``, ``test`` or ``eval`` (the split to report)."""
        key = self.eval_split if name == "eval" else name
        check(key in self.loaders, "split", f"one of {[*self.splits, 'eval']} for task {self.name!r}", name)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self.loaders[key]()
            return list(self._cache[key])

    def few_shot(self, seed: int = 13, k: int | None = None) -> FewShot:
        """The few-shot split for ``seed``: the shipped ``k-shot/<k>-<seed>`` split when there is
        one, else true few-shot sampling from train (k per class for train and a disjoint k per
        class for dev, seeded). ``k`` defaults to the task's ``shot`` (16 for built-in tasks)."""
        k = self.shot if k is None else k
        check(isinstance(k, int) and k >= 1, "k", "an integer >= 1", k)
        if self.kshot_loader is not None:
            key = f"k-shot/{k}-{seed}"
            with self._lock:
                if key not in self._kshot:
                    self._kshot[key] = self.kshot_loader(k, seed)
                shipped = self._kshot[key]
            if shipped is not None:
                return FewShot(train=list(shipped.train), dev=list(shipped.dev))
        if "train" not in self.loaders:
            raise ConfigError(f"few_shot(seed={seed}, k={k}) must have a shipped {k}-shot split or a train "
                              f"split to sample from; task {self.name!r} has neither")
        return sample_few_shot(self.split("train"), n_labels=len(self.labels), k=k, seed=seed, task=self.name)

    # -- text -------------------------------------------------------------------------------

    def format(self, example: Example, prompt: str = "") -> str:
        """The filled template for ``example`` (``prompt`` fills ``{prompt}`` or is prepended)."""
        return fill(self.template, example, prompt)

    def with_template(self, template: str, label_words: Sequence[str] | None = None) -> Task:
        """The same task and data with another template (and label words)."""
        words = tuple(label_words) if label_words is not None else self.label_words
        placeholder = self.soft_prompt_placeholder
        return dataclasses.replace(self, template=template, label_words=words, templates=((template, words),),
                                   soft_prompt_placeholder=placeholder if placeholder and placeholder in template
                                   else None, best_template=None, _cache=self._cache, _kshot=self._kshot, _lock=self._lock)

    def check_label_words(self, client: Any, label_words: Sequence[str] | None = None) -> bool | None:
        """Check that each label word is one token for ``client``'s model (see
        :func:`bbox_lfm.tasks.spec.count_tokens`): True when they are, None when the provider
        cannot tell (no ``echo``), ConfigError when one is not and the task requires it."""
        from .spec import count_tokens

        words = tuple(label_words) if label_words is not None else self.label_words
        counts = count_tokens(client, words)
        if counts is None:
            return None
        bad = {w: n for w, n in zip(words, counts) if n != 1}
        if bad and self.single_token:
            raise ConfigError(f"label_words must be single tokens for {client.model!r}; got {bad} "
                              "(word: token count)")
        return not bad


def sample_few_shot(train: Sequence[Example], *, n_labels: int, k: int, seed: int, task: str = "") -> FewShot:
    """True few-shot sampling: per class, 2k examples drawn without replacement with
    ``numpy.random.default_rng(seed)``; the first k go to train, the next k to dev; each split
    is shuffled with the same generator."""
    rng = np.random.default_rng(seed)
    by_class: list[list[int]] = [[] for _ in range(n_labels)]
    for i, ex in enumerate(train):
        by_class[ex.label].append(i)
    tr: list[int] = []
    dv: list[int] = []
    for c, idx in enumerate(by_class):
        if len(idx) < 2 * k:
            raise ConfigError(f"few_shot k must be at most half the train examples of each class; class {c} of "
                              f"task {task!r} has {len(idx)} examples, got k={k}")
        pick = rng.choice(idx, size=2 * k, replace=False)
        tr.extend(int(i) for i in pick[:k])
        dv.extend(int(i) for i in pick[k:])
    rng.shuffle(tr)
    rng.shuffle(dv)
    return FewShot(train=[train[i] for i in tr], dev=[train[i] for i in dv])
