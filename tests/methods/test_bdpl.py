"""BDPL: the pieces (simplex projection, AdamW, gradient, PMI vocabulary), then whole searches
against a mock provider, OpenAI-shaped chat answers (respx) and the real local server."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
import respx

from bbox_lfm import Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.errors import ConfigError
from bbox_lfm.methods import get
from bbox_lfm.methods.bdpl import BDPL, AdamW, CategoricalPolicy, label_loss, project_simplex
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import Example, FewShot, Task
from bbox_lfm.vocab import candidate_vocabulary, load_candidates, pmi_ngrams

CANDIDATES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
TARGET = ("charlie", "hotel", "echo")


def toy_task(n_per_class: int = 3, template: str = "{prompt} {text} It was") -> Task:
    """A two-label task whose few-shot split is given directly (no files)."""
    train = [Example(f"review number {i} {'fine' if i % 2 else 'awful'}", i % 2) for i in range(2 * n_per_class)]
    dev = [Example(f"opinion {i} {'fine' if i % 2 else 'awful'}", i % 2) for i in range(2 * n_per_class)]
    return Task(name="toy", labels=("negative", "positive"), label_words=(" bad", " good"), template=template,
                kshot_loader=lambda k, seed: FewShot(train=train, dev=dev))


def target_matches(text: str) -> int:
    """How many prompt positions of a formatted toy text hold the target candidate."""
    words = text.split()[:len(TARGET)]
    return sum(w == t for w, t in zip(words, TARGET))


def label_scores(text: str) -> list[float]:
    """The rule behind the mock: the right label's margin grows with the target matches."""
    y = 1 if text.split()[-3] == "fine" else 0
    margin = 2.0 * target_matches(text) - 3.0
    right, wrong = -math.log1p(math.exp(-margin)), -math.log1p(math.exp(margin))
    return [right, wrong] if y == 0 else [wrong, right]


def mock_handler(query):
    return {"choices": [{"index": i, "text": "", "finish_reason": "length", "label_logprobs": label_scores(p)}
                        for i, p in enumerate(query.prompt)],
            "model": "m", "usage": {"prompt_tokens": 10 * len(query.prompt), "completion_tokens": 0}}


def mock_client(**kw) -> tuple[Client, MockAdapter]:
    adapter = MockAdapter(mock_handler)
    kw.setdefault("cache", MemoryStore())
    return Client("http://mock/v1", adapter=adapter, provider="bbox-lfm", model="m", **kw), adapter


# -- pieces -------------------------------------------------------------------------------------


def test_project_simplex_rows_sum_to_one_and_fix_points_stay():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 7))
    w = project_simplex(v)
    assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1.0)
    p = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert np.allclose(project_simplex(p), p)
    # the projection is the closest point: no random simplex point is closer
    for _ in range(200):
        q = rng.dirichlet(np.ones(7))
        assert np.linalg.norm(v[0] - w[0]) <= np.linalg.norm(v[0] - q) + 1e-12


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x0, grads = rng.normal(size=(3, 4)), [rng.normal(size=(3, 4)) for _ in range(5)]
    t = torch.tensor(x0, requires_grad=True)
    opt = torch.optim.AdamW([t], lr=0.01, weight_decay=0.1)
    ours, x = AdamW(x0.shape, lr=0.01, weight_decay=0.1), x0
    for g in grads:
        t.grad = torch.tensor(g)
        opt.step()
        x = ours.step(x, g)
    assert np.allclose(x, t.detach().numpy(), atol=1e-10)


def test_gradient_is_half_the_official_derivative():
    """The official code's +-1/p derivative sums to exactly twice the true score function."""
    pol = CategoricalPolicy(3, 5, lr=1e-4, weight_decay=0.1, clip_norm=3.0)
    pol.p = np.random.default_rng(2).dirichlet(np.ones(5), size=3)
    S = pol.ask(np.random.default_rng(3), 6)
    L = np.random.default_rng(4).random(6)
    official = np.zeros_like(pol.p)
    for k in range(6):
        d = -1.0 / pol.p
        d[np.arange(3), S[k]] *= -1
        official += (L[k] - L.mean()) / 5 * d
    assert np.allclose(2 * pol.gradient(S, L), official)


def test_hinge_loss_has_the_right_sign():
    y = np.array([0, 1])
    good = np.array([[0.0, -5.0], [-5.0, 0.0]])
    assert label_loss(good, y, "hinge", 1.0) == 0.0
    assert label_loss(good[:, ::-1], y, "hinge", 1.0) == pytest.approx(6.0)
    assert label_loss(good, y, "ce", 1.0) < label_loss(good[:, ::-1], y, "ce", 1.0)


def test_pmi_ngrams_merge_strong_pairs_and_top_up_on_tiny_text():
    text = ["new york is big . i like new york , you like paris ."] * 6 + ["the cat sat"]
    grams = dict(pmi_ngrams(text))
    assert "new york" in grams and grams["new york"] == 12
    assert "york is" not in grams  # its words are frequent but only as part of "new york"
    vocab = candidate_vocabulary(text, 20)
    assert vocab[:len(grams)] == [g for g, _ in pmi_ngrams(text)]
    assert "cat" in vocab and len(vocab) == len(set(vocab))
    assert candidate_vocabulary(["only three words"], 200) == ["only", "three", "words"]


def test_load_candidates_and_config_validation(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("a\n\nb\na\n c \n", encoding="utf-8")
    assert load_candidates(f) == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="sample_size must be"):
        BDPL(sample_size=1)
    with pytest.raises(ConfigError, match="loss must be"):
        BDPL(loss="margin")
    with pytest.raises(ConfigError, match="candidates must be"):
        BDPL(candidates=["only"])
    assert get("bdpl") is BDPL
    assert BDPL(budget=40).projected_calls() == 40
    assert BDPL(budget=41, sample_size=20).projected_calls() == 40  # one call left: no baseline
    assert BDPL(budget=45, sample_size=20).projected_calls() == 45


# -- whole searches ----------------------------------------------------------------------------


def test_finds_the_favoured_prompt_against_a_mock_provider():
    client, _adapter = mock_client()
    m = BDPL(prompt_length=3, candidates=CANDIDATES, sample_size=10, lr=0.02, budget=600, eval_every=50, seed=7)
    m.fit(client, toy_task())
    assert m.best_prompt_ == " ".join(TARGET)
    assert [CANDIDATES[j] for j in m.probs_.argmax(axis=1)] == list(TARGET)
    # one request per call (the whole batch in it); a prompt sampled twice is a free cache hit
    assert m.calls_ == 600 == m.budget_spent_["calls"] == m.budget_spent_["requests"] + m.budget_spent_["cache_hits"]
    assert m.curve_[-1]["calls"] == 600 and m.curve_[-1]["dev_accuracy"] == 1.0
    assert m.history_[-1]["loss_mean"] < m.history_[0]["loss_mean"]
    assert np.array_equal(m.predict(client, toy_task().few_shot().dev), [ex.label for ex in toy_task().few_shot().dev])
    assert m.misses_ == 0


def test_best_prompt_is_a_copy_and_budget_exhaustion_stops_cleanly():
    from bbox_lfm.budget import Budget

    client, _ = mock_client(budget=Budget(calls=35))
    m = BDPL(prompt_length=3, candidates=CANDIDATES, sample_size=10, lr=0.02, budget=600, eval_every=10, seed=7)
    m.fit(client, toy_task())
    assert m.extra_["stopped_by"] == "BudgetExhausted"
    assert client.budget.summary()["calls"] <= 35
    assert m.best_probs_ is not m.probs_
    # dev evaluations are counted apart from the search; a step cut short is spent, not counted
    # in calls_ (its answers are cached for a resumed run)
    assert m.eval_spent_["calls"] == len(m.curve_) >= 3
    assert m.budget_spent_["calls"] + m.eval_spent_["calls"] == client.budget.summary()["calls"]
    assert m.calls_ == 10 * len(m.history_) <= m.budget_spent_["calls"]


def test_same_seed_same_result_and_cached_rerun_sends_nothing():
    store = MemoryStore()
    client, adapter = mock_client(cache=store)
    kw = {"prompt_length": 3, "candidates": CANDIDATES, "sample_size": 6, "lr": 0.02, "budget": 60, "eval_every": 12, "seed": 3}
    a = BDPL(**kw).fit(client, toy_task())
    sent = adapter.calls
    assert sent > 0
    client2, adapter2 = mock_client(cache=store)
    b = BDPL(**kw).fit(client2, toy_task())
    assert adapter2.calls == 0
    assert b.budget_spent_["requests"] == 0
    assert b.budget_spent_["calls"] == b.budget_spent_["cache_hits"] == b.calls_ == a.calls_ == 60
    assert np.array_equal(a.probs_, b.probs_) and a.best_prompt_ == b.best_prompt_ and a.curve_ == b.curve_
    c = BDPL(**{**kw, "seed": 4}).fit(mock_client()[0], toy_task())
    assert not np.array_equal(a.probs_, c.probs_)


def test_save_and_load_round_trip(tmp_path):
    client, _ = mock_client()
    m = BDPL(prompt_length=3, candidates=CANDIDATES, sample_size=4, lr=0.02, budget=8, seed=1).fit(client, toy_task())
    path = m.save(tmp_path / "bdpl.json")
    loaded = BDPL.load(path)
    assert loaded.best_prompt_ == m.best_prompt_ and np.array_equal(loaded.probs_, m.probs_)
    assert json.loads(path.read_text())["config"]["candidates"] == CANDIDATES


def _chat_answer(request: httpx.Request, counter: dict) -> httpx.Response:
    """A Chat Completions answer with 20 top logprobs: " good" is among them when the prompt
    starts with the target's first word, " bad" never is (a missing label word)."""
    body = json.loads(request.content)
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    text = body["messages"][-1]["content"]
    top = [{"token": f" filler{i}", "logprob": -1.0 - 0.1 * i} for i in range(20)]
    if text.split()[0] == TARGET[0]:
        top[0] = {"token": " good", "logprob": -0.1}
    counter["misses"] += 1 + (top[0]["token"] != " good")
    content = [{"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]
    return httpx.Response(200, json={
        "id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                     "finish_reason": "length", "logprobs": {"content": content}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}})


def test_runs_against_openai_shaped_chat_answers_and_reports_misses():
    counter = {"misses": 0}
    task = toy_task(n_per_class=2)
    with respx.mock(assert_all_called=True) as mock:
        mock.post("https://api.openai.test/v1/chat/completions").mock(side_effect=lambda r: _chat_answer(r, counter))
        client = Client("https://api.openai.test/v1", provider="openai", api_key="sk-test-not-a-key",
                        model="gpt-4o-mini", cache_mode="off")
        m = BDPL(prompt_length=2, candidates=CANDIDATES, sample_size=4, lr=0.05, budget=8, eval_every=4, seed=0,
                 strategy="topk", endpoint="chat", top_k=20).fit(client, task)
    n_train = len(task.few_shot().train)
    assert m.calls_ == 8
    # --budget counts calls; the chat endpoint needs one request per training example for each
    assert m.budget_spent_["calls"] == 8 and m.budget_spent_["requests"] == 8 * n_train
    assert m.eval_spent_["calls"] == len(m.curve_) and m.eval_spent_["requests"] == len(m.curve_) * n_train
    assert m.misses_ == counter["misses"] > 0
    assert m.extra_["misses"] == m.misses_ == m.extra_["search_misses"] + m.extra_["dev_misses"]
    assert m.budget_spent_["dollars"] > 0


def test_harness_reports_the_eval_misses_of_a_top_k_provider():
    from bbox_lfm.methods.harness import run

    counter = {"misses": 0}
    task = toy_task(n_per_class=2)
    task.loaders["test"] = lambda: [Example(f"held out {i} {'fine' if i % 2 else 'awful'}", i % 2) for i in range(6)]
    with respx.mock() as mock:
        mock.post("https://api.openai.test/v1/chat/completions").mock(side_effect=lambda r: _chat_answer(r, counter))
        client = Client("https://api.openai.test/v1", provider="openai", api_key="sk-test-not-a-key",
                        model="gpt-4o-mini", cache_mode="off")
        m = BDPL(prompt_length=2, candidates=CANDIDATES, sample_size=4, lr=0.05, budget=4, eval_every=4, seed=13,
                 strategy="topk", endpoint="chat", top_k=20)
        result = run(m, client, task, seed=13, progress=False)
    # every eval row misses " bad" at least: the floor was used, and the results file says so
    assert result.eval["misses"] >= result.eval["n"] > 0
    assert result.dev["misses"] >= result.dev["n"] > 0


def test_capability_check_fails_before_sending_anything():
    from bbox_lfm.errors import CapabilityError
    from bbox_lfm.profiles import ProviderProfile
    from bbox_lfm.types import Capabilities

    adapter = MockAdapter(mock_handler)
    blind = ProviderProfile(name="no-logprobs", base_url="http://mock/v1", capabilities=Capabilities(logprobs=False))
    client = Client("http://mock/v1", adapter=adapter, provider=blind, model="m", cache_mode="off")
    with pytest.raises(CapabilityError, match="logprobs"):
        BDPL(candidates=CANDIDATES, budget=4).fit(client, toy_task())
    assert adapter.calls == 0


# -- the real local server ----------------------------------------------------------------------


def test_a_tiny_budget_lowers_the_expected_training_loss_on_the_local_server(local_client):
    """Five candidates, two positions: 25 prompts, few enough to enumerate. The policy's expected
    training loss sum_s p(s) L(s) must drop below the uniform policy's (the mean over all 25)."""
    words = ["great", "terrible", "movie", "review", "the"]
    train = [Example("a wonderful , moving and funny film", 1), Example("dull , boring and far too long", 0),
             Example("one of the best films of the year", 1), Example("a mess of a movie , badly acted", 0)]
    task = Task(name="tiny-sst", labels=("negative", "positive"), label_words=(" terrible", " great"),
                template="{prompt} {text} It was", kshot_loader=lambda k, seed: FewShot(train=train, dev=train))
    m = BDPL(prompt_length=2, candidates=words, sample_size=6, lr=0.05, budget=36, eval_every=36, seed=13)
    m.fit(local_client, task)
    assert m.calls_ == 36 and m.budget_spent_["calls"] <= 36

    prompts = [(i, j) for i in range(5) for j in range(5)]
    texts = [task.format(ex, prompt=f"{words[i]} {words[j]}") for i, j in prompts for ex in train]
    S = local_client.score(texts, task.label_words).logprobs.reshape(len(prompts), len(train), 2)
    y = np.array([ex.label for ex in train])
    L = np.array([label_loss(S[k], y, "ce", 1.0) for k in range(len(prompts))])
    p = m.probs_
    expected = sum(p[0, i] * p[1, j] * L[k] for k, (i, j) in enumerate(prompts))
    assert expected < L.mean() - 0.01, (expected, L.mean(), L.min())


def test_without_a_dev_split_the_lowest_training_loss_prompt_is_kept():
    """Before the fix, best_prompt_ stayed the initial argmax (candidate 0 at every position)."""
    task = toy_task()
    fs = task.few_shot()
    no_dev = Task(name="toy", labels=task.labels, label_words=task.label_words, template=task.template,
                  kshot_loader=lambda k, seed: FewShot(train=fs.train, dev=[]))
    client, _ = mock_client()
    m = BDPL(prompt_length=3, candidates=CANDIDATES, sample_size=10, lr=0.02, budget=60, eval_every=10, seed=7)
    m.fit(client, no_dev)
    assert m.curve_ == []
    y = np.array([ex.label for ex in fs.train])
    kept = label_loss(np.array([label_scores(no_dev.format(ex, prompt=m.best_prompt_)) for ex in fs.train]), y, "ce", 1.0)
    assert kept == pytest.approx(min(h["loss_min"] for h in m.history_))
    assert m.best_indices_ != [0, 0, 0]


def test_pmi_ngrams_stop_at_attached_punctuation():
    """"York," and "big." end a segment: no n-gram runs across the comma or the full stop."""
    found = dict(pmi_ngrams(["New York is big. I like New York, you like Paris."] * 6))
    assert "new york you like paris" not in found
    assert not any("york you" in g or "big i" in g for g in found)
    assert found["new york"] == 12


def test_gradient_clipping_by_hand():
    """p = (1/2, 1/2), prompts s = (0), (1) with losses 0 and 10: w = (L - mean L) / (I - 1) =
    (-5, 5), g = (-5 / 0.5, 5 / 0.5) = (-10, 10), ||g|| = sqrt(200) = 14.142; clipped to norm 3:
    g * 3 / 14.142 = (-2.1213, 2.1213). Below the norm it is left alone."""

    class Recorder:
        def step(self, x, g):
            self.g = g
            return x

    for clip, expected in ((3.0, [-2.1213203, 2.1213203]), (20.0, [-10.0, 10.0])):
        pol = CategoricalPolicy(1, 2, lr=1e-4, weight_decay=0.0, clip_norm=clip)
        pol.opt = Recorder()
        pol.tell(np.array([[0], [1]]), [0.0, 10.0])
        np.testing.assert_allclose(pol.opt.g[0], expected, rtol=1e-6)
