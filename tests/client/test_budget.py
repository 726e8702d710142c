"""The budget can never be exceeded, also with 64 threads sending at once."""

from __future__ import annotations

import threading

import pytest

from bbox_lfm import Budget, Client, MockAdapter, Query, Usage
from bbox_lfm.budget import estimate_tokens
from bbox_lfm.errors import BudgetExhausted, ConfigError
from bbox_lfm.profiles import Price
from bbox_lfm.types import Choice, Response, TokenLogprobs

PRICE = Price(prompt=2.5, completion=10.0)  # the openai profile's gpt-4o price


def answer(q: Query) -> Response:
    usage = Usage(prompt_tokens=3 * len(q.prompt), completion_tokens=q.sequences)
    return Response(choices=tuple(Choice(index=i, text="ok") for i in range(q.sequences)), usage=usage,
                    cost_usd=PRICE.cost(usage.prompt_tokens, usage.completion_tokens))


def client(budget: Budget, adapter: MockAdapter | None = None) -> Client:
    return Client("http://mock/v1", adapter=adapter or MockAdapter(answer), provider="openai", model="gpt-4o",
                  api_key="sk-x", cache_mode="off", budget=budget)


@pytest.mark.parametrize("limit", [{"requests": 100}, {"sequences": 150}, {"tokens": 5000}, {"dollars": 0.002}])
def test_exact_under_64_threads(limit: dict[str, float]) -> None:
    budget = Budget(**limit)
    adapter = MockAdapter(answer)
    c = client(budget, adapter)
    sent = []
    lock = threading.Lock()
    barrier = threading.Barrier(64)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(20):
            q = Query(prompt=tuple(f"p{i}-{j}-{k}" for k in range(1 + (i + j) % 3)), max_tokens=1)
            try:
                c.send(q)
            except BudgetExhausted:
                continue
            with lock:
                sent.append(q)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    unit, lim = next(iter(limit.items()))
    spent = {"requests": len(adapter.queries), "sequences": sum(q.sequences for q in adapter.queries),
             "tokens": budget.spent("tokens"), "dollars": budget.spent("dollars")}
    assert spent[unit] <= lim + 1e-12
    assert len(sent) == len(adapter.queries) > 0
    assert budget.summary()["requests"] == len(adapter.queries)
    # the limit was actually reached, not merely respected by sending little
    assert spent[unit] >= 0.5 * lim


def test_exhaustion_carries_the_figures_and_sends_nothing() -> None:
    budget = Budget(requests=2)
    adapter = MockAdapter(answer)
    c = client(budget, adapter)
    c.send(Query(prompt="a"))
    c.send(Query(prompt="b"))
    with pytest.raises(BudgetExhausted) as e:
        c.send(Query(prompt="c"))
    assert (e.value.unit, e.value.limit, e.value.spent, e.value.requested) == ("requests", 2, 2, 1)
    assert e.value.report["requests"] == {"spent": 2, "limit": 2}
    assert adapter.calls == 2
    assert isinstance(e.value, RuntimeError)


def test_tokens_reserve_an_upper_bound_and_settle() -> None:
    q = Query(prompt=("hello world",), max_tokens=4)
    assert estimate_tokens(q) >= len("hello world") + 4
    budget = Budget(tokens=100)
    c = client(budget)
    c.send(q)
    assert budget.spent("tokens") == 4  # usage: 3 prompt + 1 completion
    assert budget.report()["tokens"] == {"spent": 4, "limit": 100}


def test_dollars_priced_from_the_profile() -> None:
    budget = Budget(cost_usd=1e-6)
    c = Client("http://mock/v1", adapter=MockAdapter(answer), provider="openai", model="gpt-4o", cache_mode="off",
               budget=budget, api_key="sk-x")
    assert budget.price == Price(prompt=2.5, completion=10.0)
    with pytest.raises(BudgetExhausted, match="dollars"):
        c.send(Query(prompt="x" * 1000, max_tokens=100))


def test_nested_budgets_both_count() -> None:
    outer = Budget(requests=3)
    c = client(outer)
    inner = c.with_budget(Budget(requests=10))
    for p in "abc":
        inner.send(Query(prompt=p))
    with pytest.raises(BudgetExhausted, match="requests"):
        inner.send(Query(prompt="d"))
    assert inner.budget.summary()["requests"] == 3 and outer.summary()["requests"] == 3


def test_report_and_format() -> None:
    budget = Budget(requests=5)
    client(budget).send(Query(prompt="a"))
    assert "requests: 1 / 5" in budget.format() and "calls: 0" in budget.format()
    assert budget.summary() == {"calls": 0, "requests": 1, "sequences": 1, "tokens": 4, "dollars": 1.75e-05,
                                "cache_hits": 0, "retries": 0}


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ConfigError, match="requests must be None or a number >= 0; got -1"):
        Budget(requests=-1)


def test_cache_hits_count_in_enclosing_budgets_too() -> None:
    from bbox_lfm.stores import MemoryStore

    outer = Budget()
    c = Client("http://mock/v1", adapter=MockAdapter(answer), provider="openai", model="gpt-4o", api_key="sk-x",
               cache=MemoryStore(), budget=outer)
    inner = c.with_budget(Budget(requests=5))
    inner.send(Query(prompt="a"))
    inner.send(Query(prompt="a"))
    assert inner.budget.summary()["cache_hits"] == 1 and outer.summary()["cache_hits"] == 1
    assert outer.summary()["requests"] == 1


def test_calls_are_the_methods_unit_apart_from_requests() -> None:
    """One score() over a batch is one call however many requests the provider needs; a call
    over the limit is refused before anything is sent; a cache hit is still a call, not a request."""
    from bbox_lfm.stores import MemoryStore

    adapter = MockAdapter(lambda q: Response(choices=tuple(
        Choice(index=i, text=" a", logprobs=TokenLogprobs(tokens=(" a",), token_logprobs=(-0.1,),
                                                           top_logprobs=({" a": -0.1, " b": -2.0},)))
        for i in range(len(q.prompt))), usage=Usage(prompt_tokens=3, completion_tokens=1)))
    budget = Budget(calls=2)
    c = Client("http://mock/v1", adapter=adapter, provider="llama-cpp", model="m", cache=MemoryStore(), budget=budget)
    assert c.capabilities.max_batch == 1
    inner = c.with_budget(Budget())
    inner.score(["x1", "x2", "x3"], [" a", " b"], strategy="topk")
    inner.score(["x1", "x2", "x3"], [" a", " b"], strategy="topk")  # from the cache: a call, no request
    for b in (budget, inner.budget):
        assert b.summary()["calls"] == 2 and b.summary()["requests"] == 3 and b.summary()["cache_hits"] == 3
    with pytest.raises(BudgetExhausted, match="calls") as e:
        inner.score(["y"], [" a", " b"], strategy="topk")
    assert e.value.unit == "calls" and adapter.calls == 3
    assert inner.budget.summary()["calls"] == 2  # the refused call was given back everywhere
