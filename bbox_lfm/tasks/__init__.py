"""Tasks: data, templates, label words (verbalizers), few-shot splits, metrics and evaluation.

>>> from bbox_lfm.tasks import load_task, evaluate
>>> task = load_task("sst2")                      # or a path to a .toml / .json task spec
>>> fs = task.few_shot(seed=13)                   # 16 per class for train and for dev
>>> m = evaluate(client, task, "eval", limit=64)  # doctest: +SKIP
"""

from __future__ import annotations

from .calibration import CONTENT_FREE, apply_calibration
from .evaluate import content_free_prompts, evaluate, score_prompts
from .metrics import Metrics, accuracy, macro_f1, metrics_from_predictions
from .spec import count_tokens, load_task, task_from_spec
from .start import Start, start_point
from .task import Example, FewShot, Task, fill, subsample

__all__ = ["CONTENT_FREE", "Example", "FewShot", "Metrics", "Start", "Task", "accuracy", "apply_calibration",
           "content_free_prompts", "count_tokens", "evaluate", "fill", "load_task", "macro_f1",
           "metrics_from_predictions", "score_prompts", "start_point", "subsample", "task_from_spec"]
