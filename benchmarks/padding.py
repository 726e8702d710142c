"""Padding-aware passes (issue 18, "make the server fast enough"): side by side, same queries.

The server cuts the rows of a merged batch into forward passes. Before, the rows behind one
shared prefix (a BBT call: the soft prompt and the template's head, then 32 texts) went in one
pass padded to the longest text, so an SST-2 batch spent about a third of its positions on
padding; now `bbox_lfm.serve.prefix.cut_by_length` cuts the length-sorted rows where the
padding saved outweighs the price of one more pass. This runs a method's search twice with each
plan, alternating (old, new, old, new), with the cache off so every call reaches the model, and
reports the ratio of fit times::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/padding.py --methods bbt bdpl --budget 20

writes ``benchmarks/results/padding.json``. Absolute seconds are noise on a shared machine; the
ratio of interleaved runs is the figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import cpu_flags, machine, mean_std  # benchmarks/common.py

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["bbt", "bdpl"])
    ap.add_argument("--budget", type=int, default=20, help="search calls per fit (default 20)")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--template-index", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="old/new pairs per method (default 2)")
    ap.add_argument("--out", default=str(ROOT / "results" / "padding.json"))
    args = ap.parse_args(argv)

    import torch

    from bbox_lfm import Client
    from bbox_lfm.methods import get
    from bbox_lfm.serve import prefix, start_local
    from bbox_lfm.serve.engine import Engine
    from bbox_lfm.tasks import load_task, start_point

    plans = {"old": functools.partial(prefix.plan, by_length=False), "new": prefix.plan}
    task = load_task(args.task)
    start = start_point(task, template_index=args.template_index)
    out: dict[str, Any] = {"benchmark": "padding", "kind": "speed", "machine": machine(), "cpu_flags": cpu_flags(),
                           "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                           "load_average_start": os.getloadavg()[0], "task": args.task, "template": start.template,
                           "budget": args.budget, "methods": {}}
    for name in args.methods:
        times: dict[str, list[float]] = {"old": [], "new": []}
        for variant in ["old", "new"] * args.repeats:
            Engine.plan = staticmethod(plans[variant])  # type: ignore[method-assign]
            with start_local() as server, Client.local(server, cache_mode="off", timeout=3600) as client:
                method = get(name)(budget=args.budget, seed=13)
                t0 = time.perf_counter()
                method.fit(client, start.apply(task))
                times[variant].append(time.perf_counter() - t0)
            print(f"{name} {variant}: {times[variant][-1]:.1f} s", flush=True)
        out["methods"][name] = {"fit_s": times, "old": mean_std(times["old"]), "new": mean_std(times["new"]),
                                "speedup_new_over_old": sum(times["old"]) / sum(times["new"])}
    Engine.plan = staticmethod(prefix.plan)  # type: ignore[method-assign]
    out["load_average_end"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v["speedup_new_over_old"] for k, v in out["methods"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
