"""Baselines every method must beat: SmolLM2-135M-Instruct on the local server.

Zero-shot with the task's first two manual templates, ICL (k = 4 demonstrations per class from
the 16-shot train split) and best-of-N (the task's manual templates, chosen on the 16-shot dev
split), on sst2, mr, agnews and rte, seeds 13, 21 and 42, through :func:`bbox_lfm.methods.harness.run`.

    python benchmarks/baselines.py                       # the full eval splits (hours on 2 CPU cores)
    python benchmarks/baselines.py --limit 500 --tasks sst2 rte --seeds 13

Resumable: runs the results file already has (same task, seed, baseline and eval rows) are kept
as measured and skipped (``--redo`` runs them again); every answer goes to the SQLite cache
``benchmarks/.cache/baselines.sqlite``, so a rerun replays an interrupted run and continues; the JSON (``benchmarks/results/baselines.json``) is
rewritten after each run. ``--limit N`` scores a seeded subsample (seed 0, the same rows for
every method and seed) of each eval split larger than N, and the JSON says so per run
(``extra.eval_n``, ``extra.eval_limit``) and in its ``eval_rows`` table. The summary table is
printed as Markdown for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))  # benchmarks/common.py
import bundle as bundle_file  # benchmarks/bundle.py
from common import cpu_flags

from bbox_lfm import Client
from bbox_lfm.commands.report import runs_table, summary_table
from bbox_lfm.methods import get
from bbox_lfm.methods.harness import run
from bbox_lfm.tasks import load_task


def configs(task: Any, seed: int) -> list[tuple[str, Any]]:
    """(label, method) for every baseline of one task and seed."""
    out = []
    for i, (template, words) in enumerate(task.templates[:2]):
        out.append((f"zero-shot (template {i + 1})", get("zero-shot")(template=template, label_words=words)))
    out.append(("icl (k=4)", get("icl")(k=4, seed=seed)))
    out.append((f"best-of-{len(task.templates)}", get("best-of-n")(seed=seed)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["sst2", "mr", "agnews", "rte"])
    p.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    p.add_argument("--methods", nargs="+", default=None, help="labels to run (prefix match), default all")
    p.add_argument("--limit", type=int, default=None, help="seeded subsample of each eval split larger than N")
    p.add_argument("--base-url", default=None, help="a running bbox-lfm server (default: start one)")
    p.add_argument("--cache", default=str(HERE / ".cache" / "baselines.sqlite"))
    p.add_argument("--out", default=str(HERE / "results" / "baselines.json"))
    p.add_argument("--max-concurrency", type=int, default=2,
                   help="requests in flight; on a loaded CPU, many in flight can outlast the client timeout")
    p.add_argument("--timeout", type=float, default=600.0, help="client timeout per request (s)")
    p.add_argument("--redo", action="store_true",
                   help="run again what the results file already has (from the cache where it can)")
    args = p.parse_args()

    server = None
    if args.base_url is None:
        from bbox_lfm.serve import start_local

        server = start_local()
    out = Path(args.out)
    previous = bundle_file.load(out) if out.is_file() else {}
    # runs of earlier invocations stay; a run done again replaces its old entry
    runs = {_key(r): r for r in previous.get("runs", [])}
    t_start = time.perf_counter()
    try:
        Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
        with Client.local(server or args.base_url, cache=args.cache, max_concurrency=args.max_concurrency,
                          timeout=args.timeout) as client:
            tasks = {name: load_task(name) for name in args.tasks}
            for seed in args.seeds:  # every task at the first seed first: a cut-short run still covers them all
                for name, task in tasks.items():
                    for label, method in configs(task, seed):
                        if args.methods and not any(label.startswith(m) for m in args.methods):
                            continue
                        done = runs.get((name, seed, label))
                        if done and not args.redo and done["eval"]["n"] == _eval_rows(task, args.limit):
                            continue  # finished by an earlier invocation: keep what it measured
                        t0 = time.perf_counter()
                        result = run(method, client, task, seed=seed, eval_limit=args.limit, progress=sys.stderr.isatty())
                        result.extra["label"] = label
                        runs[_key(result.to_json())] = result.to_json()
                        print(f"{name} seed {seed} {label}: dev {result.dev['accuracy']:.3f} eval "
                              f"{result.eval['accuracy']:.3f} (n={result.eval['n']}) sent "
                              f"{result.eval_spent['requests']} eval requests, {time.perf_counter() - t0:.0f} s",
                              flush=True)
                        bundle_file.dump(out, bundle(list(runs.values()), args, client, time.perf_counter() - t_start),
                                         "baselines")
    finally:
        if server is not None:
            server.stop()
    all_runs = list(runs.values())
    print("\n" + summary_table(all_runs))
    print("\n" + runs_table(all_runs))
    return 0


def _eval_rows(task: Any, limit: int | None) -> int:
    """How many eval rows a run scores under ``--limit``."""
    n = len(task.split("eval"))
    return n if limit is None else min(n, limit)


def _key(r: dict[str, Any]) -> tuple[str, int, str]:
    return r["task"], r["seed"], r["extra"]["label"]


def bundle(runs: list[dict[str, Any]], args: argparse.Namespace, client: Client, wall_s: float) -> dict[str, Any]:
    """The results file: every run, how many eval rows each task used, and the summary table."""
    rows: dict[str, set[int]] = {}
    for r in runs:
        rows.setdefault(r["task"], set()).add(int(r["eval"]["n"]))
    return {"benchmark": "baselines", "model": client.model, "provider": client.profile.name,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU",
            "cpu_flags": cpu_flags(),
            "eval_rows": {t: sorted(n) for t, n in rows.items()},
            "eval_limit": args.limit, "note": "eval_rows below a task's full eval split mean a seeded subsample "
            "(seed 0) was scored, not the full split", "wall_s_last_invocation": round(wall_s, 1),
            "table_md": summary_table(runs), "runs": runs}


if __name__ == "__main__":
    sys.exit(main())
