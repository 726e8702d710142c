"""BBT and BBTv2 on SST-2 16-shot (seeds 13, 21, 42) with SmolLM2-135M-Instruct on the local server.

    .venv/bin/python benchmarks/bbt.py                       # budget 1000 calls each, full eval split
    .venv/bin/python benchmarks/bbt.py --budget 200 --seeds 13 --eval-limit 200   # a smaller run

For each seed: BBT and BBTv2 through the harness (search budget in calls, one call = one pass
over the 32 training examples; dev checks and eval scoring counted apart), eval accuracy of the
selected prompt on the SST-2 eval split (GLUE validation, 872), calls and wall time. Next to them:
the plain template (zero-shot), the prompt both searches start from (z = 0: the embeddings of
tokens 1000..1049 in front of the template), and ICL from ``benchmarks/results/baselines.json``
when that file has it. Then throughput: search calls per second through the whole client stack
against raw HTTP posts of the same request bodies to the same server at the same concurrency.

Results go to ``benchmarks/results/bbt.json`` after every run (a partial run leaves results),
the curve plot to ``benchmarks/results/bbt.png``. Queries are cached in
``benchmarks/.cache/bbt.sqlite`` (git-ignored), so an interrupted run resumes for free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def _missing(data: dict[str, Any]) -> dict[str, list[int]]:
    """The seeds each method still lacks (methods with none left out)."""
    missing = {}
    for name in data["methods"]:
        done = {r["seed"] for r in data["runs"].get(name, [])}
        if left := [s for s in data["seeds"] if s not in done]:
            missing[name] = left
    return missing


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write the results, with the (method, seed) runs still missing named in ``missing``."""
    import bundle

    data["missing"] = _missing(data)
    bundle.dump(path, data, "bbt")


def _set_bar(data: dict[str, Any]) -> None:
    """The issue's bar, once both methods have runs: BBT beats its start prompt on every seed,
    BBTv2's mean is at least BBT's, and whether every (method, seed) run is in."""
    if "bbt" in data["summary"] and "bbtv2" in data["summary"]:
        data["bar"] = {
            "bbt_beats_start_on_every_seed": all(r["beats_start_prompt"] for r in data["runs"]["bbt"]),
            "bbtv2_mean_at_least_bbt": data["summary"]["bbtv2"]["eval_accuracy_mean"]
            >= data["summary"]["bbt"]["eval_accuracy_mean"],
            "complete": not _missing(data)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["eval_accuracy"] for r in runs]
    return {"eval_accuracy_mean": statistics.mean(accs), "eval_accuracy_std": statistics.pstdev(accs),
            "seeds": [r["seed"] for r in runs], "calls_mean": statistics.mean(r["calls"] for r in runs),
            "wall_s_mean": statistics.mean(r["wall_s"] for r in runs)}


def _icl() -> dict[str, Any] | None:
    path = RESULTS / "baselines.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    found = {}
    for key, value in (data.items() if isinstance(data, dict) else []):
        if "icl" in str(key).lower() or (isinstance(value, dict) and "icl" in json.dumps(value)[:200].lower()):
            found[key] = value
    return found or None


def throughput(client: Any, task: Any, *, popsize: int, reps: int, seed: int) -> dict[str, Any]:
    """Calls/s of one BBT generation's requests through the whole stack (cache off) vs raw HTTP."""
    import httpx

    from bbox_lfm.methods.bbt import INIT_TOKEN_START
    from bbox_lfm.tensors import encode

    info = client.model_info()
    n, D = 50, int(info["hidden_size"])
    train = task.few_shot(seed=seed).train
    prompts = [task.format(ex) for ex in train]
    rng = np.random.default_rng(0)
    extras = [{"soft_prompt": encode(rng.standard_normal((n, D)) * info["embedding_std"],
                                     base_ids=list(range(INIT_TOKEN_START, INIT_TOKEN_START + n)))}
              for _ in range(popsize)]
    stack = client.with_cache_mode("off") if client.store is not None else client

    def via_stack() -> float:
        t = time.perf_counter()
        with ThreadPoolExecutor(popsize) as pool:
            list(pool.map(lambda e: stack.score(prompts, task.label_words, extra=e, max_concurrency=1), extras))
        return time.perf_counter() - t

    # the same request bodies the adapter sends for these scoring queries
    bodies = [{"model": client.model, "prompt": prompts, "max_tokens": 0, "temperature": 0.0, "n": 1, **e,
               "label_words": list(task.label_words)} for e in extras]
    http = httpx.Client(base_url=client.base_url, timeout=600)

    def raw() -> float:
        t = time.perf_counter()
        with ThreadPoolExecutor(popsize) as pool:
            for r in pool.map(lambda b: http.post("/completions", json=b), bodies):
                r.raise_for_status()
        return time.perf_counter() - t

    via_stack()  # warm-up: connections, tokenizer caches
    stack_s, raw_s = [], []
    for _ in range(reps):  # interleaved, so a load change on the machine hits both alike
        raw_s.append(raw())
        stack_s.append(via_stack())
    stack_cps, raw_cps = popsize / statistics.median(stack_s), popsize / statistics.median(raw_s)
    return {"popsize": popsize, "reps": reps, "examples_per_call": len(prompts),
            "stack_calls_per_s": stack_cps, "raw_http_calls_per_s": raw_cps, "ratio": stack_cps / raw_cps,
            "stack_s": stack_s, "raw_s": raw_s}


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    colors = {"bbt": "tab:blue", "bbtv2": "tab:orange"}
    for name, runs in data["runs"].items():
        for i, r in enumerate(runs):
            xs = [p["calls"] for p in r["curve"]]
            ys = [p["dev_accuracy"] for p in r["curve"]]
            ax.plot(xs, ys, marker=".", color=colors.get(name), alpha=0.8,
                    label=name.upper() if i == 0 else None)
    z0 = data["baselines"].get("z0_dev_mean")
    if z0 is not None:
        ax.axhline(z0, color="gray", ls="--", label="start prompt (z = 0), dev")
    ax.set_xlabel("search calls (passes over the 32 training examples)")
    ax.set_ylabel("few-shot dev accuracy")
    ax.set_title("SST-2 16-shot, SmolLM2-135M-Instruct (seeds " + ", ".join(map(str, data["seeds"])) + ")")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=int, default=1000, help="search calls for BBT and for BBTv2")
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42])
    p.add_argument("--methods", nargs="+", default=["bbt", "bbtv2"])
    p.add_argument("--eval-limit", type=int, default=None, help="seeded subsample of the eval split")
    p.add_argument("--base-url", default=None, help="a running bbox-lfm server (default: start one)")
    p.add_argument("--device", default="auto", help="device of the started server (auto, cpu, cuda)")
    p.add_argument("--model", default=None, help="model for the started server (default: the embedded SmolLM2)")
    p.add_argument("--cache", default=str(ROOT / ".cache" / "bbt.sqlite"))
    p.add_argument("--cache-mode", default="readwrite", help="off on a throwaway machine: BBTv2's deep prompts "
                   "are 4.6 MB a request")
    p.add_argument("--out", default=str(RESULTS / "bbt.json"))
    p.add_argument("--plot", default=str(RESULTS / "bbt.png"))
    p.add_argument("--throughput-reps", type=int, default=3,
                   help="0: measure nothing (a previous run's figure, if any, stays)")
    p.add_argument("--max-concurrency", type=int, default=20)
    args = p.parse_args(argv)

    from bbox_lfm import Client
    from bbox_lfm.methods import get
    from bbox_lfm.methods.bbt import INIT_TOKEN_START
    from bbox_lfm.methods.harness import run as run_method
    from bbox_lfm.tasks import evaluate, load_task
    from bbox_lfm.tensors import encode

    cache = Path(args.cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    (cache.parent / ".gitignore").write_text("*\n")  # the cache never enters git
    out, server = Path(args.out), None
    if args.base_url is None:
        from bbox_lfm.serve import start_local

        server = start_local(args.model, device=args.device)
        client = Client.local(server, cache=cache, cache_mode=args.cache_mode, max_concurrency=args.max_concurrency)
    else:
        client = Client.local(args.base_url, cache=cache, cache_mode=args.cache_mode,
                              max_concurrency=args.max_concurrency)
    import torch
    import transformers

    task = load_task("sst2")
    info = client.model_info()
    data: dict[str, Any] = {
        "task": "sst2", "shots": 16, "seeds": args.seeds, "methods": ["bbt", "bbtv2"],
        "budget_calls": args.budget, "model": client.model,
        "command": "python benchmarks/bbt.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "eval_split": task.eval_split, "eval_limit": args.eval_limit,
        "machine": {"device": "cuda " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "model_info": {k: info.get(k) for k in ("hidden_size", "num_layers", "embedding_std")},
        "baselines": {}, "runs": {}, "summary": {},
    }
    if out.is_file():  # resume: keep the runs an interrupted benchmark of the same settings finished
        import bundle

        old = bundle.load(out)
        if (old.get("budget_calls"), old.get("eval_limit"), old.get("model")) == (args.budget, args.eval_limit,
                                                                                   client.model):
            data["runs"], data["summary"] = old.get("runs", {}), old.get("summary", {})
            for runs in data["runs"].values():  # runs from before per-run machines ran where the old file says
                for r in runs:
                    r.setdefault("machine", old.get("machine"))
            if old.get("throughput"):
                data["throughput"] = old["throughput"]
    t0 = time.perf_counter()
    zero = evaluate(client, task, "eval", limit=args.eval_limit, progress=False)
    z0 = {"soft_prompt": encode(np.zeros((50, info["hidden_size"])),
                                base_ids=list(range(INIT_TOKEN_START, INIT_TOKEN_START + 50)))}
    start = evaluate(client, task, "eval", extra=z0, limit=args.eval_limit, progress=False)
    z0_dev = [evaluate(client, task, task.few_shot(seed=s).dev, extra=z0, progress=False).accuracy
              for s in args.seeds]
    data["baselines"] = {"zero_shot_plain_template": zero.to_json(), "z0_start_prompt": start.to_json(),
                         "z0_dev_mean": statistics.mean(z0_dev), "z0_dev": z0_dev, "icl": _icl(),
                         "wall_s": time.perf_counter() - t0}
    _save(out, data)
    print(f"zero-shot {zero.accuracy:.4f}, start prompt z=0 {start.accuracy:.4f}", flush=True)

    for seed in args.seeds:
        for name in args.methods:
            done = [r for r in data["runs"].get(name, []) if r["seed"] == seed]
            if done:
                continue
            method = get(name)(budget=args.budget, seed=seed)
            res = run_method(method, client, task, seed=seed, eval_limit=args.eval_limit, progress=False)
            r = {"seed": seed, "eval_accuracy": res.eval["accuracy"], "eval": res.eval, "dev": res.dev,
                 "calls": method.calls_, "budget_spent": res.budget_spent, "eval_spent": res.eval_spent,
                 "wall_s": res.wall_s, "fit_s": res.extra["fit_s"], "curve": res.curve,
                 "best_train_loss": method.best_train_loss_, "stopped_by": method.stopped_by_,
                 "beats_start_prompt": res.eval["accuracy"] > start.accuracy, "machine": data["machine"]}
            data["runs"].setdefault(name, []).append(r)
            data["summary"][name] = _summary(data["runs"][name])
            _save(out, data)
            print(f"{name} seed {seed}: eval {r['eval_accuracy']:.4f} calls {r['calls']} wall {r['wall_s']:.0f}s",
                  flush=True)
    _set_bar(data)
    if args.throughput_reps > 0:
        data["throughput"] = throughput(client, task, popsize=20, reps=args.throughput_reps, seed=args.seeds[0])
        data["throughput"]["machine"] = data["machine"]
    _save(out, data)
    plot(data, Path(args.plot))
    print(json.dumps({"summary": data["summary"], "bar": data.get("bar"), "throughput": {
        k: data["throughput"][k] for k in ("stack_calls_per_s", "raw_http_calls_per_s", "ratio")}
        if data.get("throughput") else None}, indent=1))
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
