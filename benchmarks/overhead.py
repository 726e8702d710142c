"""Measure the client stack's own cost (issue 2).

* ``stack_overhead_ms_median``: per-query time of ``Client.send`` with every layer on (cache in
  readwrite mode on the default SQLite store, budget with limits, rate limiter, retry) minus
  the time of calling the zero-latency mock adapter directly, each query new (a cache miss
  that is then written). Median over many queries, interleaved so machine noise hits both.
* ``fanout_wall_over_ideal``: 200 queries against a mock with 50 ms latency at concurrency 20;
  the ideal is 200 / 20 * 50 ms = 0.5 s.

Prints one JSON object and writes it to benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import cpu_flags

from bbox_lfm import Budget, Client, MockAdapter, Query
from bbox_lfm.stores import MemoryStore
from bbox_lfm.stores.sqlite import SQLiteStore
from bbox_lfm.types import Choice, Response, Usage

RESPONSE = Response(choices=(Choice(index=0, text=" great", extra={"label_logprobs": [-0.5, -1.2]}),),
                    model="m", usage=Usage(prompt_tokens=20, completion_tokens=0))


def handler(q: Query) -> Response:
    return RESPONSE


def overhead(store: object, n: int) -> dict[str, float]:
    adapter = MockAdapter(handler)
    client = Client("http://mock/v1", adapter=adapter, provider="bbox-lfm", model="m", cache=store,
                    budget=Budget(requests=10 * n, sequences=10 * n, tokens=10**9, dollars=1e6),
                    requests_per_minute=1e9, tokens_per_minute=1e12)
    extra = {"label_words": [" terrible", " great"]}
    stack, direct = [], []
    for i in range(n):
        q = Query(prompt=(f"review number {i}: a fine film . It was",), max_tokens=0, extra=extra)
        t0 = time.perf_counter()
        adapter.send(q.with_model("m"))
        t1 = time.perf_counter()
        client.send(q)
        t2 = time.perf_counter()
        direct.append(t1 - t0)
        stack.append(t2 - t1)
    over = sorted(s - d for s, d in zip(stack, direct))
    return {"median_ms": 1e3 * statistics.median(over), "p90_ms": 1e3 * over[int(0.9 * len(over))]}


def fanout(n: int = 200, latency: float = 0.05, concurrency: int = 20) -> float:
    client = Client("http://mock/v1", adapter=MockAdapter(handler, latency_s=latency), provider="bbox-lfm",
                    model="m", cache=MemoryStore())
    queries = [Query(prompt=(f"q{i}",), max_tokens=0) for i in range(n)]
    t0 = time.perf_counter()
    client.send_many(queries, max_concurrency=concurrency)
    wall = time.perf_counter() - t0
    return wall / (n / concurrency * latency)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "overhead.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        sqlite = overhead(SQLiteStore(Path(d) / "cache.sqlite"), args.n)
    memory = overhead(MemoryStore(), args.n)
    ratio = min(fanout() for _ in range(3))
    result = {
        "stack_overhead_ms_median": round(sqlite["median_ms"], 4),
        "stack_overhead_ms_p90": round(sqlite["p90_ms"], 4),
        "stack_overhead_ms_median_memory_store": round(memory["median_ms"], 4),
        "fanout_wall_over_ideal": round(ratio, 4),
        "target": {"stack_overhead_ms_median": 0.2, "fanout_wall_over_ideal": 1.25},
        "n_queries": args.n,
        "note": "overhead = Client.send minus a direct call of the same zero-latency mock; cache misses "
                "written to SQLite (WAL); fan-out is the best of 3 runs of 200 x 50 ms at concurrency 20",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"kind": "speed", "cpu_flags": cpu_flags(), **result}, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
