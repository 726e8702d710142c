"""BBTv2: the divide-and-conquer schedule and per-layer projections on a fake server, then a tiny
search on the real local server."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx

from bbox_lfm import Budget, Client
from bbox_lfm.errors import BudgetExhausted, CacheMiss, CapabilityError
from bbox_lfm.methods import Method, get
from bbox_lfm.methods.bbtv2 import BBTv2, hidden_stats, layer_schedule
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import FewShot, load_task
from bbox_lfm.tensors import decode

_spec = importlib.util.spec_from_file_location("bbt_fakes", Path(__file__).with_name("_fakes.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]

TINY = {"intrinsic_dim": 20, "n_prompt_tokens": 3, "popsize": 6, "budget": 40, "eval_every": 12, "seed": 5}


def toy_split():
    return fakes.toy_task().few_shot(seed=3, k=4)


def test_schedule_is_the_official_rounds_and_fills_below_one_round() -> None:
    # 8,000 calls, popsize 20, 24 layers: 16 rounds, 7,680 calls (METHODS.md)
    s = layer_schedule(8000, 20, 24)
    assert len(s) == 16 * 24 and s[:25] == [*range(24), 0]
    # one round or more: whole rounds only
    assert layer_schedule(1000, 20, 30) == list(range(30))
    # below one round: as many per-layer generations as fit, layers in order
    assert layer_schedule(40, 20, 30) == [0, 1]
    assert layer_schedule(19, 20, 30) == []


def test_defaults_and_registry() -> None:
    assert get("bbtv2") is BBTv2
    cfg = BBTv2().get_config()
    assert (cfg["sigma"], cfg["alpha"], cfg["popsize"], cfg["intrinsic_dim"], cfg["loss"]) == (0.2, 0.2, 20, 500, "ce")
    assert BBTv2.needs == ("deep_prompt", "hidden_stats", "label_words")


def test_capability_error_before_any_query() -> None:
    adapter = fakes.FakeServer()
    with pytest.raises(CapabilityError, match="deep_prompt"):
        BBTv2(**TINY).fit(fakes.fake_client(provider="openai", adapter=adapter), fakes.toy_task(), split=toy_split())
    assert adapter.calls == 0 and adapter.posts == []


def test_search_layers_calls_and_replay() -> None:
    task, split = fakes.toy_task(), toy_split()
    store, adapter = MemoryStore(), fakes.FakeServer()
    client = fakes.fake_client(store=store, adapter=adapter)
    assert BBTv2(**TINY).projected_calls(client=client) == 36
    m = BBTv2(**TINY).fit(client, task, split=split)
    # 40 // (6 * 3) = 2 rounds over 3 layers: 6 generations, 36 calls
    assert m.calls_ == m.budget_spent_["calls"] == 36 and len(m.history_) == 6
    assert m.extra_["schedule_rounds"] == 2
    assert m.history_[-1]["best_loss"] < m.history_[0]["loss_mean"]
    # hidden_stats: one request on the training texts; A_l's std = alpha s_l / (sqrt(d) sigma)
    assert len(adapter.posts) == 1 and adapter.posts[0][0] == "/bbox/hidden_stats"
    assert adapter.posts[0][1]["input"] == [task.format(ex) for ex in split.train]
    assert m.extra_["A_std"] == pytest.approx([0.2 * s / (np.sqrt(20) * 0.2) for s in m.extra_["layer_std"]])
    # each call carries the whole [L, n, D] deep prompt; a generation changes one layer only
    scoring = [q for q in adapter.queries if q.endpoint != "hidden_stats"]
    first_gen = [decode(q.extra["deep_prompt"]) for q in scoring[:6]]
    assert first_gen[0].shape == (fakes.L, 3, fakes.D)
    assert all(np.any(g[0]) and not np.any(g[1:]) for g in first_gen)
    assert decode(m.best_prompt_).shape == (fakes.L, 3, fakes.D)
    assert m.z_.shape == (fakes.L, 20)
    # replay: nothing sent, hidden_stats included, same prompt
    silent = fakes.FakeServer()
    replay = BBTv2(**TINY).fit(fakes.fake_client(store=store, adapter=silent).with_cache_mode("replay"), task,
                               split=split)
    assert silent.calls == 0 and silent.posts == [] and replay.budget_spent_["requests"] == 0
    assert replay.best_prompt_ == m.best_prompt_ and replay.curve_ == m.curve_
    with pytest.raises(CacheMiss):
        BBTv2(**{**TINY, "seed": 6}).fit(fakes.fake_client(store=store, adapter=silent).with_cache_mode("replay"),
                                         task, split=split)


@respx.mock
def test_hidden_stats_request_goes_through_the_clients_layers() -> None:
    """Retried on a 503, counted in the client's budget, cached: the request is a query like any
    other (it once went straight to the adapter's HTTP client and skipped every layer)."""
    base = "http://stats.test/v1"
    stats = {"object": "hidden_stats", "model": "m", "layer_std": [0.5, 1.0, 1.5], "n_tokens": 12}
    route = respx.post(f"{base}/bbox/hidden_stats").mock(side_effect=[
        httpx.Response(503, json={"error": {"message": "busy"}}), httpx.Response(200, json=stats)])
    budget = Budget(requests=5)
    with Client(base, provider="bbox-lfm", model="m", cache=MemoryStore(), budget=budget,
                sleep=lambda s: None) as client:
        assert hidden_stats(client, ["a good film", "a bad film"], None) == [0.5, 1.0, 1.5]
        assert route.call_count == 2
        assert json.loads(route.calls.last.request.content) == {"model": "m", "input": ["a good film", "a bad film"],
                                                                 "clip": True}
        assert budget.summary()["requests"] == 1 and budget.summary()["retries"] == 1
        assert hidden_stats(client, ["a good film", "a bad film"], None) == [0.5, 1.0, 1.5]
        assert route.call_count == 2 and budget.summary()["cache_hits"] == 1
    with Client(base, provider="bbox-lfm", model="m", cache=MemoryStore(), budget=Budget(requests=0),
                sleep=lambda s: None) as client, pytest.raises(BudgetExhausted):
        hidden_stats(client, ["x"], None)
    assert route.call_count == 2


def test_save_load_predict(tmp_path: Path) -> None:
    task, split = fakes.toy_task(), toy_split()
    client = fakes.fake_client()
    m = BBTv2(**TINY).fit(client, task, split=split)
    loaded = Method.load(m.save(tmp_path / "v2.json"))
    assert isinstance(loaded, BBTv2) and loaded.best_prompt_ == m.best_prompt_ and loaded.num_layers_ == fakes.L
    loaded.task_ = task
    assert np.array_equal(loaded.predict(client, split.dev), m.predict(client, split.dev))


@pytest.mark.slow
def test_local_server_search_and_replay(local_client) -> None:
    task = load_task("sst2")
    fs = task.few_shot(seed=13)
    four_each = lambda xs: [ex for c in (0, 1) for ex in [e for e in xs if e.label == c][:4]]
    split = FewShot(train=four_each(fs.train), dev=four_each(fs.dev))
    kw = {"intrinsic_dim": 50, "n_prompt_tokens": 5, "popsize": 4, "budget": 12, "eval_every": 8, "seed": 13}
    m = BBTv2(**kw).fit(local_client, task, split=split)
    L = local_client.model_info()["num_layers"]
    assert len(m.extra_["layer_std"]) == L and all(s > 0 for s in m.extra_["layer_std"])
    assert m.budget_spent_["calls"] == m.calls_ == 12 and decode(m.best_prompt_).shape[0] == L
    assert m.best_train_loss_ < m.history_[0]["loss_mean"]
    replay = BBTv2(**kw).fit(local_client.with_cache_mode("replay"), task, split=split)
    assert replay.budget_spent_["requests"] == 0 and replay.best_prompt_ == m.best_prompt_


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_without_dev_the_kept_prompt_is_the_best_loss_one(seed: int) -> None:
    """Without a dev split BBTv2 keeps its best-loss candidate as it was scored: that layer's
    z with the other layers as they were held then. Before the fix it put the candidate into the
    final held prompts, whose other layers had moved on since: a prompt whose loss is not the
    best training loss it reports."""
    from bbox_lfm.methods.bbt import label_loss
    from bbox_lfm.types import Query

    fs = toy_split()
    task = fakes.toy_task()
    client = fakes.fake_client()
    m = BBTv2(**{**TINY, "budget": 12, "popsize": 4, "seed": seed}).fit(client, task, split=FewShot(train=fs.train,
                                                                                                       dev=[]))
    assert m.curve_ == []
    prompts = tuple(task.format(ex) for ex in fs.train)
    answer = fakes._score(Query(prompt=prompts, extra={"deep_prompt": m.best_prompt_}))
    S = np.array([c["label_logprobs"] for c in answer["choices"]])
    assert label_loss(S, np.array([ex.label for ex in fs.train]), "ce") == pytest.approx(m.best_train_loss_)


def test_per_layer_std_with_alpha_unlike_sigma() -> None:
    """A_l's std is alpha * s_l / (sqrt(d) * sigma) with s_l the layer's hidden-state std: the fake
    server's s_l = (0.5, 1.0, 1.5), d = 16, alpha = 0.4, sigma = 0.2 give 0.4 / (4 * 0.2) = 0.5
    times s_l = (0.25, 0.5, 0.75); the returned deep prompt's layer l is A_l z_l at that std."""
    from bbox_lfm.methods.bbt import projection
    from bbox_lfm.methods.bbtv2 import _layer_seed

    m = BBTv2(intrinsic_dim=16, n_prompt_tokens=2, popsize=4, sigma=0.2, alpha=0.4, budget=12, eval_every=4,
              init="zeros", seed=3).fit(fakes.fake_client(), fakes.toy_task(), split=toy_split())
    assert m.extra_["A_std"] == pytest.approx([0.25, 0.5, 0.75])
    deep = decode(m.best_prompt_)
    for layer, std in enumerate((0.25, 0.5, 0.75)):
        A = projection(_layer_seed(3, layer), (2 * fakes.D, 16), std)
        np.testing.assert_allclose(deep[layer], (A @ m.z_[layer].astype(np.float32)).reshape(2, fakes.D), rtol=1e-6)
