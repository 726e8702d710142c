"""BiDf-MKD: the zero-order estimator, the KL, and a run through a served zoo of two tiny APIs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("fastapi")

from bbox_lfm import Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.errors import CapabilityError, ConfigError
from bbox_lfm.methods import get, names
from bbox_lfm.methods.bidf_mkd import BiDfMKD, discover_apis, kl, zo_gradient
from bbox_lfm.types import Query, Response

# -- the zero-order estimator ---------------------------------------------------------------

D = 64


def _smooth(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(x) = sum sin(a_k x_k) + 0.5 sum c_k x_k^2 per row, and its exact gradient."""
    a = np.linspace(0.5, 2.0, x.shape[1])
    c = np.linspace(-1.0, 1.0, x.shape[1])
    return np.sin(a * x).sum(1) + 0.5 * (c * x * x).sum(1), a * np.cos(a * x) + c * x


def _mean_cosine(q: int, points: int = 200) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (points, D))
    g = zo_gradient(lambda rows: _smooth(rows)[0], x, q=q, mu=0.005, rng=rng)
    true = _smooth(x)[1]
    cos = (g * true).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(true, axis=1))
    return float(cos.mean())


def test_zero_order_cosine_rises_with_q() -> None:
    c10, c100 = _mean_cosine(10), _mean_cosine(100)
    # for q directions in d dimensions the cosine is about sqrt(q / (q + d)): 0.37 and 0.78 here
    assert 0.25 < c10 < 0.5
    assert c100 > 0.7
    assert c100 > c10 + 0.25


def test_zero_order_estimate_is_unbiased_on_a_linear_function() -> None:
    """E[g] = w for L(x) = w.x: the mean of 4,000 independent estimates (q = 10) is within 15 % of
    w (its expected error is sqrt(d / (q n)) = 4 % of |w|), and exact linear differences make the
    1/mu step irrelevant."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal(D)
    x = np.tile(rng.uniform(0, 1, D), (4000, 1))
    g = zo_gradient(lambda rows: rows @ w, x, q=10, mu=0.005, rng=rng)
    assert np.linalg.norm(g.mean(0) - w) / np.linalg.norm(w) < 0.15


def test_zero_order_batches_all_q_plus_one_rows_in_one_call() -> None:
    seen: list[int] = []

    def loss(rows: np.ndarray) -> np.ndarray:
        seen.append(len(rows))
        return rows.sum(1)

    zo_gradient(loss, np.zeros((3, 5)), q=7, mu=0.005, rng=np.random.default_rng(0))
    assert seen == [3 * 8]


# -- the KL ----------------------------------------------------------------------------------


def _official_kl(p_teacher: Any, student_logits: Any) -> Any:
    """The official code's term: kl_div fed probabilities where it wants log-probabilities."""
    return torch.nn.functional.kl_div(torch.softmax(student_logits, -1), p_teacher, reduction="batchmean")


def _is_kl(fn: Any) -> bool:
    """True when ``fn`` gives the hand-computed KL and is >= 0 with equality at p = q."""
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    s = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # softmax = (0.25, 0.75)
    hand = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 ln(4/3) = 0.143841
    same = torch.log(torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64))
    return (abs(float(fn(p, s)) - hand) < 1e-9 and abs(float(fn(torch.softmax(same, -1), same))) < 1e-9)


def test_kl_matches_the_hand_computed_value() -> None:
    assert _is_kl(kl)
    # a zero teacher probability contributes nothing (0 log 0 = 0), not NaN
    value = kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert abs(float(value) - math.log(2.0)) < 1e-6


def test_the_kl_check_fails_on_the_official_bug() -> None:
    assert not _is_kl(_official_kl)


# -- a served zoo of two tiny APIs ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bbox_lfm.zoo import build_zoo

    root = tmp_path_factory.mktemp("zoo")
    build_zoo(root, n_models=2, hidden=8, epochs=60, seed=3)
    return root


@pytest.fixture(scope="module")
def zoo_server(tiny_zoo: Path) -> Iterator[Any]:
    from bbox_lfm.serve import start_local

    server = start_local(zoo=str(tiny_zoo), lm=False)
    try:
        yield server
    finally:
        server.stop()


class Counting:
    """A sender that counts what reaches the provider."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.sent: list[Query] = []

    def send(self, query: Query) -> Response:
        self.sent.append(query)
        return self.inner.send(query)

    def models(self) -> list[dict[str, Any]]:
        return self.inner.models()


def _client(url: str, zoo: Path, cache: Path, *, mode: str = "readwrite", counting: bool = False,
            budget: Any = None) -> Client:
    from bbox_lfm.adapters.openai_compat import OpenAICompatAdapter
    from bbox_lfm.profiles import load_profile
    from bbox_lfm.zoo import zoo_namespace

    adapter = None
    if counting:
        adapter = Counting(OpenAICompatAdapter(base_url=url, api_key="EMPTY", profile=load_profile("bbox-lfm")))
    return Client(url, provider="bbox-lfm", cache=cache, cache_mode=mode, cache_namespace=zoo_namespace(zoo),
                  adapter=adapter, budget=budget)


def test_models_lists_classifiers_and_the_route_checks_inputs(zoo_server: Any, tiny_zoo: Path,
                                                             tmp_path: Path) -> None:
    import httpx

    assert zoo_server.app.service is None and zoo_server.model_id is None  # a zoo alone loads no language model
    cards = httpx.get(f"{zoo_server.base_url}/models").json()["data"]
    assert [c["id"] for c in cards] == ["digits-api-00", "digits-api-01"]
    meta = cards[0]["metadata"]
    assert meta["kind"] == "classifier" and meta["input_shape"] == [1, 8, 8] and len(meta["classes"]) == 3
    with _client(zoo_server.base_url, tiny_zoo, tmp_path / "c.sqlite") as client:
        x = np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8))
        p = client.classify(x, model="digits-api-00")
        z = client.classify(x, model="digits-api-00", output="logits")
        top = client.classify(x, model="digits-api-00", output="top1")
        assert p.shape == (4, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
        assert np.allclose(np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1,
                           keepdims=True), p, atol=1e-5)
        assert np.array_equal(top, p.argmax(1))
        assert client.budget.summary()["sequences"] == 12 and client.budget.summary()["calls"] == 3
    r = httpx.post(f"{zoo_server.base_url}/bbox/classify",
                   json={"model": "digits-api-00", "inputs": {"shape": [2, 64], "dtype": "float32",
                                                                "data": "A" * 684}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "inputs"
    r = httpx.post(f"{zoo_server.base_url}/bbox/classify", json={"model": "nope", "inputs": {}})
    assert r.status_code == 404


def test_fit_through_two_served_apis_counts_every_query_and_replays(zoo_server: Any, tiny_zoo: Path,
                                                                    tmp_path: Path) -> None:
    config = {"budget": 24, "q": 8, "samples_per_class": 2, "inversion_steps": 6, "generator_lr": 0.05,
              "replay_steps": 2, "warmup": 1, "hidden": 16}
    cache = tmp_path / "cache.sqlite"
    with _client(zoo_server.base_url, tiny_zoo, cache, counting=True) as client:
        m = BiDfMKD(**config).fit(client, progress=False)
        counted = client.adapter
    assert isinstance(counted, Counting)
    # two visits of two inversions of six steps: 24 requests, each all B (q + 1) rows of a step
    assert m.budget_spent_["calls"] == m.budget_spent_["requests"] == len(counted.sent) == 24
    assert m.calls_ == m.projected_calls() == 24
    assert m.budget_spent_["sequences"] == 24 * 6 * (8 + 1)
    assert {q.endpoint for q in counted.sent} == {"classify"}
    # inversion lowers the API's loss on the generator's samples, on every inversion
    for row in m.curve_:
        assert row["api_loss_support"] < row["api_loss_support_start"]
        assert row["api_loss_query"] < row["api_loss_query_start"]
    from bbox_lfm.commands._common import LOCAL_REPLAY_URL

    with _client(LOCAL_REPLAY_URL, tiny_zoo, cache, mode="replay") as offline:
        again = BiDfMKD(**config).fit(offline, progress=False)
    assert again.budget_spent_["requests"] == 0 and again.budget_spent_["cache_hits"] == 24
    assert again.budget_spent_["calls"] == 24  # the same steps, all answered from the cache
    for a, b in zip(m.params_, again.params_, strict=True):
        assert torch.equal(a, b)
    out = m.save(tmp_path / "meta.json")
    loaded = BiDfMKD.load(out)
    assert m.meta_test(episodes=20, shot=1) == loaded.meta_test(episodes=20, shot=1)


def test_budget_exhausted_mid_run_keeps_the_last_whole_visit(zoo_server: Any, tiny_zoo: Path,
                                                             tmp_path: Path) -> None:
    from bbox_lfm.budget import Budget

    # an enclosing limit below the method's own 48 calls
    with _client(zoo_server.base_url, tiny_zoo, tmp_path / "c.sqlite", budget=Budget(calls=30)) as client:
        m = BiDfMKD(budget=48, q=4, samples_per_class=2, inversion_steps=6, replay_steps=1,
                    hidden=8).fit(client, progress=False)
    assert m.stopped_by_ == "budget" and len(m.curve_) == 2 and client.budget.summary()["calls"] == 30
    assert m.meta_test(episodes=5)["episodes"] == 5


def test_true_gradient_ablation_sends_nothing(tiny_zoo: Path) -> None:
    m = BiDfMKD(budget=24, q=8, samples_per_class=2, inversion_steps=6, replay_steps=1, hidden=16,
                true_gradient=True, zoo_dir=str(tiny_zoo)).fit(None, progress=False)
    assert m.budget_spent_["calls"] == m.budget_spent_["requests"] == 0 and len(m.curve_) == 2
    assert all(r["api_loss_support"] < r["api_loss_support_start"] for r in m.curve_)


# -- clear errors ------------------------------------------------------------------------------


def _models_adapter(cards: list[dict[str, Any]]) -> MockAdapter:
    adapter = MockAdapter(lambda q: pytest.fail("nothing may be sent"))
    adapter.models = lambda: cards  # type: ignore[method-assign]
    return adapter


def _card(model_id: str, shape: list[int]) -> dict[str, Any]:
    return {"id": model_id, "metadata": {"kind": "classifier", "classes": [0, 1, 2], "input_shape": shape}}


def test_apis_disagreeing_on_input_shape_are_refused(tmp_path: Path) -> None:
    adapter = _models_adapter([_card("a", [1, 8, 8]), _card("b", [64])])
    with Client("http://127.0.0.1:9/v1", provider="bbox-lfm", adapter=adapter, cache_mode="off") as client:
        with pytest.raises(ConfigError, match="agree on one input shape"):
            discover_apis(client)
        with pytest.raises(ConfigError, match="agree on one input shape"):
            BiDfMKD(budget=10, inversion_steps=5).fit(client, progress=False)
    assert adapter.calls == 0


def test_provider_without_classification_is_refused_before_sending() -> None:
    adapter = _models_adapter([_card("a", [1, 8, 8])])
    with Client("http://127.0.0.1:9/v1", provider="generic", adapter=adapter, cache_mode="off") as client:
        with pytest.raises(CapabilityError, match="classify"):
            BiDfMKD(budget=10, inversion_steps=5).fit(client, progress=False)
        with pytest.raises(CapabilityError, match="classify"):
            client.classify(np.zeros((1, 1, 8, 8)), model="a")
    # an API that answers top-1 only cannot drive the CE loss or the KL
    from bbox_lfm.profiles import load_profile

    base = load_profile("bbox-lfm")
    top1 = dataclasses.replace(base, capabilities=dataclasses.replace(base.capabilities, classify="top1"))
    with Client("http://127.0.0.1:9/v1", provider=top1, adapter=adapter, cache_mode="off") as client:
        with pytest.raises(CapabilityError, match="probabilities"):
            BiDfMKD(budget=10, inversion_steps=5).fit(client, progress=False)
        with pytest.raises(CapabilityError, match="probabilities"):
            client.classify(np.zeros((1, 1, 8, 8)), model="a")
    assert adapter.calls == 0


def test_budget_too_small_for_one_inversion() -> None:
    with pytest.raises(ConfigError, match="budget must be >= inversion_steps"):
        BiDfMKD(budget=10, inversion_steps=50)
    BiDfMKD(budget=0, inversion_steps=50, random_meta_model=True)  # sends nothing: no minimum


def test_registered_and_declares_it_needs_a_classifier_zoo() -> None:
    assert "bidf-mkd" in names()
    cls = get("bidf-mkd")
    assert cls.task_kind == "classifier-zoo" and cls.needs == ("classify",)
    BiDfMKD(**cls.tiny_config)
    with pytest.raises(ConfigError, match="task must be None"):
        BiDfMKD(random_meta_model=True).fit(None, object(), progress=False)


def test_cli_builds_a_zoo_tunes_through_it_and_replays(tmp_path: Path) -> None:
    from bbox_lfm.cli import main
    from bbox_lfm.results import read_result

    zoo = str(tmp_path / "zoo")
    assert main(["zoo", "build", zoo, "--models", "2", "--hidden", "8", "--epochs", "30", "--no-progress"]) == 0
    common = ["tune", "bidf-mkd", "--zoo", zoo, "--budget", "12", "--set", "inversion_steps=6", "--set", "q=4",
              "--set", "samples_per_class=2", "--set", "replay_steps=1", "--set", "hidden=8", "--episodes", "10",
              "--cache", str(tmp_path / "cache.sqlite"), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "r.json"), "--save-model", str(tmp_path / "meta.json")]) == 0
    first = read_result(tmp_path / "r.json")
    assert 0 < first["budget_spent"]["calls"] == first["budget_spent"]["requests"] <= 12
    assert first["eval"]["accuracy"] is not None and [s["shot"] for s in first["eval"]["settings"]] == [1, 5]
    assert BiDfMKD.load(tmp_path / "meta.json").meta_test(episodes=10) == first["eval"]["settings"][0]
    assert main([*common, "--cache-mode", "replay", "--out", str(tmp_path / "replay.json")]) == 0
    again = read_result(tmp_path / "replay.json")
    assert again["budget_spent"]["requests"] == 0
    assert again["budget_spent"]["cache_hits"] == again["budget_spent"]["calls"] == first["budget_spent"]["calls"]
    assert again["eval"] == first["eval"] and first["method"] == "bidf-mkd"
