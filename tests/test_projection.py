"""project_run: a run's query plan and cost, rehearsed against a stand-in provider."""

from __future__ import annotations

import pytest

from bbox_lfm import Budget, Client, MockAdapter, Response, Usage
from bbox_lfm.adapters.parse import parse_response
from bbox_lfm.budget import estimate_tokens
from bbox_lfm.errors import BudgetExhausted, CapabilityError
from bbox_lfm.methods import get
from bbox_lfm.methods.harness import run
from bbox_lfm.projection import _stand_in, project_run
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import load_task

CHAT = ("{text}\nIs this movie review positive or negative? Answer with one word.", ["negative", "positive"])


def _bdpl() -> object:
    return get("bdpl")(budget=8, sample_size=4, n_candidates=10, prompt_length=3, eval_every=4, seed=13,
                       strategy="topk", endpoint="chat", top_k=20)


def _worst_case(query):
    """An answer that uses every token the budget reserved for it, priced as gpt-4o-mini."""
    r = parse_response(_stand_in(query), query.endpoint)
    completion = query.max_tokens * query.sequences
    prompt = estimate_tokens(query) - completion
    return Response(choices=r.choices, usage=Usage(prompt_tokens=prompt, completion_tokens=completion,
                                                   total_tokens=prompt + completion),
                    cost_usd=(prompt * 0.15 + completion * 0.60) / 1e6)


@pytest.mark.parametrize("share, stopped_by", [(1.0, "budget"), (0.5, "BudgetExhausted")])
def test_projection_is_what_the_run_sends_and_its_bound_fits_the_dollar_budget(share: float, stopped_by: str) -> None:
    task = load_task("sample").with_template(*CHAT)
    provider = MockAdapter(_worst_case)
    client = Client("http://127.0.0.1:9/v1", provider="openai", model="gpt-4o-mini", adapter=provider,
                    cache=MemoryStore())
    method = _bdpl()
    p = project_run(method, client, task, seed=13)
    assert provider.calls == 0 and not hasattr(method, "best_prompt_")  # nothing sent, the method untouched
    assert p.provider == "openai" and p.dollars_about > 0 and p.dollars_max > p.dollars_about and p.repeats > 0

    # with every answer as costly as its bound, a budget of the projected bound lets the whole
    # run through (it stops at its own call budget) and half of it does not
    client = Client("http://127.0.0.1:9/v1", provider="openai", model="gpt-4o-mini", adapter=provider,
                    cache=MemoryStore(), budget=Budget(dollars=p.dollars_max * share))
    try:
        result = run(method, client, task, seed=13, progress=False)
    except BudgetExhausted:  # the harness's own scoring after the search may find the money gone
        result = None
    assert method.stopped_by_ == stopped_by
    if share == 1.0:
        assert provider.calls == p.requests == client.budget.summary()["requests"]
        assert p.repeats == client.budget.summary()["cache_hits"]
        assert p.calls == result.budget_spent["calls"] + result.eval_spent["calls"]
        assert p.sequences == sum(q.sequences for q in provider.queries)
        assert 0.99 * p.dollars_max <= client.budget.spent("dollars") <= p.dollars_max


def test_a_missing_capability_is_refused_by_the_projection_too() -> None:
    client = Client("http://127.0.0.1:9/v1", provider="openai", model="gpt-4o-mini",
                    adapter=MockAdapter(_stand_in), cache=MemoryStore())
    with pytest.raises(CapabilityError, match="soft_prompt"):
        project_run(get("bbt")(budget=4, popsize=4, seed=13), client, load_task("sample"), seed=13)
