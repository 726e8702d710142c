"""Issue 19's check against a real third-party server: llama-cpp-python's, on the embedded GGUF.

    python benchmarks/llama_cpp.py                 # needs llama-cpp-python (make test-llama-cpp builds it)
    python benchmarks/llama_cpp.py --limit 200 --budget 20

Runs the user's commands as a user would (the ``bbox-lfm`` CLI in a subprocess), side by side:

1. ``bbox-lfm providers probe --base-url URL`` writes a probed profile;
2. ``bbox-lfm eval --task sst2 --template-index 1 --limit N --provider llama-cpp`` with no
   ``--model``, and the same eval on bbox-lfm's own local server (``--local``): accuracy of
   both on the same rows, and how often their predictions agree (read back from the cache);
3. ``bbox-lfm tune bdpl --task sample --budget B --provider llama-cpp``: its calls and its
   requests, apart.

Resumable: answers go to ``benchmarks/.cache/llama_cpp.sqlite`` (the server gets a fixed port,
so the cache keys stay the same), and ``benchmarks/results/llama_cpp/summary.json`` is written
after each step, beside the three runs' results files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(HERE))  # benchmarks/common.py
from common import cpu_flags

from bbox_lfm import Client
from bbox_lfm.methods import get
from bbox_lfm.methods.harness import EVAL_SUBSAMPLE_SEED
from bbox_lfm.tasks import load_task, subsample
from bbox_lfm.testing.llama_cpp import available, llama_cpp_server

RESULTS = HERE / "results" / "llama_cpp"  # a folder: its summary is no run, report reads results/*.json
OUT = RESULTS / "summary.json"
CACHE = HERE / ".cache" / "llama_cpp.sqlite"


def cli(*args: str, env: dict[str, str]) -> tuple[str, str, float]:
    """Run ``bbox-lfm ARGS``; its stdout, stderr and wall seconds (a failure stops the benchmark)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bbox_lfm.cli", *args], capture_output=True, text=True, env=env,
                       cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"bbox-lfm {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout, p.stderr, wall


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("bbox-lfm: note", "probed ", "  "))]


def predictions(client: Client, task: Any, rows: list[Any]) -> list[int]:
    """The zero-shot predictions the eval command made, replayed from the cache (nothing sent)."""
    replay = client.with_cache_mode("replay")
    method = get("zero-shot")(prompt="", template=task.template, label_words=task.label_words).fit(replay, task)
    return [int(p) for p in method.predict(replay, rows)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=200, help="sst2 eval rows (a seeded subsample)")
    ap.add_argument("--budget", type=int, default=20, help="BDPL search calls on the sample task")
    ap.add_argument("--port", type=int, default=8765, help="fixed port, so cached answers replay on a rerun")
    args = ap.parse_args()
    if not available():
        raise SystemExit("llama-cpp-python is not installed: make test-llama-cpp (it builds from source)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BBOX_LFM_CACHE_DIR": str(CACHE.parent / "llama_cpp_profiles")}
    common = ["--cache", str(CACHE), "--no-progress"]
    res: dict[str, Any] = {"limit": args.limit, "budget": args.budget, "python": platform.python_version(),
                           "cpu_flags": cpu_flags()}
    try:
        import llama_cpp

        res["llama_cpp_python"] = llama_cpp.__version__
    except (ImportError, AttributeError):
        pass

    def save() -> None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")

    task = load_task("sst2")
    task = task.with_template(*task.templates[1])
    rows = subsample(task.split(task.eval_split), args.limit, EVAL_SUBSAMPLE_SEED)
    with llama_cpp_server(port=args.port) as url:
        out, err, wall = cli("providers", "probe", "--base-url", url, env=env)
        res["probe"] = {**json.loads(out), "notes": notes(err), "wall_s": round(wall, 1)}
        save()
        print(f"probe: {res['probe']['requests']} requests, {wall:.1f}s", flush=True)

        ev_out = RESULTS / "eval_llama_cpp.json"
        _, err, wall = cli("eval", "--task", "sst2", "--template-index", "1", "--limit", str(args.limit),
                           "--base-url", url, "--provider", "llama-cpp", "--out", str(ev_out), *common, env=env)
        r = json.loads(ev_out.read_text())
        res["eval_llama_cpp"] = {"eval": r["eval"], "model": r["model"], "provider": r["provider"],
                                 "eval_spent": r["eval_spent"], "notes": notes(err), "wall_s": round(wall, 1)}
        save()
        print(f"eval llama-cpp: {r['eval']['accuracy']:.4f} ({wall:.0f}s)", flush=True)
        with Client(url, provider="llama-cpp", cache=CACHE, model=r["model"]) as client:
            pred_llama = predictions(client, task, rows)

        tune_out = RESULTS / "tune_bdpl.json"
        out, err, wall = cli("tune", "bdpl", "--task", "sample", "--budget", str(args.budget), "--base-url", url,
                             "--provider", "llama-cpp", "--out", str(tune_out), *common, env=env)
        r = json.loads(tune_out.read_text())
        res["tune_bdpl"] = {"budget_spent": r["budget_spent"], "eval_spent": r["eval_spent"], "eval": r["eval"],
                            "dev": r["dev"], "stdout": out.strip().splitlines()[-1], "wall_s": round(wall, 1)}
        save()
        print(res["tune_bdpl"]["stdout"], flush=True)

    ev_out = RESULTS / "eval_local.json"
    _, err, wall = cli("eval", "--task", "sst2", "--template-index", "1", "--limit", str(args.limit), "--local",
                       "--out", str(ev_out), *common, env=env)
    r = json.loads(ev_out.read_text())
    res["eval_local"] = {"eval": r["eval"], "model": r["model"], "eval_spent": r["eval_spent"],
                         "wall_s": round(wall, 1)}
    from bbox_lfm.commands._common import LOCAL_REPLAY_URL

    with Client.local(LOCAL_REPLAY_URL, cache=CACHE) as client:
        pred_local = predictions(client, task, rows)
    agree = sum(a == b for a, b in zip(pred_llama, pred_local, strict=True)) / len(rows)
    diff = res["eval_llama_cpp"]["eval"]["accuracy"] - res["eval_local"]["eval"]["accuracy"]
    res["comparison"] = {"rows": len(rows), "prediction_agreement": round(agree, 4),
                         "accuracy_difference_points": round(100 * diff, 2), "within_two_points": abs(diff) <= 0.02}
    save()
    print(json.dumps(res["comparison"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
