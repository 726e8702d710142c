"""BBT: the math on a fake server (no network), then tiny searches on the real local server."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from bbox_lfm.errors import CapabilityError, ConfigError
from bbox_lfm.methods import Method, get
from bbox_lfm.methods.bbt import BBT, label_loss, projection
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import FewShot, load_task
from bbox_lfm.tensors import decode, encode

_spec = importlib.util.spec_from_file_location("bbt_fakes", Path(__file__).with_name("_fakes.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]

TINY = {"intrinsic_dim": 20, "n_prompt_tokens": 3, "popsize": 6, "budget": 36, "eval_every": 12, "seed": 5}


def toy_split():
    return fakes.toy_task().few_shot(seed=3, k=4)


# -- pieces -----------------------------------------------------------------------------------

def test_label_losses_match_the_official_definitions() -> None:
    S = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    y = np.array([0, 1])
    ce = -np.mean([np.log(0.7 / 1.0), np.log(0.3 / 1.0)])
    assert label_loss(S, y, "ce") == pytest.approx(ce)
    # hinge: sum over wrong classes of max(0, s_c - s_y + 2), mean over examples
    h0 = max(0, S[0, 1] - S[0, 0] + 2) + max(0, S[0, 2] - S[0, 0] + 2)
    h1 = max(0, S[1, 0] - S[1, 1] + 2) + max(0, S[1, 2] - S[1, 1] + 2)
    assert label_loss(S, y, "hinge") == pytest.approx((h0 + h1) / 2)
    assert label_loss(S, y, "neg_accuracy") == -0.5
    # a constant shift per example (logits vs log-probabilities) changes nothing
    shifted = S + np.array([[3.0], [-1.0]])
    for kind in ("ce", "hinge", "neg_accuracy"):
        assert label_loss(shifted, y, kind) == pytest.approx(label_loss(S, y, kind))


def test_projection_std_and_seed() -> None:
    d, s_e, alpha, sigma = 500, 0.04, 1.0, 1.0
    std = alpha * s_e / (math.sqrt(d) * sigma)
    A = projection(7, (3000, d), std)
    assert A.dtype == np.float32 and A.shape == (3000, d)
    assert A.std() == pytest.approx(std, rel=0.01)
    assert np.array_equal(A, projection(7, (3000, d), std))
    # a z ~ N(0, sigma^2 I) gives prompt entries of std ~ alpha * s_e, as the paper intends
    z = np.random.default_rng(0).standard_normal(d) * sigma
    assert (A @ z.astype(np.float32)).std() == pytest.approx(alpha * s_e, rel=0.05)


def test_tensor_encoding_roundtrip_is_exact() -> None:
    x = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    spec = encode(x, base_ids=[1, 2, 3, 4, 5])
    assert spec["shape"] == [5, 7] and spec["dtype"] == "float32" and spec["base_ids"] == [1, 2, 3, 4, 5]
    assert np.array_equal(decode(spec), x)
    assert encode(x)["data"] == encode(x.astype(np.float64))["data"]
    with pytest.raises(ConfigError, match="data must hold"):
        decode({**spec, "shape": [5, 8]})


def test_registered_with_paper_defaults() -> None:
    assert get("bbt") is BBT
    cfg = BBT().get_config()
    assert cfg == {"intrinsic_dim": 500, "n_prompt_tokens": 50, "popsize": 20, "sigma": 1.0, "alpha": 1.0,
                        "loss": "ce", "margin": 2.0, "budget": 8000, "eval_every": 100, "optimizer": "cma",
                        "init": "vocab", "seed": 42, "calibrate": False}
    assert BBT(budget=50, popsize=20).projected_calls() == 40


@pytest.mark.parametrize("kw, name", [({"loss": "mse"}, "loss"), ({"popsize": 1}, "popsize"),
                                      ({"optimizer": "adam"}, "optimizer"), ({"init": "random"}, "init"),
                                      ({"seed": 0}, "seed"), ({"sigma": 0}, "sigma")])
def test_validation(kw: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        BBT(**kw)


# -- the search on the fake server --------------------------------------------------------------

def test_capability_error_before_any_query() -> None:
    adapter = fakes.FakeServer()
    client = fakes.fake_client(provider="openai", adapter=adapter)
    with pytest.raises(CapabilityError, match="soft_prompt"):
        BBT(**TINY).fit(client, fakes.toy_task(), split=toy_split())
    assert adapter.calls == 0


def test_search_learns_counts_calls_and_selects_on_dev() -> None:
    adapter = fakes.FakeServer()
    client = fakes.fake_client(adapter=adapter)
    m = BBT(**TINY).fit(client, fakes.toy_task(), split=toy_split())
    losses = [h["loss_mean"] for h in m.history_]
    assert losses[-1] < 0.5 * losses[0]
    # one call = one request with the whole training batch; dev scoring on its own budget
    assert m.calls_ == m.budget_spent_["calls"] == 36 == 6 * len(m.history_)
    assert all(len(q.prompt) == 8 for q in adapter.queries[:36])
    assert m.eval_spent_["calls"] == len(m.curve_) == 3
    assert [p["calls"] for p in m.curve_] == [12, 24, 36]
    assert client.budget.summary()["calls"] == adapter.calls == 36 + 3
    spec = m.best_prompt_
    assert spec["shape"] == [3, fakes.D] and spec["base_ids"] == [1000, 1001, 1002]
    assert m.best_dev_ == max(p["dev_accuracy"] for p in m.curve_)


def test_same_seed_same_queries_and_replay_sends_nothing() -> None:
    task, split = fakes.toy_task(), toy_split()
    store = MemoryStore()
    first = BBT(**TINY).fit(fakes.fake_client(store=store), task, split=split)
    other = fakes.FakeServer()
    again = BBT(**TINY).fit(fakes.fake_client(adapter=other), task, split=split)  # a fresh cache
    assert again.best_prompt_ == first.best_prompt_ and again.history_ == first.history_
    silent = fakes.FakeServer()
    replay = BBT(**TINY).fit(fakes.fake_client(store=store, adapter=silent).with_cache_mode("replay"), task,
                             split=split)
    assert silent.calls == 0 and replay.budget_spent_["requests"] == 0 and replay.eval_spent_["requests"] == 0
    assert replay.budget_spent_["cache_hits"] == 36
    assert replay.best_prompt_ == first.best_prompt_ and replay.curve_ == first.curve_
    different = BBT(**{**TINY, "seed": 6}).fit(fakes.fake_client(), task, split=split)
    assert different.best_prompt_ != first.best_prompt_


def test_budget_stops_at_whole_generations_and_on_exhaustion() -> None:
    task, split = fakes.toy_task(), toy_split()
    m = BBT(**{**TINY, "budget": 40}).fit(fakes.fake_client(), task, split=split)
    assert m.calls_ == 36 and m.stopped_by_ == "budget"
    # an outer budget smaller than the method's: stop cleanly, keep the best so far
    from bbox_lfm.budget import Budget

    tight = fakes.fake_client()
    tight = tight.with_budget(Budget(calls=10))
    m = BBT(**TINY).fit(tight, task, split=split)
    assert m.stopped_by_ == "BudgetExhausted" and m.budget_spent_["calls"] <= 10
    assert m.best_prompt_["shape"] == [3, fakes.D]


def test_an_optimizer_stop_is_named_not_called_budget() -> None:
    """A server that ignores the prompt gives every candidate the same loss; CMA-ES stops on flat
    fitness long before the budget, and the run says so (a model that silently dropped the soft
    prompt once looked like a run that had spent its budget)."""
    def deaf(query):  # the prompt tensor changes nothing
        zero = {**query.extra, "soft_prompt": encode(np.zeros((3, fakes.D), dtype=np.float32))}
        return fakes._score(dataclasses.replace(query, extra=zero))

    task, split = fakes.toy_task(), toy_split()
    m = BBT(**{**TINY, "budget": 600}).fit(fakes.fake_client(adapter=fakes.FakeServer(deaf)), task, split=split)
    assert m.calls_ == TINY["popsize"] and m.stopped_by_ == "optimizer: tolfun"  # one generation, all equal


def test_nevergrad_optimizer_runs_the_same_search() -> None:
    m = BBT(**{**TINY, "optimizer": "ng:TwoPointsDE"}).fit(fakes.fake_client(), fakes.toy_task(), split=toy_split())
    assert m.calls_ == 36 and m.best_train_loss_ < m.history_[0]["loss_mean"]


def test_save_load_predict(tmp_path: Path) -> None:
    task, split = fakes.toy_task(), toy_split()
    client = fakes.fake_client()
    m = BBT(**{**TINY, "init": "zeros"}).fit(client, task, split=split)
    assert "base_ids" not in m.best_prompt_
    path = m.save(tmp_path / "bbt.json")
    loaded = Method.load(path)
    assert isinstance(loaded, BBT) and loaded.get_config() == m.get_config()
    assert np.array_equal(loaded.z_, m.z_) and loaded.A_seed_ == 5 and loaded.best_prompt_ == m.best_prompt_
    loaded.task_ = task
    examples = split.dev
    assert np.array_equal(loaded.predict(client, examples), m.predict(client, examples))
    assert np.mean(m.predict(client, examples) == [ex.label for ex in examples]) == 1.0


# -- the real local server ----------------------------------------------------------------------

# alpha 0.2 (BBTv2's README value): at alpha 1 a 4-candidate population of 5-token prompts is
# mostly noise, and 6 generations are too few to go downhill reliably
SMALL = {"intrinsic_dim": 50, "n_prompt_tokens": 5, "popsize": 4, "budget": 24, "eval_every": 8, "seed": 13,
         "sigma": 0.5, "alpha": 0.2}


def small_split() -> FewShot:
    """4 examples per class for train and for dev (the shipped split is sorted by label)."""
    fs = load_task("sst2").few_shot(seed=13)

    def four_each(xs: list) -> list:
        return [ex for c in (0, 1) for ex in [e for e in xs if e.label == c][:4]]

    return FewShot(train=four_each(fs.train), dev=four_each(fs.dev))


@pytest.mark.slow
def test_local_server_search_and_replay(local_client) -> None:
    task, split = load_task("sst2"), small_split()
    m = BBT(**SMALL).fit(local_client, task, split=split)
    # the search finds a prompt better on the training batch than the one it starts from
    start = local_client.score([task.format(ex) for ex in split.train], task.label_words,
                               extra={"soft_prompt": encode(np.zeros((5, m.hidden_size_)),
                                                            base_ids=list(range(1000, 1005)))}, strategy="exact")
    y = np.array([ex.label for ex in split.train])
    assert m.best_train_loss_ < label_loss(start.logprobs, y, "ce")
    assert m.history_[-1]["loss_mean"] < m.history_[0]["loss_mean"]  # the population moves downhill
    assert m.budget_spent_["calls"] == m.calls_ == 24 and m.eval_spent_["calls"] == len(m.curve_) == 3
    replay = BBT(**SMALL).fit(local_client.with_cache_mode("replay"), task, split=split)
    assert replay.budget_spent_["requests"] == 0 and replay.eval_spent_["requests"] == 0
    assert replay.best_prompt_ == m.best_prompt_ and replay.curve_ == m.curve_


def test_projection_std_as_fit_computes_it() -> None:
    """A's std is alpha * s_e / (sqrt(d) * sigma): the fake server's s_e = 0.5, d = 16, alpha = 0.6,
    sigma = 1.5 give 0.6 * 0.5 / (4 * 1.5) = 0.05. The prompt fit returns is A z with A drawn
    at exactly that std (init "zeros": p0 = 0)."""
    m = BBT(intrinsic_dim=16, n_prompt_tokens=4, popsize=4, sigma=1.5, alpha=0.6, budget=8, eval_every=4,
            init="zeros", seed=3).fit(fakes.fake_client(), fakes.toy_task(), split=toy_split())
    assert m.extra_["A_std"] == pytest.approx(0.05)
    A = projection(3, (4 * fakes.D, 16), 0.05)
    assert np.any(m.z_)
    np.testing.assert_allclose(decode(m.best_prompt_), (A @ m.z_.astype(np.float32)).reshape(4, fakes.D), rtol=1e-6)
