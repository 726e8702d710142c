"""``bbox-lfm eval``: score a manual prompt (or a baseline) on a task and write the results JSON.

    bbox-lfm eval --task sst2 --template "{text} It was" --label-words " bad" " good" --local \\
        --limit 64 --out r.json
    bbox-lfm eval --task-spec my_task.toml --base-url http://127.0.0.1:8000/v1 --out r.json

The run goes through the same harness as every method (:func:`bbox_lfm.methods.harness.run`):
``dev`` is the few-shot dev split of ``--seed`` (None for a task without few-shot data),
``eval`` the task's eval split, or a seeded subsample of ``--limit`` rows of it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CacheMiss, check
from ._common import add_client_args, open_client, print_json

BASELINES = ("zero-shot", "icl", "best-of-n")


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
    p.add_argument("--template", default=None, help="template with {text} (and {text_pair}); default: the task's")
    p.add_argument("--template-index", type=int, default=0,
                   help="which of the task's manual templates (and its label words) to use (default 0)")
    p.add_argument("--label-words", nargs="+", default=None,
                   help="one word per label, scored right after the template (a leading space is added when "
                        "missing); default: the task's")
    p.add_argument("--prompt", default="", help="discrete prompt for the template's {prompt} slot (or prepended)")
    p.add_argument("--method", default="zero-shot", choices=BASELINES, help="baseline to run (default zero-shot)")
    p.add_argument("--k", type=int, default=4, help="demonstrations per class for --method icl")
    p.add_argument("--seed", type=int, default=13, help="few-shot split seed (dev split, ICL demonstrations)")
    p.add_argument("--split", default="eval", help="split to evaluate: eval (the task's), train, dev or test")
    p.add_argument("--limit", type=int, default=None, help="a seeded subsample of N rows of the split")
    p.add_argument("--out", default=None, help="results JSON path (default: print it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_client_args(p)
    p.set_defaults(func=run)


def _words(words: list[str] | None) -> list[str] | None:
    return None if words is None else [w if w[:1].isspace() else " " + w for w in words]


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the results."""
    from ..methods import get
    from ..methods.harness import run as run_method
    from ..results import write_result

    task = task_from_args(args)
    check(0 <= args.template_index < len(task.templates), "--template-index", f"in [0, {len(task.templates) - 1}]",
          args.template_index)
    if args.template_index:
        task = task.with_template(*task.templates[args.template_index])
    words = _words(args.label_words)
    if args.template is not None or words is not None:
        task = task.with_template(args.template or task.template, words)
    kw: dict[str, Any] = {"zero-shot": {"prompt": args.prompt, "template": task.template,
                                        "label_words": task.label_words}, "icl": {"k": args.k, "seed": args.seed},
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
                            progress=not args.no_progress)
    if args.out:
        write_result(args.out, result)
        print_json({"out": args.out, "task": result.task, "method": result.method, "dev": result.dev,
                    "eval": result.eval, "eval_spent": result.eval_spent})
    else:
        print_json(result.to_json())
    return 0
