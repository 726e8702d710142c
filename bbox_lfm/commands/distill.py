"""``bbox-lfm distill``: distil a queried teacher into a local MiniLM student; write results and the student.

    bbox-lfm distill --task sst2 --local --student minilm-head --transfer unlabeled \\
        --budget-sequences 1000 --selection active --seed 13 --out runs/distill
    bbox-lfm distill --task-spec my_task.toml --base-url http://127.0.0.1:8000/v1 \\
        --transfer synthetic --budget-sequences 300 --prompt-from runs/bdpl.json --out runs/d2

The teacher is asked through the start prompt (:mod:`bbox_lfm.commands._start`): the task's best
manual template unless ``--template``, ``--template-index`` or ``--prompt-from`` says otherwise
(``--template-index 0`` is SST-2's ``{text} It was``, to which SmolLM2 answers " great" 98 % of
the time). ``--prompt-from`` takes an earlier run's template and prompt: a discrete prompt is
written into the template, a soft or deep prompt goes into every teacher request.

Writes ``OUT/results.json`` (the shared RunResult format: teacher sequences spent in
``budget_spent``; the student's accuracy and F1 in ``dev`` and ``eval``; in ``extra``: the
teacher's eval accuracy, student-teacher agreement, and seconds per example of each) and
``OUT/student/`` (``bbox_lfm.students.load_student`` reads it), plus ``OUT/method.json``.
Teacher scoring of the eval split and the speed probe are counted in ``eval_spent``, apart from
the distillation budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheMiss, check
from ._common import Choices, add_client_args, open_client
from ._start import add_start_args, start_from_args
from .eval import add_task_args, task_from_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("distill", help="distil a queried teacher into a local MiniLM student; write results JSON")
    add_task_args(p)
    add_start_args(p, template_help="the teacher's template, with {text} (and {text_pair})")
    p.add_argument("--student", default="minilm-head", choices=Choices(_students), metavar="STUDENT",
                   help="student model: %(choices)s")
    p.add_argument("--transfer", default="unlabeled", choices=Choices(lambda: _distill().TRANSFERS),
                   metavar="TRANSFER", help="transfer set: unlabeled texts, teacher-written texts, or both "
                                            "(%(choices)s)")
    p.add_argument("--unlabeled", default=None,
                   help="unlabeled texts: a .jsonl ({text[, text_pair]}) or .txt file (one a line); "
                        "default the task's train split with the labels hidden")
    p.add_argument("--budget-sequences", type=int, required=True, help="teacher sequences to spend")
    p.add_argument("--selection", default="random", choices=Choices(lambda: _distill().SELECTIONS),
                   metavar="SELECTION", help="which texts to label: %(choices)s")
    p.add_argument("--rounds", type=int, default=5, help="selection rounds")
    p.add_argument("--pool-size", type=int, default=4000, help="unlabeled texts considered (seeded sample)")
    p.add_argument("--gold-k", type=int, default=0, help="gold labels per class from the few-shot split (CE term)")
    p.add_argument("--teacher-signal", default="auto", choices=Choices(lambda: _distill().SIGNALS),
                   metavar="SIGNAL", help="soft label-word scores, or hard labels parsed from generated text "
                                          "(%(choices)s)")
    p.add_argument("--seed", type=int, default=13, help="few-shot split and every random choice (default 13)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on a seeded subsample of N eval rows")
    p.add_argument("--speed-n", type=int, default=64, help="examples timed for teacher vs student speed (0: skip)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_client_args(p)
    p.set_defaults(func=run)


def _students() -> list[str]:
    from ..students import STUDENTS

    return sorted(STUDENTS)


def _distill() -> Any:
    from ..methods import distill

    return distill


def read_unlabeled(path: str | Path) -> list[Any]:
    """Texts from a ``.jsonl`` file (``text`` and optional ``text_pair`` fields) or a text file."""
    path = Path(path)
    check(path.is_file(), "--unlabeled", "an existing file", str(path))
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if path.suffix != ".jsonl":
        return [ln.strip() for ln in lines]
    rows = [json.loads(ln) for ln in lines]
    return [r["text"] if r.get("text_pair") is None else (r["text"], r["text_pair"]) for r in rows]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of examples on which two predictors agree."""
    return float(np.mean(np.asarray(a) == np.asarray(b))) if len(a) else 0.0


def time_teacher(method: Any, client: Any, inputs: Sequence[Any]) -> float | None:
    """Seconds per example for the teacher, cache off (None in replay mode: nothing may be sent)."""
    if client.cache_mode == "replay" or not inputs:
        return None
    live = client.with_cache_mode("off") if client.store is not None else client
    t0 = time.perf_counter()
    method.teacher_.label(live, inputs)
    return (time.perf_counter() - t0) / len(inputs)


def time_student(student: Any, inputs: Sequence[Any]) -> float | None:
    """Seconds per example for the student, every input encoded afresh (no embedding cache)."""
    if not inputs:
        return None
    student.predict_proba(inputs[:8], progress=False, cache=False)  # warm-up: lazy loading is not inference
    t0 = time.perf_counter()
    student.predict_proba(inputs, progress=False, cache=False)
    return (time.perf_counter() - t0) / len(inputs)


def run(args: argparse.Namespace) -> int:
    """Distil through the harness, then evaluate the teacher, time both, write results and the student."""
    from ..budget import Budget
    from ..methods.distill import Distill
    from ..methods.harness import eval_examples
    from ..methods.harness import run as run_method
    from ..methods.teacher import OneLabelTeacherWarning, as_input
    from ..results import write_result
    from ..tasks import metrics_from_predictions

    task = task_from_args(args)
    start = start_from_args(args, task)
    task = start.apply(task)
    extra = dict(start.extra)
    method = Distill(student=args.student, transfer=args.transfer, budget=args.budget_sequences,
                     selection=args.selection, rounds=args.rounds, pool_size=args.pool_size, gold_k=args.gold_k,
                     teacher_signal=args.teacher_signal, teacher_extra=extra, seed=args.seed)
    unlabeled = read_unlabeled(args.unlabeled) if args.unlabeled else None
    out = Path(args.out)
    progress = not args.no_progress
    with open_client(args) as client:
        print(f"distill {task.name}: {args.student} from {client.model} ({client.profile.name}), transfer "
              f"{args.transfer}, selection {args.selection}, at most {args.budget_sequences} teacher sequences",
              flush=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OneLabelTeacherWarning)
            result = run_method(method, client, task, seed=args.seed, eval_limit=args.eval_limit,
                                progress=progress, fit_kwargs={"unlabeled": unlabeled, "progress": progress},
                                start=start)
        for w in caught:  # the method's advice, as a line of its own rather than a source location
            if issubclass(w.category, OneLabelTeacherWarning):
                print(f"warning: {w.message}", file=sys.stderr, flush=True)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        scorer = client.with_budget(Budget())  # teacher eval and timing: counted apart from the budget
        examples = eval_examples(task, eval_limit=args.eval_limit)
        # the student is local: predicting again costs no query (its embeddings are cached)
        student_pred = method.predict(client, examples, progress=False)
        inputs = [as_input(ex) for ex in examples]
        teacher_lp, misses = method.teacher_.label(scorer, inputs, progress=progress, desc="teacher eval")
        parsed = ~np.isnan(teacher_lp).any(axis=1)
        teacher_pred = np.where(parsed, np.nan_to_num(teacher_lp, nan=-np.inf).argmax(axis=1), -1)
        teacher = metrics_from_predictions([ex.label for ex in examples], teacher_pred, len(task.labels),
                                           misses=misses).to_json()
        try:
            t_teacher = time_teacher(method, scorer, inputs[:args.speed_n])
        except CacheMiss:
            t_teacher = None
        t_student = time_student(method.student_, inputs[:args.speed_n])
        method.save(out / "method.json", student_dir=out / "student")
        result.eval_spent = {k: v + scorer.budget.summary().get(k, 0) for k, v in result.eval_spent.items()}
        result.wall_s = round(time.perf_counter() - t0, 3)
        result.prompt = {"template": task.template, "label_words": list(task.label_words), **extra}
        result.extra.update(
            {"teacher_eval": teacher, "agreement": agreement(student_pred, teacher_pred),
             "teacher_sequences_used": method.n_queried_, "transfer_size": len(method.inputs_),
             "teacher_s_per_example": t_teacher, "student_s_per_example": t_student,
             "speedup": (t_teacher / t_student) if t_teacher and t_student else None,
             "speed_n": min(args.speed_n, len(inputs)), "template": task.template,
             "label_words": list(task.label_words), "student_dir": "student", "stats": method.stats_})
        write_result(out / "results.json", result)
    ev = result.eval
    speed = f", {result.extra['speedup']:.1f}x faster than the teacher" if result.extra["speedup"] else ""
    print(f"student eval accuracy {ev['accuracy']:.4f} (teacher {teacher['accuracy']:.4f}, agreement "
          f"{result.extra['agreement']:.4f}, n={ev['n']}){speed}; teacher sequences sent "
          f"{method.budget_spent_['sequences']:.0f} (used {method.n_queried_}, cache hits "
          f"{method.budget_spent_['cache_hits']}) -> {out / 'results.json'}", file=sys.stdout)
    return 0
