"""How many soft-prompt tokens BBT should put in front of a good template: cost and harm of n.

    python benchmarks/soft_tokens.py                       # n = 50, 20, 10, 5 on sst2, seed 13
    python benchmarks/soft_tokens.py --ns 50 10 --reps 2 --inits vocab

For each n, with the best manual template (``Review: {text}\\nSentiment:``) and the soft prompt
right after BOS, as BBT sends it:

* seconds per BBT call (the 32 training rows of the 16-shot split in one request, every
  request a fresh random prompt so nothing comes from the server's prefix cache; client cache
  off), median of ``--reps``, beside the same request with no soft prompt at all;
* the accuracy of BBT's z = 0 prompt (``init="vocab"``: the embeddings of tokens 1000..1000+n-1
  added to n slots; ``init="zeros"``: n zero vectors) on the 32 dev rows and a seeded subsample
  of the eval split, beside the template alone: what the inserted slots cost before any search.

Rows whose first 24 positions match (BOS, the n slots, the template's head) share one prefix
pass on the server, so n >= 22 slots ride on that pass, while fewer slots leave the prefix too
short to share. Writes ``benchmarks/results/soft_tokens.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))  # benchmarks/common.py
from common import cpu_flags

from bbox_lfm import Client
from bbox_lfm.methods.bbt import INIT_TOKEN_START
from bbox_lfm.results import write_result
from bbox_lfm.tasks import evaluate, load_task, start_point, subsample
from bbox_lfm.tensors import encode


def soft(n: int, D: int, *, init: str, scale: float, rng: np.random.Generator) -> dict[str, Any]:
    """A soft prompt of n slots: ``scale`` x N(0, 1) values (0: BBT's z = 0)."""
    values = (rng.standard_normal((n, D)) * scale).astype(np.float32)
    fields = {"base_ids": list(range(INIT_TOKEN_START, INIT_TOKEN_START + n))} if init == "vocab" else {}
    return {"soft_prompt": encode(values, **fields)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--ns", nargs="+", type=int, default=[50, 20, 10, 5])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--eval-limit", type=int, default=200)
    p.add_argument("--inits", nargs="+", default=["vocab", "zeros"], choices=["vocab", "zeros"])
    p.add_argument("--cache", default=str(HERE / ".cache" / "leaderboard.sqlite"))
    p.add_argument("--out", default=str(HERE / "results" / "soft_tokens.json"))
    args = p.parse_args()

    from bbox_lfm.serve import start_local

    task = load_task(args.task)
    task = start_point(task).apply(task)
    split = task.few_shot(seed=args.seed)
    train = [task.format(ex) for ex in split.train]
    eval_rows = subsample(task.split("eval"), args.eval_limit, 0)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"schema": 1, "kind": "speed", "benchmark": "soft_tokens", "task": args.task, "seed": args.seed,
                           "template": task.template, "eval_limit": args.eval_limit,
                           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU", "cpu_flags": cpu_flags(),
                           "load_average_start": os.getloadavg()[0], "rows": []}
    server = start_local()
    try:
        with Client.local(server, cache=args.cache, max_concurrency=2, timeout=900) as client:
            info = client.model_info()
            D, s_e = int(info["hidden_size"]), float(info["embedding_std"])
            live = client.with_cache_mode("off")

            def call_s(extra: dict[str, Any] | None) -> float:
                t = time.perf_counter()
                live.score(train, task.label_words, extra=extra, strategy="exact", max_concurrency=1)
                return time.perf_counter() - t

            call_s(None)  # warm-up
            alone = [call_s(None) for _ in range(args.reps)]
            base_dev = evaluate(client, task, split.dev, progress=False)
            base_eval = evaluate(client, task, eval_rows, progress=False)
            out["template_alone"] = {"call_s": statistics.median(alone), "dev_accuracy": base_dev.accuracy,
                                     "eval_accuracy": base_eval.accuracy}
            print(f"template alone: {statistics.median(alone):.2f} s/call, dev {base_dev.accuracy:.3f}, "
                  f"eval {base_eval.accuracy:.3f}", flush=True)
            for n in args.ns:
                times = [call_s(soft(n, D, init="vocab", scale=s_e, rng=rng)) for _ in range(args.reps)]
                row: dict[str, Any] = {"n": n, "call_s": statistics.median(times), "call_s_all": times,
                                       "shared_prefix": 1 + n + 2 >= 24}
                for init in args.inits:
                    z0 = soft(n, D, init=init, scale=0.0, rng=rng)
                    dev = evaluate(client, task, split.dev, extra=z0, progress=False)
                    ev = evaluate(client, task, eval_rows, extra=z0, progress=False)
                    row[f"z0_{init}"] = {"dev_accuracy": dev.accuracy, "eval_accuracy": ev.accuracy}
                out["rows"].append(row)
                out["load_average_end"] = os.getloadavg()[0]
                write_result(args.out, out)
                print(json.dumps(row), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
