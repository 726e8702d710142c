"""What the server's batching features buy: shared prefixes, merged generation, length-sorted requests.

Each figure compares two ways of doing the same work, side by side in this one run, on SmolLM2 (float32):

- ``shared_prefix_icl_speedup``: 64 SST-2 eval sentences behind the same 8 in-context
  demonstrations (4 per class from the 16-shot split, seed 13), label words scored by the engine
  with the common prefix run once (and its keys/values reused) over the same rows run whole.
- ``shared_prefix_soft_speedup``: the same for 32 rows behind one 50-token soft prompt (a BBT
  call: one candidate, the 32 training examples of the 16-shot split).
  Both also report the largest label log-prob difference between the two ways.
- ``merged_generation_speedup``: ``--gen-requests`` (16) sampled chat requests (48 tokens, one
  seed each) sent concurrently to the server (decoded together) over the same requests one after
  another; the texts must be equal.
- ``length_sorted_eval_speedup``: :func:`bbox_lfm.tasks.evaluate` of 512 SST-2 eval rows with
  requests of similar-length prompts (the default) over requests in the split's order.

    python benchmarks/batching.py [--rounds 2]

Writes ``benchmarks/results/batching.json``; each time is the best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))  # benchmarks/common.py
from common import cpu_flags


def timed(fn: Any, rounds: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gen-requests", type=int, default=16)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "batching.json")
    args = ap.parse_args()

    import torch

    import bbox_lfm.serve.prefix as prefix_mod
    from bbox_lfm import Client
    from bbox_lfm.serve import encode_tensor, start_local
    from bbox_lfm.serve.engine import Sequence
    from bbox_lfm.tasks import load_task
    from bbox_lfm.tasks.evaluate import evaluate

    task = load_task("sst2").with_template("Review: {text}\nSentiment:", (" negative", " positive"))
    load_start = os.getloadavg()[0]
    server = start_local()
    engine = server.app.service.engine
    words = [engine.encode(w, specials=False)[0] for w in task.label_words]
    result: dict[str, Any] = {}

    def engine_scores(seqs: list[Any], shared: bool) -> np.ndarray:
        saved = prefix_mod.MIN_SHARED_PREFIX
        prefix_mod.MIN_SHARED_PREFIX = saved if shared else 10**9
        engine.forward.prefixes.clear()
        try:
            out: list[Any] = [None] * len(seqs)
            for chunk in engine.plan(seqs, 64):
                for i, lp in zip(chunk, engine.logprobs([seqs[i] for i in chunk])):
                    out[i] = lp[-1, words].numpy()
            return np.stack(out)
        finally:
            prefix_mod.MIN_SHARED_PREFIX = saved

    def compare(name: str, seqs: list[Any]) -> None:
        whole_s, whole = timed(lambda: engine_scores(seqs, False), args.rounds)
        shared_s, shared = timed(lambda: engine_scores(seqs, True), args.rounds)
        result[f"{name}_speedup"] = round(whole_s / shared_s, 3)
        result[f"{name}_max_abs_logprob_diff"] = float(np.abs(whole - shared).max())
        result.setdefault("seconds", {})[name] = {"whole": round(whole_s, 3), "shared": round(shared_s, 3)}
        result.setdefault("rows", {})[name] = {"n": len(seqs), "shared_prefix": engine.shared_prefix(seqs),
                                               "mean_tokens": float(np.mean([len(s.ids) for s in seqs]))}
        print(f"{name}: whole {whole_s:.1f}s shared {shared_s:.1f}s", flush=True)

    try:
        # in-context learning: 8 demonstrations then the query
        fs = task.few_shot(seed=13)
        rng = np.random.default_rng(13)
        demos = [fs.train[i] for i in rng.permutation(len(fs.train))[:8]]
        prefix = "".join(task.format(d) + task.label_words[d.label] + "\n\n" for d in demos)
        rows = task.split("eval")[:64]
        icl = [Sequence(engine.encode(prefix + task.format(e), specials=True), 1) for e in rows]
        compare("shared_prefix_icl", icl)

        # a BBT call: one 50-token soft prompt, the 32 training examples
        from bbox_lfm.serve.protocol import TensorPayload
        from bbox_lfm.serve.tensors import prompt_tensors

        soft = rng.normal(0, engine.embedding_std, (50, engine.hidden_size)).astype(np.float32)
        tensors = prompt_tensors(TensorPayload(**encode_tensor(soft)), None, hidden_size=engine.hidden_size,
                                 num_layers=engine.num_layers, vocab_size=engine.vocab_size)
        bbt = []
        span = None
        for e in fs.train:
            ids, start = engine.build(task.format(e), specials=True, prompt=tensors, index=0)
            span = span or engine.soft_span(tensors, start)
            bbt.append(Sequence(ids, 1, span))
        compare("shared_prefix_soft", bbt)

        # generation: concurrent sampled requests, decoded together vs one after another
        client = Client.local(server, cache_mode="off", max_concurrency=args.gen_requests, timeout=900)
        from bbox_lfm.types import Query

        queries = [Query(endpoint="chat", messages=({"role": "user", "content": "Write a one-sentence movie review."},),
                         max_tokens=48, temperature=1.0, seed=i) for i in range(args.gen_requests)]
        seq_s, seq_out = timed(lambda: [client.send(q).text for q in queries], 1)
        merged_before = server.app.batcher.merged_jobs
        con_s, con_out = timed(lambda: [r.text for r in client.send_many(queries)], 1)
        result["merged_generation_speedup"] = round(seq_s / con_s, 3)
        result["merged_generation_same_texts"] = seq_out == con_out
        result["merged_generation_jobs_merged"] = server.app.batcher.merged_jobs - merged_before
        result.setdefault("seconds", {})["generation"] = {"one_by_one": round(seq_s, 3), "concurrent": round(con_s, 3)}
        print(f"generation: one by one {seq_s:.1f}s, concurrent {con_s:.1f}s", flush=True)

        # evaluation: requests of similar-length prompts vs the split's order
        ev_client = Client.local(server, cache_mode="off", max_concurrency=2, timeout=900)
        import importlib

        evaluate_mod = importlib.import_module("bbox_lfm.tasks.evaluate")
        sorted_fn = sorted

        def split_order(*a: Any, key: Any = None, **k: Any) -> list[Any]:
            return list(a[0])  # the order the prompts came in

        def run_eval(sort: bool) -> float:
            evaluate_mod.sorted = sorted_fn if sort else split_order  # type: ignore[attr-defined]
            try:
                return evaluate(ev_client, task, "eval", limit=512, progress=False).accuracy
            finally:
                del evaluate_mod.sorted  # back to the builtin

        unsorted_s, acc_u = timed(lambda: run_eval(False), args.rounds)
        sorted_s, acc_s = timed(lambda: run_eval(True), args.rounds)
        result["length_sorted_eval_speedup"] = round(unsorted_s / sorted_s, 3)
        result["length_sorted_eval_same_accuracy"] = acc_u == acc_s
        result.setdefault("seconds", {})["eval_512"] = {"split_order": round(unsorted_s, 3),
                                                        "length_sorted": round(sorted_s, 3)}
        print(f"eval: split order {unsorted_s:.1f}s, length-sorted {sorted_s:.1f}s", flush=True)
    finally:
        server.stop()
    result["setup"] = {"model": engine.model_id, "dtype": str(engine.dtype), "device": str(engine.device),
                       "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
                       "platform": platform.platform(), "load_average_at_start": round(load_start, 2),
                       "load_average_at_end": round(os.getloadavg()[0], 2), "rounds": args.rounds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": "speed", **result}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
