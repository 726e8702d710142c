"""Reliability under faults, crashes, bad input and load, measured at full size.

Sections (``--sections``, all by default), each written into ``benchmarks/results/reliability.json``
as soon as it ends:

- ``faults``: a zero-shot eval of ``--eval-limit`` SST-2 rows and a short BDPL run, each once
  straight to the local server and once through a proxy that injects a fault into every fifth
  request (429 with Retry-After, 500, 503, a 200 cut in half, a closed connection, a stall past
  the client's timeout, in turn). Figures: faults by kind, retries the results counted, and the
  difference between the two results files (must be none). Fresh caches for both runs, so every
  request really goes out.
- ``kills``: a short BDPL tuning run through the CLI, SIGKILLed ``--kills`` times at random points
  and restarted until it ends; compared with an uninterrupted run; the proxy in front of the
  server counts what reached it, so ``repeated`` is the number of queries answered twice.
- ``fuzz``: ``--fuzz-cases`` request bodies drawn from the server's OpenAPI schema (hypothesis),
  plus hand-made bad tensors; statuses counted; 5xx answers must be 0; the server must answer
  a reference request identically afterwards.
- ``budget``: 64 threads, each making 120 ``generate`` calls against a slow mock that fails one
  attempt in seven, at several limits of calls, requests, sequences, tokens and dollars; the
  overshoot (what was answered beyond the limit) must be 0, and no query answered twice.
- ``load``: 64 concurrent clients (each its own ``Client``, one prompt per request, no cache)
  for ``--load-rounds`` rounds of ``--load-per-round`` requests each: errors, latency
  percentiles, and this process's memory after each round (the server runs in it).

    nice -n 15 python benchmarks/reliability.py [--sections faults,kills,fuzz,budget,load]

The local server (SmolLM2-135M-Instruct, CPU) runs in this process. Data are read from
``$BBOX_LFM_DATA`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))  # the helpers the tests use, shared

from common import cpu_flags  # benchmarks/common.py

OUT = HERE / "results" / "reliability.json"
TIMEOUT_S = 15.0


def write(results: dict[str, Any]) -> None:
    """Atomically, after every section."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, OUT)


# -- sections ---------------------------------------------------------------------------------


def faults(server: Any, args: argparse.Namespace, previous: dict[str, Any] | None = None,
           on_progress: Any = None) -> dict[str, Any]:
    from _util import comparable, differences, local_client

    from bbox_lfm.methods import get
    from bbox_lfm.methods.harness import run
    from bbox_lfm.tasks import load_task
    from bbox_lfm.testing.faults import FaultProxy

    def one(name: str, base_url: str, cache: Path, timeout: float) -> dict[str, Any]:
        task = load_task("sst2")
        if name == "eval":
            method = get("zero-shot")(prompt="", template=task.template, label_words=task.label_words)
            batch, limit = 1, args.eval_limit
        else:
            method = get("bdpl")(prompt_length=2, n_candidates=8, sample_size=4, budget=16, eval_every=8, seed=13)
            batch, limit = 8, 64
        with local_client(base_url, server.model_id, cache, max_batch=batch, timeout=timeout) as client:
            return run(method, client, task, seed=13, eval_limit=limit, progress=False).to_json()

    out: dict[str, Any] = dict(previous or {})
    out["every"] = 5
    for name in args.fault_runs.split(","):
        # BDPL sends a population of 8-prompt requests at once; on a loaded CPU they queue at the
        # server past 15 s, so its timeout (and the stall that must outlast it) is longer
        timeout = TIMEOUT_S if name == "eval" else 60.0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            clean = one(name, server.base_url, Path(tmp) / "clean.sqlite", timeout)
            t1 = time.perf_counter()
            with FaultProxy(server.base_url, every=5, stall_s=timeout + 1) as proxy:
                faulty = one(name, proxy.base_url, Path(tmp) / "faulty.sqlite", timeout)
            t2 = time.perf_counter()
        seen = proxy.summary()
        diff = differences(comparable(clean), comparable(faulty))
        out[name] = {
            "requests_seen_by_proxy": seen["requests"], "faults_injected": seen["faults"],
            "faults_by_kind": seen["injected"],
            "retries_counted": faulty["budget_spent"]["retries"] + faulty["eval_spent"]["retries"],
            "calls_clean": clean["budget_spent"]["calls"] + clean["eval_spent"]["calls"],
            "calls_faulty": faulty["budget_spent"]["calls"] + faulty["eval_spent"]["calls"],
            "eval_accuracy_clean": clean["eval"]["accuracy"], "eval_accuracy_faulty": faulty["eval"]["accuracy"],
            "differences_from_clean": diff, "wall_s_clean": round(t1 - t0, 1), "wall_s_faulty": round(t2 - t1, 1),
            "client_timeout_s": timeout, "stall_s": timeout + 1}
        print(name, json.dumps(out[name]), flush=True)
        if on_progress is not None:
            on_progress(out)
    return out


def kills(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    from _util import CONCURRENCY, kill_and_resume

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "clean").mkdir()
        (Path(tmp) / "killed").mkdir()
        clean, clean_counts = kill_and_resume(server, Path(tmp) / "clean", kills=0, seed=0)
        killed, counts = kill_and_resume(server, Path(tmp) / "killed", kills=args.kills, seed=args.seed)
    return {"kills_attempted": args.kills, "kills_survived": counts["kills"],
            "queries_repeated": counts["repeated"], "allowed_in_flight": counts["kills"] * CONCURRENCY,
            "requests_forwarded_killed_run": counts["forwarded"], "requests_forwarded_clean_run":
            clean_counts["forwarded"], "same_prompt": killed["prompt"] == clean["prompt"],
            "same_curve": killed["curve"] == clean["curve"], "same_eval": killed["eval"] == clean["eval"]}


def fuzz(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from _fuzz import bodies, check_answer, encode, reference, tensor_cases
    from hypothesis import HealthCheck, given, settings

    statuses: dict[str, int] = {}
    failures: list[str] = []
    root = server.base_url.removesuffix("/v1")
    with httpx.Client(base_url=root, timeout=600) as http:
        before = reference(http, server)
        openapi = http.get("/openapi.json").json()

        def record(r: httpx.Response, body: Any) -> None:
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            try:
                check_answer(r, body)
            except AssertionError as exc:
                failures.append(str(exc)[:300])

        @settings(max_examples=args.fuzz_cases, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(bodies(openapi, server.model_id))
        def one(case: tuple[str, Any]) -> None:
            route, body = case
            record(http.post(route, content=encode(body), headers={"content-type": "application/json"}), body)

        t0 = time.perf_counter()
        one()
        meta = next(m for m in http.get("/v1/models").json()["data"] if m["id"] == server.model_id)["metadata"]
        tensor_answers = {}
        for route in ("/v1/completions", "/v1/chat/completions", "/v1/bbox/hidden_stats"):
            for name, soft, _field in tensor_cases(int(meta["hidden_size"]), int(meta["context_length"])):
                body: dict[str, Any] = {"model": server.model_id, "soft_prompt": soft}
                body.update({"completions": {"prompt": "It was", "max_tokens": 0},
                             "chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
                             "bbox/hidden_stats": {"input": ["It was"]}}[route.removeprefix("/v1/")])
                r = http.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
                record(r, body)
                tensor_answers[f"{route} {name}"] = r.status_code
        after = reference(http, server)
        healthy = http.get("/health").status_code == 200
    total = sum(statuses.values())
    return {"requests": total, "hypothesis_cases": args.fuzz_cases, "tensor_cases": len(tensor_answers),
            "statuses": statuses, "answers_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "shape_violations": len(failures), "first_violations": failures[:5], "healthy_after": healthy,
            "reference_max_abs_diff": max(abs(a - b) for a, b in zip(before, after, strict=True)),
            "tensor_case_statuses": tensor_answers, "wall_s": round(time.perf_counter() - t0, 1)}


def budget(args: argparse.Namespace) -> dict[str, Any]:
    from test_budget_threads import run_limits

    rows = []
    for limits in ({"calls": 1}, {"calls": 7}, {"calls": 50}, {"calls": 1000}, {"requests": 1}, {"requests": 13},
                   {"requests": 119}, {"sequences": 3}, {"sequences": 99}, {"tokens": 50}, {"tokens": 777},
                   {"dollars": 0.0001}, {"dollars": 0.0033},
                   {"calls": 900, "requests": 60, "sequences": 90, "tokens": 1200, "dollars": 0.004}):
        out = run_limits(limits, n_groups=120)
        spent, provider, b = out["spent"], out["provider"], out["budget"]
        overshoot = {u: max(0.0, spent[u] - lim) for u, lim in limits.items()}
        rows.append({"limits": limits, "spent": {u: round(v, 8) for u, v in spent.items()},
                     "overshoot": overshoot, "max_answers_per_query": max(provider.answered.values(), default=0),
                     "retries_counted": b.summary()["retries"], "failed_attempts": provider.failures})
    return {"threads": 64, "calls_per_thread": 120, "runs": rows,
            "overshoot_total": sum(sum(r["overshoot"].values()) for r in rows),
            "runs_with_a_query_answered_twice": sum(r["max_answers_per_query"] > 1 for r in rows)}


def load(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    from _util import load as run_load

    return run_load(server.base_url, server.model_id, clients=64, rounds=args.load_rounds,
                    per_round=args.load_per_round)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="budget,fuzz,faults,kills,load")
    p.add_argument("--eval-limit", type=int, default=200)
    p.add_argument("--fault-runs", default="eval,bdpl", help="which runs of the faults section (eval, bdpl)")
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fuzz-cases", type=int, default=600)
    p.add_argument("--load-rounds", type=int, default=8)
    p.add_argument("--load-per-round", type=int, default=4)
    args = p.parse_args()
    results: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    results.update(kind="speed", benchmark="reliability")  # not a method's runs: `bbox-lfm report` skips it
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                          "cpu_flags": cpu_flags(), "device": "cpu", "shared": "2 cores shared with other jobs"}
    sections = args.sections.split(",")
    server = None
    try:
        for name in sections:
            if name != "budget" and server is None:
                from bbox_lfm.serve import start_local

                server = start_local()
            t0 = time.perf_counter()
            if name == "budget":
                figures = budget(args)
            elif name == "faults":
                def save(part: dict[str, Any]) -> None:
                    results["faults"] = part
                    write(results)
                figures = faults(server, args, results.get("faults"), save)
            else:
                figures = globals()[name](server, args)
            figures["section_wall_s"] = round(time.perf_counter() - t0, 1)
            results[name] = figures
            write(results)
            print(name, "done", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
