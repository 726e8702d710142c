"""Replay finished leaderboard runs from their cache, sending nothing, to compare the two guards.

The leaderboard's runs choose between the start prompt and the searched one by the row-count
rule (``extra.selection``). This replays each named run through the current harness in cache
``replay`` mode (every query answered from ``benchmarks/.cache/leaderboard.sqlite``; a miss
raises instead of sending) and records, beside that rule's choice, what the gold-label
log-probability rule (``choose_ce``, ``extra.selection_ce``) would choose, with both prompts'
eval accuracy::

    python benchmarks/guard_replay.py sst2:13:bbt sst2:13:bbtv2 sst2:13:bdpl

writes ``benchmarks/results/guard/replay.json`` (merged with earlier entries; a run it already
holds is not replayed again unless ``--again``). A replay that reproduces the run's own eval
figures shows the cache holds the run whole. ``--into benchmarks/results/leaderboard.json``
writes the ce rule's choice into the runs that finished before the rule was recorded (their
``extra.selection_ce``, with ``selection_ce_source`` saying where it came from), so the
leaderboard's "ce guard" column covers them; it refuses a run whose eval figures the replay did
not reproduce.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="TASK:SEED:METHOD, as in leaderboard.json")
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--cache", default=str(HERE / ".cache" / "leaderboard.sqlite"))
    ap.add_argument("--out", default=str(HERE / "results" / "guard" / "replay.json"))
    ap.add_argument("--into", default=None, metavar="LEADERBOARD_JSON",
                    help="also write each replayed run's ce-rule choice into the matching run of this "
                         "leaderboard file (extra.selection_ce, where the run lacks it; same task, seed, "
                         "method, budget and eval n)")
    ap.add_argument("--again", action="store_true", help="replay runs that the --out file already holds")
    args = ap.parse_args(argv)

    from bbox_lfm import Client
    from bbox_lfm.methods import get
    from bbox_lfm.methods.harness import run
    from bbox_lfm.models import DEFAULT_MODEL_ID
    from bbox_lfm.tasks import load_task, start_point

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    doc.update({"benchmark": "guard_replay", "budget": args.budget, "cache": Path(args.cache).name})
    doc.setdefault("runs", {})
    for item in args.runs:
        if item in doc["runs"] and not args.again:
            print(item, "already replayed (--again replays it)", flush=True)
            continue
        task_name, seed_s, name = item.split(":")
        seed, task = int(seed_s), load_task(task_name)
        # a port nothing listens on: replay mode answers from the cache or raises CacheMiss
        with Client.local("http://127.0.0.1:9/v1", model_id=DEFAULT_MODEL_ID, cache=args.cache,
                          cache_mode="replay") as client:
            t0 = time.perf_counter()
            r = run(get(name)(budget=args.budget, seed=seed), client, task, seed=seed, progress=False,
                    start=start_point(task))
            e = r.extra
            doc["runs"][item] = {
                "rows_rule": e["selection"], "ce_rule": e.get("selection_ce"),
                "start": {"dev": e["start"]["dev"]["accuracy"], "eval": e["start"]["eval"]["accuracy"]},
                "search": {"dev": e["search"]["dev"]["accuracy"], "eval": e["search"]["eval"]["accuracy"]},
                "eval_n": r.eval["n"], "requests_sent": client.budget.summary().get("requests"),
                "replay_s": round(time.perf_counter() - t0, 1)}
        print(item, json.dumps(doc["runs"][item], default=float), flush=True)
        out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    if args.into:
        filled = fill_ce(Path(args.into), {item: doc["runs"][item] for item in args.runs}, args.budget)
        print(f"{args.into}: selection_ce filled in for {filled or 'no runs'}", flush=True)
    return 0


def fill_ce(path: Path, replayed: dict[str, dict[str, Any]], budget: int) -> list[str]:
    """Write ``replayed[TASK:SEED:METHOD]["ce_rule"]`` into the leaderboard run of that task,
    seed, method, budget and eval n, where the run has no ``extra.selection_ce`` of its own; the
    run's ``extra.selection_ce_source`` names this script. Returns the items filled in."""
    from bbox_lfm.commands.report import leaderboard_table
    from bbox_lfm.results import write_result

    board = json.loads(path.read_text())
    filled = []
    for r in board.get("runs", []):
        item = f"{r['task']}:{r['seed']}:{r['extra'].get('label')}"
        rep = replayed.get(item)
        if (rep is None or rep.get("ce_rule") is None or r["extra"].get("selection_ce") is not None
                or (r.get("config") or {}).get("budget") != budget or r["eval"].get("n") != rep["eval_n"]):
            continue
        if (r["extra"]["start"]["eval"]["accuracy"], r["extra"]["search"]["eval"]["accuracy"]) != (
                rep["start"]["eval"], rep["search"]["eval"]):
            raise SystemExit(f"{item}: the replay's eval figures differ from the run's in {path}; not filled in")
        r["extra"]["selection_ce"] = rep["ce_rule"]
        r["extra"]["selection_ce_source"] = "benchmarks/guard_replay.py: the run replayed from its cache"
        filled.append(item)
    if filled:
        board["table_md"] = leaderboard_table(board["runs"])
        write_result(path, board)
    return filled


if __name__ == "__main__":
    sys.exit(main())
