"""Fold the part results of ``benchmarks/gpu/run.sh all`` into the benchmarks' results files.

    .venv/bin/python benchmarks/gpu/merge.py DIR      # DIR: the call's $OUT (bbt-*.json, bdpl-*.json)

Each part is one benchmark process's results file: ``bbt-<method>-<seed>.json`` from
``benchmarks/bbt.py`` and ``bdpl-<variant>.json`` from ``benchmarks/bdpl.py``. A run is taken
only when its file has the settings of the results file it joins (budget, eval rows, model) and
that file lacks it; a run already there is kept. Parts whose baselines (measured again by each
process) disagree with the results file's by more than one eval row are refused: they would come
from another model or another code path. Every taken run records the part it came from and how
many benchmark processes shared the GPU with it (its wall time is not a one-process time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import bbt  # noqa: E402  (benchmarks/bbt.py)
import bdpl  # noqa: E402  (benchmarks/bdpl.py)


def _same(a: float, b: float, n: int) -> bool:
    return abs(a - b) <= 1.0 / n + 1e-9


def merge_bbt(parts: list[Path], target: Path, plot: Path, side_by_side: int) -> list[str]:
    data = json.loads(target.read_text(encoding="utf-8"))
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


def merge_bdpl(parts: list[Path], target: Path, side_by_side: int) -> list[str]:
    doc: dict[str, Any] = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
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
                runs.setdefault(variant, {})[seed] = rec
                taken.append(f"{variant} seed {seed}: eval {rec['eval']['accuracy']:.4f}")
    doc.update({
        "benchmark": "bdpl", "issue": 7, "task": "sst2", "split": "eval", "model": first["model"],
        "provider": first["provider"], "budget_calls": first["budget_calls"], "eval_limit": first["eval_limit"],
        "variants": {v: bdpl.VARIANTS[v] for v in runs}, "machine": first["machine"],
        "command": "bash benchmarks/gpu/run.sh all, then benchmarks/gpu/merge.py: " + " ; ".join(commands),
        "summary": bdpl._summary(runs), "beside": bdpl._beside(),
        "runs": {v: runs[v] for v in bdpl.VARIANTS if v in runs},
    })
    doc["missing"] = {v: [s for s in (13, 21, 42) if str(s) not in runs.get(v, {})] for v in bdpl.VARIANTS}
    doc["missing"] = {v: s for v, s in doc["missing"].items() if s}
    target.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return taken


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="the folder run.sh all wrote its part files into")
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    args = ap.parse_args(argv)
    bbt_parts = sorted(args.dir.glob("bbt-*.json"))
    bdpl_parts = sorted(args.dir.glob("bdpl-*.json"))
    n = len(bbt_parts) + len(bdpl_parts)
    if not n:
        raise SystemExit(f"dir: no bbt-*.json or bdpl-*.json in {args.dir}")
    if bbt_parts:
        for line in merge_bbt(bbt_parts, args.results / "bbt.json", args.results / "bbt.png", n):
            print("bbt.json +", line)
    if bdpl_parts:
        for line in merge_bdpl(bdpl_parts, args.results / "bdpl.json", n):
            print("bdpl.json +", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
