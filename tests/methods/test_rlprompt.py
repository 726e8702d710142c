"""RLPrompt: the reward and the soft Q-learning terms against hand-computed values, the target
network's Polyak step, whole runs against a mock provider with a tiny in-process policy
backbone, and a short run with the real policy against the real local server."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bbox_lfm import Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.errors import CapabilityError, ConfigError
from bbox_lfm.methods import get
from bbox_lfm.methods.rlprompt import (
    RLPrompt,
    gap_rewards,
    multi_step_loss,
    polyak_update,
    shape_rewards,
    single_step_loss,
    sql_loss,
)
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import Example, FewShot, Task

torch = pytest.importorskip("torch")

_spec = importlib.util.spec_from_file_location("rl_tiny_lm", Path(__file__).with_name("_tiny_lm.py"))
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_tiny.tiny_lm_dir(tmp_path_factory.mktemp("tiny_lm")))


def toy_task(n_per_class: int = 3) -> Task:
    """A two-label task whose few-shot split is given directly (no files)."""
    train = [Example(f"review number {i} {'fine' if i % 2 else 'awful'}", i % 2) for i in range(2 * n_per_class)]
    dev = [Example(f"opinion {i} {'fine' if i % 2 else 'awful'}", i % 2) for i in range(2 * n_per_class)]
    return Task(name="toy", labels=("negative", "positive"), label_words=(" bad", " good"),
                template="{prompt} {text} It was", kshot_loader=lambda k, seed: FewShot(train=train, dev=dev))


def label_scores(text: str) -> list[float]:
    """The mock's rule: the right label's margin is +2 when the prompt holds "zebra", else -1."""
    y = 1 if text.split()[-3] == "fine" else 0
    margin = 2.0 if "zebra" in text.split()[:-5] else -1.0
    right, wrong = -math.log1p(math.exp(-margin)), -math.log1p(math.exp(margin))
    return [right, wrong] if y == 0 else [wrong, right]


def mock_client(**kw) -> tuple[Client, MockAdapter]:
    def handler(query):
        return {"choices": [{"index": i, "text": "", "finish_reason": "length", "label_logprobs": label_scores(p)}
                            for i, p in enumerate(query.prompt)],
                "model": "m", "usage": {"prompt_tokens": 10 * len(query.prompt), "completion_tokens": 0}}

    adapter = MockAdapter(handler)
    kw.setdefault("cache", MemoryStore())
    return Client("http://mock/v1", adapter=adapter, provider="bbox-lfm", model="m", **kw), adapter


# -- the reward ----------------------------------------------------------------------------------


def test_gap_reward_by_hand_both_signs_three_labels():
    # renormalised over the label words: the scores are log(0.5 p), so p comes back exactly
    p = np.array([[0.5, 0.3, 0.2],     # gold 0: gap 0.5 - 0.3 = +0.2 -> 200 * 0.2 = 40
                  [0.2, 0.5, 0.3],     # gold 0: gap 0.2 - 0.5 = -0.3 -> 180 * -0.3 = -54
                  [0.1, 0.1, 0.8]])    # gold 2: gap 0.8 - 0.1 = +0.7 -> 140
    R, acc = gap_rewards(np.log(0.5 * p), [0, 0, 2])
    assert R == pytest.approx((40 - 54 + 140) / 3)
    assert acc == pytest.approx(2 / 3)
    # a tie between the gold label and another is a gap of 0 (the official code masks the tied
    # competitor and would give the gold label's probability + 1 here)
    R0, acc0 = gap_rewards(np.log([[0.4, 0.4, 0.2]]), [0])
    assert R0 == 0.0 and acc0 == 0.0


def test_shaped_reward_is_five_times_the_z_score_across_a_step():
    R = [1.0, 2.0, 3.0]
    sd = math.sqrt(2 / 3)  # population std
    assert np.allclose(shape_rewards(R), [5 * (r - 2) / (sd + 1e-4) for r in R])
    assert np.allclose(shape_rewards([7.0, 7.0]), [0.0, 0.0])


# -- soft Q-learning -------------------------------------------------------------------------------


def test_sql_loss_terms_by_hand():
    """One prompt, T = 2, two actions. Policy: Q(s0) = (0, ln 3), Q(s1) = (ln 2, 0); actions 1, 0.
    Target: Q_(s0) = (0, 0), Q_(s1) = (0, ln 3); reward 1.
    A0 = ln 3 - ln 4, A1 = ln 2 - ln 3; V_0 = ln 2, V_1 = ln 4."""
    q = torch.tensor([[[0.0, math.log(3)], [math.log(2), 0.0]]], dtype=torch.float64, requires_grad=True)
    q_ = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)]]], dtype=torch.float64)
    a = torch.tensor([[1, 0]])
    r = torch.tensor([1.0], dtype=torch.float64)
    A0, A1, V0_, V1_ = math.log(3 / 4), math.log(2 / 3), math.log(2), math.log(4)
    single = [(A0 - (V1_ - V0_)) ** 2, (A1 - (1 - V1_)) ** 2]
    multi = [(A0 + A1 - (1 - V0_)) ** 2, (A1 - (1 - V1_)) ** 2]
    assert single_step_loss(q, q_, a, r)[0].tolist() == pytest.approx(single)
    assert multi_step_loss(q, q_, a, r)[0].tolist() == pytest.approx(multi)
    assert multi[0] == pytest.approx(1.0)  # A0 + A1 = ln(1/2), the target 1 - ln 2
    loss = sql_loss(q, q_, a, r)
    assert loss.item() == pytest.approx((sum(single) + sum(multi)) / 2)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_target_network_moves_by_exactly_the_polyak_rate():
    online = torch.nn.Linear(3, 2).double()
    target = torch.nn.Linear(3, 2).double()
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(target, online, 0.001)
    for p_, b, p in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(p_ - b, 0.001 * (p - b), rtol=0, atol=1e-15)


# -- whole runs against a mock provider ------------------------------------------------------------


def zebra_probability(m: RLPrompt) -> float:
    """pi(zebra | s_0): the policy's probability of the favoured token at the first position."""
    pol = m.policy_
    zebra = pol.tokenizer.convert_tokens_to_ids("zebra")
    with torch.no_grad():
        h = pol._hidden(pol.source_ids)
        return float(torch.softmax(pol.q_values(h, pol.mlp), -1)[0, zebra])


def test_the_favoured_token_gains_probability(tiny_lm):
    """The mock rewards prompts holding "zebra"; the paper's lr (5e-5) moves the near-zero MLP
    too slowly for a test of 50 steps, so this one learns at 1e-2."""
    client, _ = mock_client()
    kw = {"prompt_length": 2, "prompts_per_step": 8, "eval_every": 80, "mlp_hidden": 32, "policy_model": tiny_lm,
          "policy_device": "cpu", "seed": 3}
    start = RLPrompt(**kw, lr=1e-9, budget=8).fit(client, toy_task())
    m = RLPrompt(**kw, lr=1e-2, budget=400).fit(client, toy_task())
    p0, p1 = zebra_probability(start), zebra_probability(m)
    assert p1 > 3 * p0, (p0, p1)
    assert "zebra" in m.best_prompt_.split()
    assert m.calls_ == 400 == m.budget_spent_["calls"] == m.budget_spent_["requests"] + m.budget_spent_["cache_hits"]
    assert m.history_[-1]["reward_mean"] > m.history_[0]["reward_mean"]
    assert m.curve_[-1]["dev_accuracy"] == 1.0 and m.curve_[-1]["calls"] == 400
    assert [p["calls"] for p in m.extra_["reward_curve"]] == list(range(8, 401, 8))
    assert np.array_equal(m.predict(client, toy_task().few_shot().dev), [ex.label for ex in toy_task().few_shot().dev])


def test_cached_rerun_sends_nothing_and_gives_the_same_prompt(tiny_lm):
    store = MemoryStore()
    kw = {"prompt_length": 3, "prompts_per_step": 4, "budget": 24, "eval_every": 8, "mlp_hidden": 16, "lr": 1e-2,
          "policy_model": tiny_lm, "policy_device": "cpu", "seed": 5}
    client, adapter = mock_client(cache=store)
    a = RLPrompt(**kw).fit(client, toy_task())
    assert adapter.calls > 0
    client2, adapter2 = mock_client(cache=store)
    b = RLPrompt(**kw).fit(client2, toy_task())
    assert adapter2.calls == 0
    assert b.budget_spent_["requests"] == 0
    assert b.budget_spent_["calls"] == b.budget_spent_["cache_hits"] == b.calls_ == a.calls_ == 24
    assert a.best_prompt_ == b.best_prompt_ and a.curve_ == b.curve_ and a.history_ == b.history_
    assert all(np.array_equal(a.mlp_[k], b.mlp_[k]) for k in a.mlp_)
    c = RLPrompt(**{**kw, "seed": 6}).fit(mock_client()[0], toy_task())
    assert [h["reward_mean"] for h in c.history_] != [h["reward_mean"] for h in a.history_]


def test_collapse_into_one_repeated_token_is_reported(tiny_lm):
    """The near-zero MLP puts the same logits at every position, so the untrained greedy prompt is
    one token repeated: a run that barely learns must say so."""
    client, _ = mock_client()
    m = RLPrompt(prompt_length=3, prompts_per_step=4, budget=8, eval_every=4, mlp_hidden=16, lr=1e-9,
                 policy_model=tiny_lm, policy_device="cpu", seed=1).fit(client, toy_task())
    ids = m.best_ids_
    assert len(set(ids)) == 1 and len(ids) == 3
    assert m.extra_["collapse"]["greedy_checks"] == len(m.curve_) == 2
    assert all(p["one_token_prompt"] for p in m.curve_)
    assert any("one token repeated" in w for w in m.extra_["warnings"])


def test_budget_exhaustion_keeps_the_best_so_far(tiny_lm):
    from bbox_lfm.budget import Budget

    client, _ = mock_client(budget=Budget(calls=13))
    m = RLPrompt(prompt_length=2, prompts_per_step=4, budget=40, eval_every=4, mlp_hidden=8, policy_model=tiny_lm,
                 policy_device="cpu", seed=2).fit(client, toy_task())
    assert m.extra_["stopped_by"] == "BudgetExhausted"
    assert client.budget.summary()["calls"] <= 13
    assert m.best_prompt_ and m.curve_
    assert m.budget_spent_["calls"] + m.eval_spent_["calls"] == client.budget.summary()["calls"]


def test_save_and_load_round_trip(tiny_lm, tmp_path):
    client, _ = mock_client()
    m = RLPrompt(prompt_length=2, prompts_per_step=2, budget=4, eval_every=2, mlp_hidden=8, policy_model=tiny_lm,
                 policy_device="cpu", seed=1).fit(client, toy_task())
    path = m.save(tmp_path / "rl.json")
    loaded = RLPrompt.load(path)
    assert loaded.best_prompt_ == m.best_prompt_ and loaded.best_ids_ == m.best_ids_
    assert set(loaded.mlp_) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(np.array_equal(loaded.mlp_[k], m.mlp_[k]) for k in m.mlp_)
    assert loaded.mlp_["0.weight"].shape == (8, 16)
    assert json.loads(path.read_text())["method"] == "rlprompt"


# -- clear errors before anything is sent --------------------------------------------------------


def test_config_and_capability_errors_come_before_any_query(tiny_lm, tmp_path):
    from bbox_lfm.profiles import ProviderProfile
    from bbox_lfm.types import Capabilities

    assert get("rlprompt") is RLPrompt
    with pytest.raises(ConfigError, match="budget must be"):
        RLPrompt(budget=15)  # one step is 16 calls
    with pytest.raises(ConfigError, match="prompts_per_step must be"):
        RLPrompt(prompts_per_step=1)
    with pytest.raises(ConfigError, match="not found"):
        RLPrompt(policy_model=str(tmp_path / "nowhere"))
    assert RLPrompt(budget=1200).projected_calls() == 1200
    assert RLPrompt(budget=50).projected_calls() == 50  # three steps of 16 and one of 2
    assert RLPrompt(budget=49).projected_calls() == 48  # one call left: no z-score

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    for bad, what in ((tmp_path / "empty", r"a directory holding \['weights.bin'\]"),
                      (tmp_path / "notes.txt", "a .txt file")):
        client, adapter = mock_client()
        with pytest.raises(ConfigError, match=what):
            RLPrompt(budget=4, prompts_per_step=2, policy_model=str(bad)).fit(client, toy_task())
        assert adapter.calls == 0

    adapter = MockAdapter(lambda q: {})
    blind = ProviderProfile(name="no-logprobs", base_url="http://mock/v1", capabilities=Capabilities(logprobs=False))
    client = Client("http://mock/v1", adapter=adapter, provider=blind, model="m", cache_mode="off")
    with pytest.raises(CapabilityError, match="logprobs"):
        RLPrompt(budget=4, prompts_per_step=2, policy_model=tiny_lm).fit(client, toy_task())
    assert adapter.calls == 0


# -- the real local server, the real policy --------------------------------------------------------


def test_tiny_run_on_the_local_server_saves_loads_and_replays(local_server, tmp_path):
    """The default SmolLM2 policy against the session's local server: two steps of four prompts."""
    train = [Example("a wonderful , moving and funny film", 1), Example("dull , boring and far too long", 0),
             Example("one of the best films of the year", 1), Example("a mess of a movie , badly acted", 0)]
    task = Task(name="tiny-sst", labels=("negative", "positive"), label_words=(" terrible", " great"),
                template="{prompt} {text} It was", kshot_loader=lambda k, seed: FewShot(train=train, dev=train))
    kw = {"prompt_length": 3, "prompts_per_step": 4, "budget": 8, "eval_every": 4, "seed": 13, "policy_device": "cpu"}
    cache = tmp_path / "cache.sqlite"
    with Client.local(local_server, cache=cache) as client:
        m = RLPrompt(**kw).fit(client, task)
        assert m.calls_ == 8 and 0 < m.budget_spent_["calls"] <= 8
        assert len(m.curve_) == 2 and len(m.best_ids_) == 3 and m.best_prompt_ in [p["prompt"] for p in m.curve_]
        assert m.extra_["best_sampled"]["reward"] == max(h["reward_max"] for h in m.history_)
        assert "\ufffd" not in m.best_prompt_
        assert m.extra_["best_dev"] == max(p["dev_accuracy"] for p in m.curve_)
        assert m.mlp_["0.weight"].shape == (2048, 576)
        loaded = RLPrompt.load(m.save(tmp_path / "rl.json"))
        loaded.task_ = task  # an in-memory task: load_task cannot find it by name
        assert np.array_equal(loaded.predict(client, train), m.predict(client, train))
    with Client.local(local_server, cache=cache, cache_mode="replay") as client:
        again = RLPrompt(**kw).fit(client, task)
        assert again.budget_spent_["requests"] == 0 and again.eval_spent_["requests"] == 0
        assert again.best_prompt_ == m.best_prompt_ and again.curve_ == m.curve_


def test_a_loaded_policy_predicts_with_the_template_it_was_fitted_on(tiny_lm, tmp_path):
    """A run that started from a template of the user's (not the task's first) keeps it after load."""
    from bbox_lfm.tasks import load_task

    task = load_task("sample").with_template("Opinion: {text}\nVerdict:", [" terrible", " great"])
    seen: list[str] = []

    def handler(query):
        seen.extend(query.prompt)
        return {"choices": [{"index": i, "text": "", "finish_reason": "length", "label_logprobs": [-1.0, -2.0]}
                            for i in range(len(query.prompt))], "model": "m"}

    def client() -> Client:
        return Client("http://mock/v1", adapter=MockAdapter(handler), provider="bbox-lfm", model="m", cache_mode="off")

    m = RLPrompt(prompt_length=2, prompts_per_step=2, budget=4, eval_every=2, mlp_hidden=8, policy_model=tiny_lm,
                 policy_device="cpu", seed=13).fit(client(), task)
    loaded = RLPrompt.load(m.save(tmp_path / "rl.json"))
    examples = task.split(task.eval_split)[:3]
    seen.clear()
    m.predict(client(), examples)
    fitted = list(seen)
    seen.clear()
    loaded.predict(client(), examples)
    assert fitted and all("Verdict:" in p for p in fitted)
    assert seen == fitted
