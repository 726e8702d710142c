"""64 threads against a slow, flaky mock never overshoot any limit, nor send a query twice."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest

from bbox_lfm import Budget, Client, MockAdapter, Query, Usage
from bbox_lfm.errors import BudgetExhausted, ServerError
from bbox_lfm.profiles import Price
from bbox_lfm.stores import MemoryStore
from bbox_lfm.types import Choice, Response

PRICE = Price(prompt=2.5, completion=10.0)
THREADS = 64


class SlowFlakyProvider:
    """Answers after 2 ms; one attempt in seven fails with a 503 (retried). Counts what it answers."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.lock = threading.Lock()
        self.answered: Counter[tuple[str, ...]] = Counter()
        self.tokens = 0
        self.cost = 0.0
        self.failures = 0

    def __call__(self, q: Query) -> Response:
        with self.lock:
            fail = self.rng.random() < 1 / 7
            self.failures += fail
        if fail:
            raise ServerError("flaky", status_code=503)
        usage = Usage(prompt_tokens=3 * len(q.prompt), completion_tokens=q.sequences)
        cost = PRICE.cost(usage.prompt_tokens, usage.completion_tokens)
        with self.lock:
            self.answered[q.prompt] += 1
            self.tokens += usage.total_tokens
            self.cost += cost
        return Response(choices=tuple(Choice(index=i, text="ok") for i in range(q.sequences)), usage=usage,
                        cost_usd=cost)


def _hammer(client: Client, groups: list[tuple[str, ...]]) -> int:
    """Every thread generates for every group of prompts (one call each, shuffled its own way);
    returns the calls that were answered (from the provider or the cache)."""
    barrier = threading.Barrier(THREADS)
    got = Counter[int]()
    lock = threading.Lock()

    def worker(i: int) -> None:
        mine = list(groups)
        random.Random(i).shuffle(mine)
        barrier.wait()
        n = 0
        for prompts in mine:
            try:
                client.generate(list(prompts), max_tokens=1)
                n += 1
            except BudgetExhausted:
                continue
        with lock:
            got[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(got.values())


def run_limits(limits: dict[str, float], n_groups: int = 60) -> dict[str, Any]:
    """64 threads under ``limits``; what the provider answered, the calls answered, the budget."""
    provider = SlowFlakyProvider()
    budget = Budget(**limits)
    groups = [tuple(f"q{i}-{k}" for k in range(1 + i % 3)) for i in range(n_groups)]
    with Client("http://mock/v1", adapter=MockAdapter(provider, latency_s=0.002), provider="openai", model="gpt-4o",
                api_key="sk-x", cache=MemoryStore(), budget=budget, sleep=lambda s: None) as client:
        calls = _hammer(client, groups)
    spent = {"calls": calls, "requests": sum(provider.answered.values()),
             "sequences": sum(len(p) * n for p, n in provider.answered.items()),
             "tokens": provider.tokens, "dollars": provider.cost}
    return {"spent": spent, "provider": provider, "budget": budget}


LIMITS = [{"calls": 1}, {"calls": 37}, {"requests": 1}, {"requests": 40}, {"sequences": 50}, {"tokens": 400},
          {"dollars": 0.0009}, {"calls": 500, "requests": 30, "sequences": 45, "tokens": 600, "dollars": 0.002}]


@pytest.mark.parametrize("limits", LIMITS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_no_limit_is_overshot_and_no_query_is_answered_twice(limits: dict[str, float]) -> None:
    out = run_limits(limits)
    spent, provider, budget = out["spent"], out["provider"], out["budget"]
    for unit, limit in limits.items():
        assert spent[unit] <= limit + 1e-12, (unit, spent, limits)
    assert spent["calls"] > 0 and spent["requests"] > 0
    # 64 threads asked for each group; the provider answered it at most once
    assert max(provider.answered.values()) == 1, provider.answered.most_common(3)
    summary = budget.summary()
    assert summary["calls"] == spent["calls"] and summary["requests"] == spent["requests"]
    assert summary["retries"] == provider.failures  # every failed attempt was retried, and counted
