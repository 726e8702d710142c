"""``bbox-lfm eval``: score a manual prompt (or a baseline) on a task and write the results JSON.

    bbox-lfm eval --task sst2 --template "{text} It was" --label-words " bad" " good" --local \\
        --limit 64 --out r.json
    bbox-lfm eval --task-spec my_task.toml --base-url http://127.0.0.1:8000/v1 --out r.json
    bbox-lfm eval --task agnews --method calibrated --local --out r.json      # contextual calibration
    bbox-lfm eval --task sst2 --prompt-from runs/bbt.json --local --out r.json  # an earlier run's prompt

The prompt starts where ``tune`` and ``distill`` start (:mod:`bbox_lfm.commands._start`): the
task's best manual template unless ``--template``, ``--template-index`` or ``--prompt-from``
says otherwise (best-of-n chooses among the task's templates itself).

The run goes through the same harness as every method (:func:`bbox_lfm.methods.harness.run`):
``dev`` is the few-shot dev split of ``--seed`` (None for a task without few-shot data),
``eval`` the task's eval split, or a seeded subsample of ``--limit`` rows of it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CacheMiss, check
from ._common import Choices, add_client_args, open_client, print_json
from ._start import add_start_args, start_from_args


def _baselines() -> list[str]:
    from ..methods.baselines import baseline_names

    return baseline_names()


def add_task_args(p: argparse.ArgumentParser) -> None:
    """``--task NAME`` or ``--task-spec FILE`` (one of them is required)."""
    g = p.add_argument_group("task")
    g.add_argument("--task", default=None, help="built-in task: sst2, mr, agnews, rte, mrpc, snli, sample")
    g.add_argument("--task-spec", default=None, help="a task spec file (.toml or .json), in place of --task")


def task_from_args(args: argparse.Namespace) -> Any:
    """The task that ``--task`` / ``--task-spec`` name."""
    from ..tasks import load_task

    check((args.task is None) != (args.task_spec is None), "--task / --task-spec", "exactly one of them",
          {"task": args.task, "task_spec": args.task_spec})
    return load_task(args.task_spec or args.task)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("eval", help="evaluate a manual prompt or a baseline on a task; write results JSON")
    add_task_args(p)
    add_start_args(p)
    p.add_argument("--prompt", default="", help="discrete prompt for the template's {prompt} slot (or prepended)")
    p.add_argument("--method", default="zero-shot", choices=Choices(_baselines), metavar="METHOD",
                   help="baseline to run: %(choices)s (default zero-shot; calibrated = zero-shot with contextual "
                        "calibration)")
    p.add_argument("--calibrate", action="store_true",
                   help="contextual calibration for zero-shot or icl (three content-free prompts scored too)")
    p.add_argument("--k", type=int, default=4, help="demonstrations per class for --method icl")
    p.add_argument("--seed", type=int, default=13, help="few-shot split seed (dev split, ICL demonstrations)")
    p.add_argument("--split", default="eval", help="split to evaluate: eval (the task's), train, dev or test")
    p.add_argument("--limit", type=int, default=None, help="a seeded subsample of N rows of the split")
    p.add_argument("--out", default=None, help="results JSON path (default: print it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_client_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the results."""
    from ..methods import get
    from ..methods.harness import run as run_method
    from ..results import write_result

    task = task_from_args(args)
    start = None
    if args.method == "best-of-n":
        given = [f for f, v in (("--template", args.template), ("--label-words", args.label_words),
                                ("--template-index", args.template_index), ("--prompt-from", args.prompt_from),
                                ("--calibrate", args.calibrate or None)) if v is not None]
        check(not given, "--method best-of-n", "run without start-prompt flags (it picks among the task's "
              "templates)", given)
    else:
        start = start_from_args(args, task)
        task = start.apply(task)
    single = {"prompt": args.prompt, "template": task.template, "label_words": task.label_words,
              "extra": (start.extra or None) if start else None}
    kw: dict[str, Any] = {"zero-shot": {**single, "calibrate": args.calibrate}, "calibrated": single,
                          "icl": {"k": args.k, "seed": args.seed, "calibrate": args.calibrate},
                          "best-of-n": {"seed": args.seed}}[args.method]
    method = get(args.method)(**kw)
    with open_client(args) as client:
        if task.single_token:
            try:
                ok = task.check_label_words(client)
            except CacheMiss:
                ok = None  # replaying a run that never checked: nothing may be sent
            if ok is None:
                print("bbox-lfm: note: the provider cannot show its tokenization; label words not checked",
                      file=sys.stderr)
        result = run_method(method, client, task, seed=args.seed, eval_limit=args.limit, eval_split=args.split,
                            progress=not args.no_progress, start=start)
    if args.out:
        write_result(args.out, result)
        print_json({"out": args.out, "task": result.task, "method": result.method, "dev": result.dev,
                    "eval": result.eval, "eval_spent": result.eval_spent})
    else:
        print_json(result.to_json())
    return 0
