"""``make demo``: the main job on the embedded default, on a fresh machine.

1. start the embedded SmolLM2-135M-Instruct behind bbox-lfm's OpenAI-compatible server;
2. load the small sample task that ships with bbox-lfm (no ``../shared`` needed);
3. score the zero-shot baseline, then run a short BBT search (CMA-ES over a random subspace of
   a soft prompt, through the service), and print before and after;
4. run it a second time in replay mode: every query comes from the cache, none is sent.

Results go to ``demo_out/`` as JSON (the shared results format). Queries are cached, so a rerun
is free.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .client import Client
from .methods import get
from .methods.harness import run
from .results import write_result
from .serve import start_local
from .tasks import load_task


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    ap = argparse.ArgumentParser(prog="python -m bbox_lfm.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=120, help="BBT search calls (one call = the whole train batch)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--cache", default=None, help="cache file (default: the user cache)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    task = load_task("sample")
    few = task.few_shot(seed=args.seed)
    print(f"task {task.name!r}: {len(few.train)} train / {len(few.dev)} dev examples (few-shot), "
          f"{len(task.split('eval'))} eval; template {task.template!r}, label words {list(task.label_words)}")
    t0 = time.perf_counter()
    with start_local() as server:
        print(f"local server: {server.base_url} ({server.model_id}), up in {time.perf_counter() - t0:.1f}s")
        with Client.local(server, cache=args.cache) as client:
            zero = run(get("zero-shot")(), client, task, seed=args.seed, progress=False)
            write_result(out / "zero-shot.json", zero)
            bbt = get("bbt")(budget=args.budget, popsize=10, intrinsic_dim=100, n_prompt_tokens=10,
                             eval_every=20, seed=args.seed)
            print(f"BBT: {bbt.projected_calls()} search calls projected")
            tuned = run(bbt, client, task, seed=args.seed)
            write_result(out / "bbt.json", tuned)
            replayed = run(get("bbt")(**bbt.get_config()), client.with_cache_mode("replay"), task, seed=args.seed,
                           progress=False)
    print()
    print(f"{'':<12}{'dev acc':>9}{'eval acc':>10}{'search calls':>14}{'requests':>10}")
    for name, r in (("zero-shot", zero), ("BBT", tuned), ("BBT replay", replayed)):
        dev = r.dev["accuracy"] if r.dev else float("nan")
        print(f"{name:<12}{dev:>9.3f}{r.eval['accuracy']:>10.3f}{r.budget_spent['calls']:>14}"
              f"{r.budget_spent['requests']:>10}")
    print(f"\nreplay sent {replayed.budget_spent['requests'] + replayed.eval_spent['requests']} requests "
          f"({replayed.budget_spent['cache_hits'] + replayed.eval_spent['cache_hits']} cache hits); "
          f"same prompt as the first run: {replayed.prompt == tuned.prompt}")
    print(f"results: {out}/zero-shot.json, {out}/bbt.json")
    summary = {"zero_shot": zero.eval, "bbt": tuned.eval, "bbt_budget_spent": tuned.budget_spent}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
