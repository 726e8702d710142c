"""Black-box distillation on SST-2: SmolLM2 (local server) as teacher, MiniLM students.

    .venv/bin/python benchmarks/distill.py        # everything below: hours on 2 busy cores
    .venv/bin/python benchmarks/distill.py --eval-limit 300 --budgets 300 1000 --pool-size 2000 \\
        --synthetic-budgets 300 --ft-budget 0    # what fitted in the time this was written in

Measured (JSON into benchmarks/results/distill.json, rewritten after every run):

* the teacher: SmolLM2-135M-Instruct through the best manual template (best-of-N's choice on the
  16-shot dev split, read from benchmarks/results/baselines.json or run here), its accuracy on
  the eval split (GLUE validation, 872 rows);
* ``minilm-head`` students at several teacher-sequence budgets (300, 1,000, 3,000 and a few in
  between), random vs active selection, unlabeled (train split, labels hidden) vs synthetic
  (teacher-written) transfer: eval accuracy, F1 and agreement with the teacher;
* the same student trained on the 32 gold labels of the 16-shot split (seed 13) alone;
* one ``minilm-ft`` student (fine-tuned encoder) at 3,000 random sequences;
* the ``sentences`` group: the same random vs active comparison, and ``minilm-ft``, on a pool of
  the train texts of at least ``--min-words`` words (SST-2's train split is mostly phrases, its
  eval split whole sentences); each run records ``pool_min_words``;
* ``--pool-splits train test``: the ft, sentences and ceiling groups' pool also holds SST-2's
  test sentences (1,821, labels hidden, none in the eval split, and closest to it in kind; the
  same ``--min-words`` filter applies);
  each run records ``pool_splits`` and ``pool_texts``; ``--ft-seeds`` repeats the ft group;
* the ``ceiling`` group (diagnostics, beyond the bar's budget): ``minilm-ft`` taught on every text
  of the pool, each student fitted to the teacher's answers on the eval texts themselves, and the
  teacher's log-odds margins on the eval split;
* for each random-selection budget, the smallest active-selection budget whose student agrees
  with the teacher at least as often (``active_vs_random``);
* speed: seconds per example of teacher (cache off, through the server) and student (no
  embedding cache) on the same 256 eval texts, one process after the other on this CPU.

Every teacher answer is cached in benchmarks/.cache/distill.sqlite and every MiniLM embedding in
benchmarks/.cache/minilm_emb.npz (both git-ignored by benchmarks/.cache/.gitignore), so a rerun
is free except for the speed probe. Budgets count every teacher sequence a run uses, cache hits
included, so the cache never lets a run see more teacher answers than its budget.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import itertools
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
OUT = ROOT / "results" / "distill.json"
SEED = 13
sys.path.append(str(ROOT))  # benchmarks/common.py
from common import cpu_flags


def best_template(task: Any, client: Any) -> tuple[str, tuple[str, ...], str]:
    """(template, label words, where the choice came from): the best-of-N baseline's choice on
    the 16-shot dev split of seed 13 -- from benchmarks/results/baselines.json when it holds that
    run, else by running best-of-N here (5 templates x 32 dev examples through the teacher)."""
    path = ROOT / "results" / "baselines.json"
    if path.is_file():
        import bundle

        runs = bundle.load(path).get("runs", [])
        for r in runs:
            if r.get("task") == "sst2" and r.get("method") == "best-of-n" and r.get("seed") == SEED \
                    and isinstance(r.get("prompt"), dict):
                return (r["prompt"]["template"], tuple(r["prompt"]["label_words"]),
                        "best-of-n (16-shot dev, seed 13) in benchmarks/results/baselines.json")
    from bbox_lfm.methods import get

    m = get("best-of-n")(seed=SEED).fit(client, task)
    return (m.best_prompt_["template"], tuple(m.best_prompt_["label_words"]),
            (f"best-of-n run here (16-shot dev, seed 13; dev scores {m.dev_scores_}); "
             f"benchmarks/results/baselines.json had no such run"))


class Bench:
    def __init__(self, eval_limit: int | None):
        from bbox_lfm import Client
        from bbox_lfm.serve import start_local
        from bbox_lfm.students.minilm import shared_encoder
        from bbox_lfm.tasks import load_task, subsample

        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / ".gitignore").write_text("*\n")
        self.server = start_local()
        self.client = Client.local(self.server, cache=CACHE / "distill.sqlite", max_concurrency=32)
        task = load_task("sst2")
        template, words, source = best_template(task, self.client)
        self.task = task.with_template(template, words)
        self.encoder = shared_encoder()
        self.emb_path = CACHE / "minilm_emb.npz"
        print(f"embeddings cached: {self.encoder.load_cache(self.emb_path)}", flush=True)
        self.eval = subsample(self.task.split("eval"), eval_limit, 0)
        self.result: dict[str, Any] = {
            "task": "sst2", "eval_split": self.task.eval_split, "eval_n": len(self.eval), "eval_limit": eval_limit,
            "eval_subsample_seed": 0, "seed": SEED,
            "teacher": {"model": self.client.model, "template": template, "label_words": list(words),
                        "template_source": source},
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "cpu_flags": cpu_flags(),
                        "python": sys.version.split()[0]},
            "runs": [], "notes": []}
        if OUT.is_file():  # runs of an earlier invocation with other settings stay, marked as such
            import bundle

            old = bundle.load(OUT)
            self.result["previous_invocation"] = {k: old.get(k) for k in ("args", "runs", "gold_only", "speed",
                                                                          "ceiling")}

    def save(self) -> None:
        self.encoder.save_cache(self.emb_path)
        import bundle

        bundle.dump(OUT, self.result, "distill")

    def teacher_eval(self) -> None:
        from bbox_lfm.methods.teacher import Teacher, as_input
        from bbox_lfm.tasks import metrics_from_predictions

        t = Teacher(self.task)
        lp, misses = t.label(self.client.with_budget(), [as_input(e) for e in self.eval], progress=True,
                             desc="teacher eval")
        self.teacher_lp = lp  # the ceiling group's targets and margins
        self.teacher_pred = lp.argmax(axis=1)
        m = metrics_from_predictions([e.label for e in self.eval], self.teacher_pred, 2, misses=misses).to_json()
        m["positive_rate"] = float(self.teacher_pred.mean())
        self.result["teacher"]["eval"] = m
        print(f"teacher eval: {m}", flush=True)
        self.save()

    def student_eval(self, predict: Any) -> dict[str, Any]:
        from bbox_lfm.methods.teacher import as_input
        from bbox_lfm.tasks import metrics_from_predictions

        pred = predict([as_input(e) for e in self.eval])
        m = metrics_from_predictions([e.label for e in self.eval], pred, 2).to_json()
        m["agreement"] = float(np.mean(pred == self.teacher_pred))
        return m

    def gold_only(self) -> None:
        from bbox_lfm.methods.teacher import as_input
        from bbox_lfm.students import make_student

        fs = self.task.few_shot(seed=SEED, k=16)
        s = make_student("minilm-head", seed=SEED).fit([as_input(e) for e in fs.train],
                                                       gold=np.array([e.label for e in fs.train]))
        m = self.student_eval(lambda xs: s.predict(xs, progress=False))
        self.result["gold_only"] = {"student": "minilm-head", "gold_labels": len(fs.train), "eval": m}
        print(f"gold only (32 labels): {m}", flush=True)
        self.save()

    def run(self, *, transfer: str, selection: str, budget: int, student: str = "minilm-head",
            pool_size: int = 6000, min_words: int = 0, splits: tuple[str, ...] = ("train",),
            student_kw: dict[str, Any] | None = None, seed: int = SEED, **active: Any) -> dict[str, Any]:
        from bbox_lfm.methods.distill import Distill

        unlabeled = self.pool(min_words, splits)
        t0 = time.perf_counter()
        m = Distill(student=student, transfer=transfer, selection=selection, budget=budget, pool_size=pool_size,
                    seed=seed, student_kw=student_kw, **active).fit(self.client, self.task, unlabeled=unlabeled,
                                                                    progress=False)
        fit_s = time.perf_counter() - t0
        ev = self.student_eval(lambda xs: m.predict(None, xs, progress=False))
        row = {"student": student, "transfer": transfer, "selection": selection, "budget_sequences": budget,
               "seed": seed, "pool_min_words": min_words, "pool_splits": list(splits), "pool_texts": len(unlabeled),
               "teacher_sequences_used": m.n_queried_, "sent_upstream": m.budget_spent_["sequences"],
               "cache_hits": m.budget_spent_["cache_hits"], "transfer_size": len(m.inputs_),
               "active": {k: getattr(m, k) for k in ("diversity", "explore", "rounds", "candidates", "uncertainty")}
               if selection == "active" else None,
               "student_config": m.student_.get_config(), "eval": ev, "fit_s": round(fit_s, 1), "curve": m.curve_,
               "stats": {k: v for k, v in m.stats_.items() if k != "fit_s"}}
        self.result["runs"].append(row)
        print(f"{student} {transfer:9s} {selection:6s} {active or ''} {budget:5d} min_words {min_words}: acc {ev['accuracy']:.4f} "
              f"agree {ev['agreement']:.4f} (n_transfer {len(m.inputs_)}, {fit_s:.0f}s)", flush=True)
        self.save()
        self.last = m
        return row

    def pool(self, min_words: int, splits: tuple[str, ...]) -> list[str]:
        """The unlabeled texts (labels hidden) of ``splits`` with at least ``min_words`` words (the
        default, the whole train split, is what Distill takes when given none). SST-2's train split
        is mostly phrases, its eval split whole sentences; its test split (1,821 sentences, disjoint
        from the eval split) is the closest unlabeled text to the eval split."""
        return [e.text for s in splits for e in self.task.split(s) if len(e.text.split()) >= min_words]

    def ceiling(self, *, min_words: int, splits: tuple[str, ...], epochs: int | None) -> None:
        """Diagnostics, not bar figures: (1) ``minilm-ft`` taught by the teacher on every text of
        the pool (more teacher sequences than the bar allows): how far more queries would go;
        (2) each student fitted to the teacher's answers on the eval texts themselves, then scored
        on them: how well the student can represent the teacher's decisions at all."""
        from bbox_lfm.methods.teacher import as_input
        from bbox_lfm.students import make_student
        from bbox_lfm.students.minilm import MiniLMFineTune

        pool = self.pool(min_words, splits)
        epochs = epochs or inspect.signature(MiniLMFineTune).parameters["epochs"].default
        done = [r for r in self.result["runs"] if r.get("diagnostic") and r["budget_sequences"] == len(pool)
                and r.get("pool_min_words") == min_words and r.get("pool_splits") == list(splits)
                and r["student_config"]["epochs"] == epochs]
        if done:  # kept by --append: the same run again would take a quarter of an hour for the same figure
            print(f"every-text run already in the results: agree {done[-1]['eval']['agreement']:.4f}", flush=True)
        else:
            self.run(transfer="unlabeled", selection="random", budget=len(pool), student="minilm-ft",
                     pool_size=len(pool), min_words=min_words, splits=splits,
                     student_kw={"epochs": epochs})
            self.result["runs"][-1]["diagnostic"] = "every pool text labelled: beyond the 3,000-sequence bar"
        inputs, lp = [as_input(e) for e in self.eval], self.teacher_lp
        fits = {}
        for name in ("minilm-head", "minilm-ft"):
            t0 = time.perf_counter()
            s = make_student(name, seed=SEED).fit(inputs, teacher_logprobs=lp)
            fits[name] = {**self.student_eval(functools.partial(s.predict, progress=False)),
                          "fit_s": round(time.perf_counter() - t0, 1), "student_config": s.get_config()}
            print(f"fit on the eval texts' own teacher answers, {name}: agree {fits[name]['agreement']:.4f}", flush=True)
        margin = np.abs(lp[:, 1] - lp[:, 0])  # log-odds: the label words' normalisation cancels
        self.result["ceiling"] = {
            "fit_on_eval_texts": fits,
            "teacher_eval_margin": {f"below_{q}": float(np.mean(margin < q)) for q in (0.25, 0.5, 1.0, 2.0)},
            "how": "students trained on the teacher's answers for the 872 eval texts and scored on the same texts "
                   "(a representation check, not a generalisation figure); teacher_eval_margin: share of eval "
                   "texts whose teacher log-odds |log p(positive) - log p(negative)| is below each value"}
        self.save()

    def speed(self, n: int = 256) -> None:
        from bbox_lfm.methods.teacher import Teacher, as_input
        from bbox_lfm.students import make_student

        inputs = [as_input(e) for e in self.eval[:n]]
        live = self.client.with_cache_mode("off")
        t = Teacher(self.task)
        t.label(live, inputs[:16])  # warm-up
        t0 = time.perf_counter()
        t.label(live, inputs)
        teacher_s = (time.perf_counter() - t0) / len(inputs)
        # speed does not depend on what the head learned: the default student, fitted on 4 texts
        student = make_student("minilm-head").fit(inputs[:4], gold=np.array([0, 1, 0, 1]))
        student.predict_proba(inputs[:16], progress=False, cache=False)  # warm-up
        t0 = time.perf_counter()
        student.predict_proba(inputs, progress=False, cache=False)
        student_s = (time.perf_counter() - t0) / len(inputs)
        self.result["speed"] = {"n": len(inputs), "teacher_s_per_example": teacher_s,
                                "student_s_per_example": student_s, "speedup": teacher_s / student_s,
                                "student": student.name, "load_avg_1m": os.getloadavg()[0],
                                "how": f"teacher: one request per text, {self.client.max_concurrency} concurrent, cache off, through the local "
                                       "server (dynamic batching, bf16 if the server uses it); student: batches of 64 "
                                       "texts sorted by length, fp32 torch, no embedding cache; both on this shared "
                                       "2-core CPU"}
        print(f"speed: {self.result['speed']}", flush=True)
        self.save()


def speed_only(n: int, eval_limit: int | None) -> int:
    """Rerun the teacher-vs-student speed probe and write it into the existing results file."""
    import bundle

    if not OUT.is_file():
        print(f"{OUT} does not exist: run the benchmark first", file=sys.stderr)
        return 2
    saved = bundle.load(OUT)
    b = Bench(eval_limit)
    try:
        b.speed(n)
    finally:
        b.server.stop()
    saved["speed"] = b.result["speed"]
    bundle.dump(OUT, saved, "distill")
    return 0


def active_vs_random(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each pool and random-selection budget: its agreement, and the smallest active-selection
    budget measured on the same pool whose student agrees with the teacher at least as often (None:
    none did)."""
    def pool(r: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
        return r.get("pool_min_words", 0), tuple(r.get("pool_splits", ["train"]))

    def points(selection: str, key: tuple[int, tuple[str, ...]]) -> list[tuple[int, float]]:
        return sorted((r["budget_sequences"], r["eval"]["agreement"]) for r in runs
                      if r["student"] == "minilm-head" and r["transfer"] == "unlabeled" and r["selection"] == selection
                      and pool(r) == key and not r.get("diagnostic")
                      and (r.get("active") or {}).get("diversity", "kcenter") == "kcenter"
                      and not (r.get("active") or {}).get("explore"))

    out = []
    for key in sorted({pool(r) for r in runs}):
        active = points("active", key)
        for budget, agree in points("random", key):
            reached = [b for b, a in active if a >= agree]
            out.append({"pool_min_words": key[0], "pool_splits": list(key[1]), "random_budget": budget,
                        "random_agreement": agree, "active_budget_reaching_it": min(reached) if reached else None})
    return out


GROUPS = ("unlabeled", "variants", "synthetic", "ft", "sentences", "ceiling", "speed")
#: active selection settings compared with the default (entropy shortlist + k-center greedy)
ACTIVE_VARIANTS = ({"diversity": "kmeans"}, {"diversity": "kmeans", "explore": 0.5})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval-limit", type=int, default=None, help="seeded subsample of the eval split (default: all)")
    ap.add_argument("--budgets", type=int, nargs="+", default=[300, 1000, 3000], help="teacher sequences")
    ap.add_argument("--pool-size", type=int, default=6000, help="unlabeled texts active selection chooses from")
    ap.add_argument("--synthetic-budgets", type=int, nargs="*", default=[300, 1000, 3000])
    ap.add_argument("--ft-budget", type=int, default=3000, help="budget of the minilm-ft run (0: skip)")
    ap.add_argument("--ft-selections", nargs="+", default=["random"], choices=["random", "active"],
                    help="the ft group's selections")
    ap.add_argument("--ft-seeds", type=int, nargs="+", default=[SEED],
                    help="the ft group's seeds (pool sample, selection, student init and data order)")
    ap.add_argument("--ft-min-words", type=int, default=0, help="the ft group's pool: train texts of at least "
                    "this many words (0: all)")
    ap.add_argument("--ft-epochs", type=int, default=None, help="the ft group's epochs (default: the student's)")
    ap.add_argument("--min-words", type=int, default=10,
                    help="the 'sentences' group's pool: train texts of at least this many words")
    ap.add_argument("--pool-splits", nargs="+", default=["train"], choices=["train", "test"],
                    help="where the ft, sentences and ceiling groups' unlabeled texts come from (labels hidden; "
                         "test: SST-2's 1,821 test sentences, disjoint from the eval split)")
    ap.add_argument("--speed-n", type=int, default=256, help="eval texts timed in the speed probe")
    ap.add_argument("--speed-only", action="store_true",
                    help="only rerun the speed probe and update 'speed' in the existing JSON (e.g. on a quieter machine)")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS,
                    help="which runs: unlabeled (random vs active k-center), variants (other active settings), "
                         "synthetic, ft (minilm-ft), sentences (random vs active and minilm-ft on a pool of "
                         "sentence-length train texts, --min-words), ceiling (diagnostics: minilm-ft on every pool text, "
                         "students fitted to the eval texts' own teacher answers, teacher margins), speed")
    ap.add_argument("--append", action="store_true",
                    help="keep the runs already in the JSON and add these (same teacher and eval split)")
    args = ap.parse_args()
    if args.speed_only:
        return speed_only(args.speed_n, args.eval_limit)
    b = Bench(args.eval_limit)
    if args.append and "previous_invocation" in b.result:
        kept = b.result.pop("previous_invocation")
        b.result["runs"] = list(kept.get("runs") or [])
        b.result["speed"] = kept.get("speed")
        if kept.get("ceiling"):
            b.result["ceiling"] = kept["ceiling"]
    b.result["args"] = vars(args)
    groups = set(args.groups)
    try:
        t0 = time.perf_counter()
        b.teacher_eval()
        b.gold_only()
        # cheapest first, so a run cut short still holds comparable points
        for budget in sorted(args.budgets):
            if "unlabeled" in groups:
                for selection in ("random", "active"):
                    b.run(transfer="unlabeled", selection=selection, budget=budget, pool_size=args.pool_size)
            if "variants" in groups:
                for variant in ACTIVE_VARIANTS:
                    b.run(transfer="unlabeled", selection="active", budget=budget, pool_size=args.pool_size, **variant)
        if "synthetic" in groups:
            for budget in sorted(args.synthetic_budgets):
                b.run(transfer="synthetic", selection="random", budget=budget)
        if args.ft_budget and "ft" in groups:
            for seed, selection in itertools.product(args.ft_seeds, args.ft_selections):
                b.run(seed=seed, transfer="unlabeled", selection=selection, budget=args.ft_budget, student="minilm-ft",
                      pool_size=args.pool_size, min_words=args.ft_min_words, splits=tuple(args.pool_splits),
                      student_kw={"epochs": args.ft_epochs} if args.ft_epochs else None)
        if "sentences" in groups:
            for budget in sorted(args.budgets):
                for selection in ("random", "active"):
                    b.run(transfer="unlabeled", selection=selection, budget=budget, pool_size=args.pool_size,
                          min_words=args.min_words, splits=tuple(args.pool_splits))
            if args.ft_budget:
                b.run(transfer="unlabeled", selection="random", budget=args.ft_budget, student="minilm-ft",
                      pool_size=args.pool_size, min_words=args.min_words, splits=tuple(args.pool_splits))
        if "ceiling" in groups:
            b.ceiling(min_words=args.min_words, splits=tuple(args.pool_splits), epochs=args.ft_epochs)
        if "speed" in groups:
            b.speed(args.speed_n)
        b.result["active_vs_random"] = active_vs_random(b.result["runs"])
        b.result["wall_s"] = round(time.perf_counter() - t0, 1)
        b.save()
    finally:
        b.server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
