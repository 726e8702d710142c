"""``bbox-lfm tune METHOD``: run any registered method on a task and write the results JSON.

    bbox-lfm tune bbt --task sst2 --seed 13 --budget 40 --local --out r.json
    bbox-lfm tune bbtv2 --task sst2 --seed 13 --budget 40 --local --cache-mode replay --out r.json
    bbox-lfm tune bdpl --task-spec my_task.toml --budget 200 --base-url http://127.0.0.1:8000/v1 \\
        --set prompt_length=5 --out r.json
    bbox-lfm tune bbt --task sst2 --template-index 0 --budget 40 --local --out r.json   # the paper's template
    bbox-lfm tune bbt --task sst2 --prompt-from best-of-n.json --budget 40 --local --out r.json

Every run starts from a prompt (:mod:`bbox_lfm.commands._start`): the task's best manual
template unless ``--template``, ``--template-index`` or ``--prompt-from`` says otherwise. The
results record it (``config.start``) with its own dev and eval scores (``extra.start``), and the
start prompt stays the answer unless the search clearly beats it on dev (``extra.selection``;
``--guard`` picks the rule, ``--no-guard`` reports the searched prompt whatever it scores).

The method is built as ``get(METHOD)(budget=N, seed=S, **sets)``; ``--set key=value`` values are
read as JSON when they parse (``--set sigma=0.5``, ``--set init='"zeros"'`` or just
``--set init=zeros``). The run goes through :func:`bbox_lfm.methods.harness.run`: fit (with a
progress bar of calls, best loss and dev accuracy), dev and eval scoring, a RunResult. The
projected number of search calls is printed first, the budget report last.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any

from ..errors import ConfigError
from . import _zoo_tune
from ._common import Choices, add_client_args, open_client
from ._start import add_start_args, start_from_args
from .eval import add_task_args, task_from_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("tune", help="tune a prompt with a method (bbt, bbtv2, bdpl, ...); write results JSON")
    p.add_argument("method", choices=Choices(_method_names), metavar="METHOD",
                   help="a registered method: %(choices)s")
    add_task_args(p)
    add_start_args(p)
    p.add_argument("--seed", type=int, default=13, help="few-shot split and search seed (default 13)")
    p.add_argument("--budget", type=int, required=True,
                   help="search calls: passes over the training batch, whatever the requests per pass")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a method hyperparameter (repeatable); values parse as JSON when they can")
    p.add_argument("--eval-limit", type=int, default=None, help="score a seeded subsample of N eval rows")
    p.add_argument("--no-guard", action="store_true",
                   help="report the searched prompt even where it does not clearly beat the start on dev")
    p.add_argument("--guard", choices=["auto", "rows", "ce"], default="auto",
                   help="how the searched prompt must beat the start on dev: the gold label's log-probability "
                        "(ce), or rows it fixes minus rows it breaks (rows); auto (default): ce where the method "
                        "gives label scores, else rows")
    p.add_argument("--out", required=True, help="results JSON path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_client_args(p)
    _zoo_tune.add_args(p)
    p.set_defaults(func=run)


def _method_names() -> list[str]:
    from ..methods import names

    return names()


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (JSON where it parses, else the string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set must be KEY=VALUE; got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _projected(method: Any, task: Any, client: Any) -> int | None:
    fn = getattr(method, "projected_calls", None)
    if fn is None:
        return None
    # a method whose count depends on the model (BBTv2: layers) takes the client too
    return int(fn(task, client=client) if "client" in inspect.signature(fn).parameters else fn(task))


def run(args: argparse.Namespace) -> int:
    """Tune, evaluate, write the results and report the budget."""
    from ..methods import get
    from ..methods.harness import run as run_method
    from ..results import write_result

    sets = parse_sets(args.sets)
    for fixed in ("budget", "seed"):
        if fixed in sets:
            raise ConfigError(f"--set {fixed}=... must not be used (use --{fixed}); got {sets[fixed]!r}")
    if _zoo_tune.is_zoo_method(get(args.method)):
        return _zoo_tune.run(args, get(args.method), sets)
    task = task_from_args(args)
    start = start_from_args(args, task)
    if start.extra:
        raise ConfigError(f"--prompt-from must give tune a text prompt to start from (a template, a discrete prompt); "
                          f"got a {'/'.join(start.extra)} from {args.prompt_from!r} (eval and distill use those)")
    task = start.apply(task)
    method = get(args.method)(budget=args.budget, seed=args.seed, **sets)
    with open_client(args) as client:
        client.require(*method.needs, needed_by=method.name)
        projected = _projected(method, task, client)
        print(f"{method.name} on {task.name}, seed {args.seed}: projected search calls "
              f"{projected if projected is not None else 'unknown'} (budget {args.budget}); "
              f"dev and eval scoring are counted apart", flush=True)
        result = run_method(method, client, task, seed=args.seed, eval_limit=args.eval_limit,
                            progress=not args.no_progress, start=start, guard=False if args.no_guard else args.guard)
        result.extra["method"] = dict(getattr(method, "extra_", {}) or {})
        write_result(args.out, result)
        for warning in result.extra["method"].get("warnings") or ():  # e.g. RLPrompt's collapse guard
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        ev, dev = result.eval, result.dev
        if "start" in result.extra:
            sel = result.extra["selection"]
            print(f"start prompt: eval {result.extra['start']['eval'].get('accuracy')}, dev "
                  f"{result.extra['start']['dev'].get('accuracy')}; searched prompt: eval "
                  f"{result.extra['search']['eval'].get('accuracy')}, dev {result.extra['search']['dev'].get('accuracy')}"
                  f"; kept: {sel['chosen']} (fixed {sel.get('fixed')}, broken {sel.get('broken')} dev rows)")
        spent, ev_spent = result.budget_spent, result.eval_spent
        print(f"eval {ev.get('accuracy')} (n={ev.get('n')}), dev {dev.get('accuracy')}; "
              f"search: {spent['calls']} calls (budget {args.budget}), {spent['requests']} requests sent "
              f"(+{spent['cache_hits']} from the cache), {spent['sequences']} sequences, {spent['tokens']} tokens; "
              f"dev/eval scoring: {ev_spent['calls']} calls, {ev_spent['requests']} requests; "
              f"wall {result.wall_s:.1f}s -> {args.out}")
    return 0
