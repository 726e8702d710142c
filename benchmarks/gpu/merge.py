"""Fold the part results of ``benchmarks/gpu/run.sh all`` into the benchmarks' results files.

    .venv/bin/python benchmarks/gpu/merge.py DIR      # DIR: the call's $OUT (bbt-*.json, bdpl-*.json)

Each part is one benchmark process's results file: ``bbt-<method>-<seed>.json`` from
``benchmarks/bbt.py`` and ``bdpl-<variant>.json`` from ``benchmarks/bdpl.py``. A run is taken
only when its file has the settings of the results file it joins (budget, eval rows, model) and
that file lacks it; a run already there is kept. Parts whose baselines (measured again by each
process) disagree with the results file's by more than one eval row are refused: they would come
from another model or another code path. Every taken run records the part it came from and how
many benchmark processes shared the GPU with it (its wall time is not a one-process time).

``--verify`` scores each new BDPL run's learned prompt again on the eval split, on this machine's
local server, and refuses a run whose figure moves by more than ``--tolerance``: a different
library version on the lent machine once changed the figures silently (the shared-prefix path of
transformers 5.17), and only a second machine shows that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import bbt  # benchmarks/bbt.py
import bdpl  # benchmarks/bdpl.py
import bundle  # benchmarks/bundle.py
from common import machine  # benchmarks/common.py


def _same(a: float, b: float, n: int) -> bool:
    return abs(a - b) <= 1.0 / n + 1e-9


def merge_bbt(parts: list[Path], target: Path, plot: Path, side_by_side: int) -> list[str]:
    data = bundle.load(target)
    taken = []
    for part in parts:
        p = json.loads(part.read_text(encoding="utf-8"))
        settings = ("budget_calls", "eval_limit", "model")
        if any(p.get(k) != data.get(k) for k in settings):
            raise SystemExit(f"{part}: settings {[p.get(k) for k in settings]} differ from {target}'s "
                             f"{[data.get(k) for k in settings]}")
        for key in ("zero_shot_plain_template", "z0_start_prompt"):
            a, b = p["baselines"][key], data["baselines"][key]
            if not _same(a["accuracy"], b["accuracy"], b["n"]):
                raise SystemExit(f"{part}: baseline {key} {a['accuracy']:.4f} differs from {target}'s "
                                 f"{b['accuracy']:.4f}")
        for name, runs in p["runs"].items():
            have = {r["seed"] for r in data["runs"].get(name, [])}
            for r in runs:
                if r["seed"] in have:
                    continue
                r["command"] = p.get("command")
                r["side_by_side"] = side_by_side
                data["runs"].setdefault(name, []).append(r)
                taken.append(f"{name} seed {r['seed']}: eval {r['eval_accuracy']:.4f}, calls {r['calls']}")
    for name, runs in data["runs"].items():
        runs.sort(key=lambda r: data["seeds"].index(r["seed"]) if r["seed"] in data["seeds"] else r["seed"])
        data["summary"][name] = bbt._summary(runs)
    bbt._set_bar(data)
    bbt._save(target, data)
    bbt.plot(data, plot)
    return taken


def _verifier(model: str | None, tolerance: float) -> Any:
    """``check(variant, rec)``: the run's eval figures scored again here, refused beyond ``tolerance``."""
    from bbox_lfm import Client
    from bbox_lfm.serve import start_local
    from bbox_lfm.serve.config import DEFAULT_MODEL_ID
    from bbox_lfm.tasks import evaluate, load_task

    server = start_local(model, served_model_name=DEFAULT_MODEL_ID if model else None)
    client = Client.local(server, cache=BENCH / ".cache" / "bdpl.sqlite", max_concurrency=8)
    task = load_task("sst2")

    def check(variant: str, rec: dict[str, Any]) -> None:
        how = bdpl.VARIANTS[variant]
        vtask = task.with_template(*bdpl.TEMPLATES[variant]) if variant in bdpl.TEMPLATES else task
        here = {"eval": evaluate(client, vtask, "eval", prompt=rec["prompt"], progress=False, **how).to_json()}
        if how["strategy"] == "topk":
            here["eval_exact"] = evaluate(client, vtask, "eval", prompt=rec["prompt"], endpoint=how["endpoint"],
                                          progress=False).to_json()
        for key, met in here.items():
            there = rec["eval"] if key == "eval" else rec["extra"].get(key)
            if there is None or abs(there["accuracy"] - met["accuracy"]) > tolerance:
                raise SystemExit(f"{variant} seed {rec['seed']}: {key} accuracy {there and there['accuracy']} "
                                 f"there, {met['accuracy']:.4f} here (tolerance {tolerance})")
        rec["verified_here"] = {**here, "tolerance": tolerance, "machine": machine()}

    return check


def merge_bdpl(parts: list[Path], target: Path, side_by_side: int, verify: Any = None) -> list[str]:
    doc: dict[str, Any] = bundle.load(target) if target.is_file() else {}
    first = json.loads(parts[0].read_text(encoding="utf-8"))
    if (doc.get("budget_calls"), doc.get("eval_limit")) != (first["budget_calls"], first["eval_limit"]):
        # another configuration: its runs go; the chat zero-shot figures involve no search and stay
        doc = {k: doc[k] for k in ("chat_zero_shot",) if k in doc and doc.get("eval_limit") == first["eval_limit"]}
    runs: dict[str, dict[str, Any]] = doc.get("runs", {})
    taken, commands = [], []
    for part in parts:
        p = json.loads(part.read_text(encoding="utf-8"))
        if (p["budget_calls"], p["eval_limit"], p["model"]) != (first["budget_calls"], first["eval_limit"],
                                                                 first["model"]):
            raise SystemExit(f"{part}: settings differ from {parts[0]}'s")
        if "chat_zero_shot" in p and "chat_zero_shot" in doc:
            for k in ("exact", "top20"):
                a, b = p["chat_zero_shot"][k], doc["chat_zero_shot"][k]
                if not _same(a["accuracy"], b["accuracy"], b["n"]):
                    raise SystemExit(f"{part}: chat zero-shot {k} {a['accuracy']:.4f} differs from "
                                     f"{b['accuracy']:.4f}")
        doc.setdefault("chat_zero_shot", p.get("chat_zero_shot"))
        commands.append(p["command"])
        for variant, by_seed in p.get("runs", {}).items():
            for seed, rec in by_seed.items():
                if seed in runs.get(variant, {}):
                    continue
                rec["command"], rec["side_by_side"] = p["command"], side_by_side
                if verify is not None:
                    verify(variant, rec)
                runs.setdefault(variant, {})[seed] = rec
                taken.append(f"{variant} seed {seed}: eval {rec['eval']['accuracy']:.4f}")
    bdpl._fill(doc, {v: runs[v] for v in bdpl.VARIANTS if v in runs}, model=first["model"],
               provider=first["provider"], budget=first["budget_calls"], eval_limit=first["eval_limit"],
               machine=first["machine"],
               command="bash benchmarks/gpu/run.sh all, then benchmarks/gpu/merge.py: " + " ; ".join(commands),
               seeds=bdpl.SEEDS, variants=bdpl.VARIANTS)
    bdpl._dump(target, doc)
    return taken


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="the folder run.sh all wrote its part files into")
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    ap.add_argument("--only", nargs="+", default=None, help="part file names to take (default: all in dir)")
    ap.add_argument("--verify", action="store_true", help="score new BDPL runs' prompts again here first")
    ap.add_argument("--tolerance", type=float, default=0.01, help="--verify's largest accuracy change")
    ap.add_argument("--model", default=None, help="--verify's local model (default: the embedded SmolLM2)")
    args = ap.parse_args(argv)
    keep = (lambda f: f.name in args.only) if args.only else (lambda f: True)
    bbt_parts = sorted(f for f in args.dir.glob("bbt-*.json") if keep(f))
    bdpl_parts = sorted(f for f in args.dir.glob("bdpl-*.json") if keep(f))
    n = len(list(args.dir.glob("bbt-*.json"))) + len(list(args.dir.glob("bdpl-*.json")))  # processes that ran
    if not bbt_parts and not bdpl_parts:
        raise SystemExit(f"dir: no bbt-*.json or bdpl-*.json in {args.dir}")
    if bbt_parts:
        for line in merge_bbt(bbt_parts, args.results / "bbt.json", args.results / "bbt.png", n):
            print("bbt.json +", line)
    if bdpl_parts:
        verify = _verifier(args.model, args.tolerance) if args.verify else None
        for line in merge_bdpl(bdpl_parts, args.results / "bdpl.json", n, verify):
            print("bdpl.json +", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
