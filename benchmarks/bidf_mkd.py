"""BiDf-MKD on a zoo of digits classifier APIs (issue 22): meta-test on the held-out digits 6-9.

One zoo (``bbox-lfm zoo build``: 20 MLP APIs, each on a seeded random 3-class subset of digits
0-5) is served in-process with no language model; every API query goes through the client
(cache, budget). Side by side, in one run, with one seed and one query budget:

* ``bidf-mkd``: zero-order inversion, bi-level KD, boundary query set, memory replay;
* ``no-boundary`` and ``no-memory``: one component off each;
* ``true-gradient``: the APIs opened up (back-propagation through their weights): the upper
  bound; it sends no query;
* ``random``: the meta-model at its initialisation (no meta-training): the floor;
* ``oracle-maml``: MAML on the real images of digits 0-5: the oracle; no query.

Each is meta-tested on 600 3-way 1-shot and 600 3-way 5-shot episodes of digits 6-9 (the same
episodes for every variant: seeded), mean accuracy and 95 % interval. The zero-order estimator's
cosine to the true gradient is measured on the APIs at q = 10, 20, 50, 100.

Resumable: the queries go through one cache file (``benchmarks/.cache/bidf_mkd.sqlite``) and
the JSON is rewritten after each variant, so a rerun skips finished variants and replays an
interrupted one for free. Run it niced in the background::

    nohup nice -n 15 .venv/bin/python benchmarks/bidf_mkd.py > /tmp/bidf.log 2>&1 &
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

from common import cpu_flags  # benchmarks/common.py

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
# the bar's variants first, so a run cut short still answers it
VARIANTS: dict[str, dict[str, Any]] = {
    "bidf-mkd": {},
    "random": {"random_meta_model": True},
    "true-gradient": {"true_gradient": True},
    "oracle-maml": {"oracle_maml": True},
    "no-boundary": {"boundary": False},
    "no-memory": {"memory_replay": False},
}
QS = (10, 20, 50, 100)


def _machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores ({', '.join(cpu_flags()) or 'no flags read'}), "
            f"torch {torch.__version__}, 1 torch thread; load average at start {os.getloadavg()[0]:.1f}")


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def estimator_cosines(client: Any, zoo: Any, *, points: int, seed: int) -> dict[str, Any]:
    """The zero-order estimate's cosine to the true gradient of CE(API(x), y) at ``points`` inputs
    per API on 5 APIs, for each q; one classification request per (API, q). Each input is the
    mean of two real images of two of the API's classes, labelled as the first: on real images
    alone the APIs are so sure that the loss is flat (its gradient under 1e-6 at most points)."""
    import numpy as np
    import torch

    from bbox_lfm.methods.bidf_mkd import zo_gradient
    from bbox_lfm.zoo import digits, torch_classifier

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for q in QS:
        cos = []
        for model in list(zoo.models.values())[:5]:
            x, labels = digits(model.classes)
            first = rng.choice(len(x), size=points, replace=False)
            other = np.array([rng.choice(np.flatnonzero(labels != labels[i])) for i in first])
            xs = (0.5 * (x[first] + x[other])).reshape(points, -1).astype(np.float64)
            y = np.searchsorted(model.classes, labels[first])

            def loss(rows: np.ndarray, y: np.ndarray = y, model_id: str = model.id) -> np.ndarray:
                p = client.classify(rows.reshape(len(rows), *zoo.input_shape), model=model_id)
                return -np.log(np.clip(p[np.arange(len(rows)), np.tile(y, len(rows) // len(y))], 1e-12, 1))

            g = zo_gradient(loss, xs, q=q, mu=0.005, rng=rng)
            xt = torch.from_numpy(xs.astype(np.float32)).requires_grad_()
            torch.nn.functional.cross_entropy(torch_classifier(model)(xt), torch.from_numpy(y), reduction="sum").backward()
            assert xt.grad is not None
            true = xt.grad.double().numpy()
            keep = np.linalg.norm(true, axis=1) > 1e-6  # a saturated point has no direction to find
            c = (g * true).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(true, axis=1) + 1e-30)
            cos += list(c[keep])
        out[str(q)] = {"mean": round(float(np.mean(cos)), 4), "n": len(cos), "of": 5 * points,
                       "expected_sqrt_q_over_q_plus_d": round(float(np.sqrt(q / (q + 64))), 4)}
        print(f"cosine at q={q}: {out[str(q)]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every variant not yet in the results file, then the estimator check; write as it goes."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", default=str(ROOT / ".cache" / "digits-zoo"), help="zoo folder (built when missing)")
    p.add_argument("--budget", type=int, default=1000, help="API calls per query-sending variant (default 1000: "
                   "10 API visits of 2 x 50 generator steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a BiDfMKD hyperparameter for every variant (JSON value)")
    p.add_argument("--cosine-points", type=int, default=20, help="inputs per API for the estimator check")
    p.add_argument("--cache", default=str(ROOT / ".cache" / "bidf_mkd.sqlite"))
    p.add_argument("--out", default=str(RESULTS / "bidf_mkd.json"))
    p.add_argument("--redo", action="store_true", help="rerun variants already in the results file")
    args = p.parse_args(argv)

    from bbox_lfm import Client
    from bbox_lfm.commands.tune import parse_sets
    from bbox_lfm.methods.bidf_mkd import BiDfMKD, meta_test_result, run_label
    from bbox_lfm.serve import start_local
    from bbox_lfm.zoo import build_zoo, load_zoo, zoo_namespace

    sets = parse_sets(args.sets)
    BiDfMKD(budget=args.budget, seed=args.seed, **sets)  # bad settings fail here, before anything runs
    zoo_dir = Path(args.zoo)
    zoo = load_zoo(zoo_dir) if (zoo_dir / "zoo.json").is_file() else build_zoo(zoo_dir, n_models=20, seed=0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    settings_key = {"budget": args.budget, "episodes": args.episodes, "sets": sets}
    if doc.get("kind") != "bundle" or doc.get("settings") != settings_key:
        doc = {}  # other settings: start afresh (the cache still answers repeated queries)
    doc.update({
        "schema": 1, "kind": "bundle", "benchmark": "bidf_mkd",
        "title": "BiDf-MKD on a digits zoo; meta-test on held-out digits 6-9", "settings": settings_key,
        "zoo": {"apis": len(zoo.models), "input_shape": list(zoo.input_shape), "way": 3,
                "meta_train_classes": list(zoo.meta_train_classes), "meta_test_classes": list(zoo.meta_test_classes),
                "heldout_accuracy_mean": round(sum(m.info["heldout_accuracy"] for m in zoo.models.values())
                                               / len(zoo.models), 4)},
        "calls_meaning": "one classification request = one generator step of one inversion (B (q+1) rows)",
    })
    doc.setdefault("runs", [])
    for r in doc["runs"]:  # records written before run_label existed carried the bare method name
        r["method"] = run_label(r["extra"]["variant"])
    command = "python benchmarks/bidf_mkd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    server = start_local(zoo=str(zoo_dir), lm=False)
    try:
        client = Client(server.base_url, provider="bbox-lfm", cache=args.cache, cache_namespace=zoo_namespace(zoo_dir))
        with client:
            for name in args.variants:
                done = [r for r in doc["runs"] if r["extra"]["variant_name"] == name and r["seed"] == args.seed]
                if done and not args.redo:
                    print(f"{name}, seed {args.seed}: done already", flush=True)
                    continue
                extra = dict(VARIANTS[name])
                if extra.get("true_gradient"):
                    extra["zoo_dir"] = str(zoo_dir)
                t0 = time.perf_counter()
                m = BiDfMKD(budget=args.budget, seed=args.seed, **sets, **extra).fit(client)
                fit_s = time.perf_counter() - t0
                tests = [m.meta_test(way=3, shot=shot, episodes=args.episodes, seed=0) for shot in (1, 5)]
                run = meta_test_result(m, tests, provider=client.profile.name,
                                       model=f"{len(zoo.models)} digits APIs ({zoo_dir.name})",
                                       wall_s=time.perf_counter() - t0).to_json()
                run["extra"].update({"variant_name": name, "fit_s": round(fit_s, 1), "stopped_by": m.stopped_by_,
                                     "machine": _machine(), "command": command})
                doc["runs"] = [r for r in doc["runs"] if r not in done] + [run]
                _write(out, doc)
                print(name, args.seed, [(t["shot"], t["accuracy"], t["ci95"]) for t in tests], m.budget_spent_,
                      flush=True)
            if "estimator_cosine" not in doc or args.redo:
                before = client.budget.summary()["calls"]
                doc["estimator_cosine"] = estimator_cosines(client, zoo, points=args.cosine_points, seed=0)
                doc["estimator_cosine_calls"] = client.budget.summary()["calls"] - before
                _write(out, doc)
    finally:
        server.stop()
    _summarise(doc)
    _write(out, doc)
    print(json.dumps(doc.get("summary"), indent=2, ensure_ascii=False))
    return 0


def _pct(t: dict[str, Any]) -> str:
    return f"{100 * t['accuracy']:.1f} ± {100 * t['ci95']:.1f}"


def _summarise(doc: dict[str, Any]) -> None:
    """Per seed: the bar (BiDf-MKD above the random meta-model by more than both intervals, on
    both settings), the gap to the true-gradient upper bound, and a table in percent."""
    by: dict[int, dict[str, dict[str, Any]]] = {}
    for r in doc.get("runs", []):
        by.setdefault(r["seed"], {})[r["extra"]["variant_name"]] = r
    summary: dict[str, Any] = {}
    for seed, v in sorted(by.items()):
        out: dict[str, Any] = {}
        for i, shot in enumerate(("1-shot", "5-shot")):
            row: dict[str, Any] = {}
            if "bidf-mkd" in v and "random" in v:
                a, r = v["bidf-mkd"]["eval"]["settings"][i], v["random"]["eval"]["settings"][i]
                row["over_random"] = round(100 * (a["accuracy"] - r["accuracy"]), 2)
                row["intervals_sum"] = round(100 * (a["ci95"] + r["ci95"]), 2)
                row["bar_met"] = row["over_random"] > row["intervals_sum"]
            if "bidf-mkd" in v and "true-gradient" in v:
                a, t = v["bidf-mkd"]["eval"]["settings"][i], v["true-gradient"]["eval"]["settings"][i]
                row["gap_to_true_gradient"] = round(100 * (t["accuracy"] - a["accuracy"]), 2)
                row["gap_intervals_sum"] = round(100 * (a["ci95"] + t["ci95"]), 2)
            out[shot] = row
        # queries = the method's calls (answered from the cache or not); sent = requests that went
        # upstream (a variant whose inversions repeat another's, e.g. no-boundary's support sets,
        # gets them from the cache)
        out["table"] = {name: {"1-shot": _pct(r["eval"]["settings"][0]), "5-shot": _pct(r["eval"]["settings"][1]),
                               "queries": r["budget_spent"]["calls"], "sent": r["budget_spent"]["requests"]}
                        for name, r in v.items()}
        summary[f"seed {seed}"] = out
    # across seeds (a seed sets the meta-model's initialisation, the API order and every draw):
    # mean and standard deviation of the per-seed means, for the variants every seed ran
    seeds = sorted(by)
    if len(seeds) > 1:
        common = set.intersection(*(set(by[sd]) for sd in seeds))
        across: dict[str, Any] = {"seeds": seeds}
        for name in sorted(common):
            row = {}
            for i, shot in enumerate(("1-shot", "5-shot")):
                accs = [100 * by[sd][name]["eval"]["settings"][i]["accuracy"] for sd in seeds]
                row[shot] = f"{statistics.fmean(accs):.1f} ± {statistics.stdev(accs):.1f}"
                row[f"{shot} per seed"] = [round(a, 1) for a in accs]
            across[name] = row
        summary["across seeds (mean ± std of the seed means)"] = across
    doc["summary"] = summary

if __name__ == "__main__":
    sys.exit(main())
