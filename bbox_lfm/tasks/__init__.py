"""Tasks: data, templates, label words (verbalizers), few-shot splits, metrics and evaluation.

>>> from bbox_lfm.tasks import load_task, evaluate
>>> task = load_task("sst2")                      # or a path to a .toml / .json task spec
>>> fs = task.few_shot(seed=13)                   # 16 per class for train and for dev
>>> m = evaluate(client, task, "eval", limit=64)  # doctest: +SKIP
"""

from __future__ import annotations

from .evaluate import evaluate, score_prompts
from .metrics import Metrics, accuracy, macro_f1, metrics_from_predictions
from .spec import count_tokens, load_task, task_from_spec
from .task import Example, FewShot, Task, fill, subsample

__all__ = ["Example", "FewShot", "Metrics", "Task", "accuracy", "count_tokens", "evaluate", "fill", "load_task",
           "macro_f1", "metrics_from_predictions", "score_prompts", "subsample", "task_from_spec"]
