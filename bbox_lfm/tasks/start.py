"""Where a prompt method starts: the user's template, one of the task's, or an earlier run's.

A user comes with a prompt already written. :func:`start_point` turns what they name into a
:class:`Start` (template, label words, and an earlier run's prompt where there is one):

* ``template`` (with ``label_words``): a template of their own;
* ``template_index``: one of the task's manual templates (``task.templates``);
* ``prompt_from``: a results file of an earlier run (best-of-N, zero-shot, ICL, BDPL, BBT...):
  its template and label words, with its prompt folded in: a discrete prompt fills the
  template's ``{prompt}`` slot (or is prepended), ICL demonstrations go in front, and a soft or
  deep prompt rides along as request fields (``extra``: scored by ``eval``, used by ``distill``'s
  teacher; a prompt search starts from text only);
* nothing: the task's best manual template as measured (``task.best_template``; built-in tasks:
  ``benchmarks/results/baselines.json``), else its first template. ``default="first"`` takes the
  first (the papers' template) instead.

``start.apply(task)`` is the task with that template; ``start.to_json()`` is what a results file
records in ``config["start"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, check
from .task import Task, validate_template

__all__ = ["Start", "reload_task", "start_point"]

DEFAULTS = ("best", "first")


@dataclass(frozen=True)
class Start:
    """A start prompt: ``template`` and ``label_words``, request fields ``extra`` (a soft or deep
    prompt from an earlier run, or empty), and ``origin``, which says where it came from."""

    template: str
    label_words: tuple[str, ...]
    origin: str
    template_index: int | None = None
    prompt_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, task: Task) -> Task:
        """``task`` with this start's template and label words."""
        if task.template == self.template and tuple(task.label_words) == self.label_words:
            return task
        return task.with_template(self.template, self.label_words)

    def to_json(self) -> dict[str, Any]:
        """What ``config["start"]`` records (a soft or deep prompt by its shape only)."""
        out: dict[str, Any] = {"template": self.template, "label_words": list(self.label_words),
                               "origin": self.origin}
        if self.template_index is not None:
            out["template_index"] = self.template_index
        if self.prompt_from is not None:
            out["prompt_from"] = self.prompt_from
        if self.extra:
            out["extra"] = {k: {"shape": v.get("shape")} if isinstance(v, Mapping) else v
                            for k, v in self.extra.items()}
        return out


def _words(words: Sequence[str]) -> tuple[str, ...]:
    """Label words with a leading space (added when missing: they follow the template)."""
    return tuple(w if w[:1].isspace() else " " + w for w in words)


def start_point(task: Task, *, template: str | None = None, label_words: Sequence[str] | None = None,
                template_index: int | None = None, prompt_from: str | os.PathLike[str] | None = None,
                default: str = "best") -> Start:
    """The :class:`Start` the arguments name (see the module docstring); at most one of
    ``template``, ``template_index`` and ``prompt_from``. ``label_words`` go with ``template``
    (default: the task's) or replace a ``template_index`` template's."""
    check(default in DEFAULTS, "default", f"one of {DEFAULTS}", default)
    given = {k: v for k, v in (("template", template), ("template_index", template_index),
                               ("prompt_from", prompt_from)) if v is not None}
    check(len(given) <= 1, "template / template_index / prompt_from", "at most one of them", given)
    if prompt_from is not None:
        check(label_words is None, "label_words", "unset with prompt_from (the run's own label words are used)",
              label_words)
        return _from_results(task, Path(prompt_from))
    if template is not None:
        words = _words(label_words) if label_words is not None else tuple(task.label_words)
        start = Start(template=template, label_words=words, origin="template given")
    else:
        if template_index is None:
            index = task.best_template if default == "best" and task.best_template is not None else 0
            origin = ("the task's best manual template (as measured)" if default == "best"
                      and task.best_template is not None else "the task's first template")
        else:
            check(isinstance(template_index, int) and 0 <= template_index < len(task.templates), "template_index",
                  f"an index into the task's {len(task.templates)} templates (0..{len(task.templates) - 1})",
                  template_index)
            index, origin = template_index, f"template_index {template_index}"
        tpl, words = task.templates[index]
        if label_words is not None:
            words, origin = _words(label_words), origin + ", label words given"
        start = Start(template=tpl, label_words=tuple(words), origin=origin, template_index=index)
    _check(task, start)
    return start


def _check(task: Task, start: Start) -> None:
    validate_template(start.template, pair=task.pair)
    check(len(start.label_words) == len(task.labels), "label_words",
          f"one word per label ({len(task.labels)}: {list(task.labels)})", list(start.label_words))


def _fold(template: str, prompt: str) -> str:
    """``template`` with a discrete ``prompt`` written into it, as :func:`~bbox_lfm.tasks.fill` would."""
    if not prompt:
        return template.replace("{prompt} ", "", 1) if "{prompt} " in template else template.replace(" {prompt}", "", 1)
    if "{prompt}" in template:
        return template.replace("{prompt}", prompt, 1)
    return prompt + " " + template


def _is_tensor(value: Any) -> bool:
    return isinstance(value, Mapping) and "shape" in value and "data" in value


def _from_results(task: Task, path: Path) -> Start:
    """The start an earlier run's results file describes."""
    from ..results import read_result

    if not path.is_file():
        raise ConfigError(f"prompt_from must be an existing results file; got {str(path)!r} (not found)")
    r = read_result(path)
    prompt, config = r["prompt"], r.get("config") or {}
    recorded = config.get("start") if isinstance(config.get("start"), Mapping) else None
    extra: dict[str, Any] = {}
    text = ""
    prefix = ""
    if isinstance(prompt, Mapping) and "template" in prompt:  # a baseline's prompt: template, words, ...
        template, words = str(prompt["template"]), tuple(prompt["label_words"])
        text, prefix = str(prompt.get("prompt") or ""), str(prompt.get("prefix") or "")
        extra = {k: dict(prompt[k]) for k in ("soft_prompt", "deep_prompt") if k in prompt}
    elif recorded is not None:
        template, words = str(recorded["template"]), tuple(recorded["label_words"])
        if isinstance(prompt, str):
            text = prompt
        elif _is_tensor(prompt):  # BBT: (n, D); BBTv2: (L, n, D)
            extra = {"soft_prompt" if len(prompt["shape"]) == 2 else "deep_prompt": dict(prompt)}
        elif isinstance(prompt, Mapping) and ("soft_prompt" in prompt or "deep_prompt" in prompt):
            extra = {k: dict(prompt[k]) for k in ("soft_prompt", "deep_prompt") if k in prompt}
        elif prompt is not None:
            raise ConfigError(f"prompt_from must name a results file whose prompt is text, a template or a soft/deep "
                              f"prompt; got a prompt of type {type(prompt).__name__} in {str(path)!r}")
    else:
        raise ConfigError(f"prompt_from must name a results file that records its template (a baseline's prompt, "
                          f"or config.start); {str(path)!r} has neither (a run from before start points existed?)")
    if r.get("task") and r["task"] != task.name:
        raise ConfigError(f"prompt_from must come from a run on task {task.name!r}; got a run on {r['task']!r} "
                          f"({str(path)!r})")
    template = prefix + _fold(template, text)
    start = Start(template=template, label_words=_words(words), origin=f"{r['method']} run {path.name}",
                  prompt_from=str(path), extra=extra)
    _check(task, start)
    return start


def reload_task(source: str, template: str | None = None, label_words: Sequence[str] | None = None) -> Task:
    """The task a fitted method was trained on, for :meth:`predict` after ``load``: the task
    ``source`` names (:func:`~bbox_lfm.tasks.load_task`) with the template it started from."""
    from .spec import load_task

    task = load_task(source)
    if template is None or (template == task.template and tuple(label_words or task.label_words) == task.label_words):
        return task
    return task.with_template(template, label_words)
