"""PromptBoosting: the formulas by hand, a mock provider with a known rule, the real local server
at a tiny size, and the top-k path against a respx mock of a hosted chat API."""

from __future__ import annotations

import base64
import json
import math
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import respx

from bbox_lfm import Budget, Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.errors import CapabilityError, ConfigError
from bbox_lfm.methods import get
from bbox_lfm.methods.base import Method
from bbox_lfm.methods.harness import run
from bbox_lfm.methods.promptboosting import (
    PromptBoosting,
    candidate_verbalizers,
    class_token_lists,
    no_better_than_chance,
    samme_alpha,
    screening_scores,
    update_weights,
    vote,
    weak_learner,
)
from bbox_lfm.profiles import ProviderProfile, load_profile
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import Example, Task, load_task
from bbox_lfm.types import Capabilities, Query

# -- the formulas on a tiny fake distribution (values worked out by hand in the comments) -------

# 4 examples x 3 tokens, labels 0 0 1 1, uniform weights (N w_n = 1)
P4 = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
Y4 = np.array([0, 0, 1, 1])
W4 = np.full(4, 0.25)


def test_screening_scores_token_assignment_and_lists_binary() -> None:
    S = screening_scores(P4, Y4, W4, 2)
    # score[0, v] = P[0,v] + P[1,v] - P[2,v] - P[3,v]: 0.6+0.5-0.1-0.6, 0.3+0.2-0.7-0.3, 0.1+0.3-0.2-0.1
    assert S[0] == pytest.approx([0.4, -0.5, 0.1])
    assert S[1] == pytest.approx([-0.4, 0.5, -0.1])
    lists = class_token_lists(S, 2)  # token 0 -> class 0, 1 -> class 1, 2 -> class 0 (0.1 > -0.1)
    assert [lst.tolist() for lst in lists] == [[0, 2], [1]]
    cands = candidate_verbalizers(lists)  # the product, then every pair swapped
    assert cands.tolist() == [[0, 1], [2, 1], [1, 0], [1, 2]]


def test_weak_learner_alpha_and_weight_update() -> None:
    cands = np.array([[0, 1], [2, 1], [1, 0], [1, 2]])
    i, err, pred = weak_learner(P4, Y4, W4, cands)
    # [0, 1] is wrong on example 3 only (0.6 > 0.3 says class 0); [2, 1] wrong on example 0 only:
    # both err 0.25, the first wins the tie
    assert (i, err, pred.tolist()) == (0, 0.25, [0, 0, 1, 0])
    assert samme_alpha(0.25, 2) == pytest.approx(math.log(3))          # ln(0.75 / 0.25) + ln 1
    assert samme_alpha(0.25, 3) == pytest.approx(math.log(6))          # ln 3 + ln 2
    w = update_weights(W4, math.log(3), pred != Y4)
    assert w == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])            # 0.25 * 3 on the miss, / 1.5


def test_screening_three_classes_with_weights_and_a_class_without_tokens() -> None:
    P = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    y = np.array([0, 1, 2])
    w = np.array([0.5, 0.25, 0.25])  # N w = 1.5, 0.75, 0.75
    S = screening_scores(P, y, w, 3)
    assert S[0] == pytest.approx([1.5 * 0.5 - 0.75 * 0.2 - 0.75 * 0.9, 1.5 * 0.5 - 0.75 * 0.8 - 0.75 * 0.1])
    assert S[1] == pytest.approx([-0.75 - 0.75 * -0.2 - 0.675, -0.75 + 0.6 - 0.075])
    assert S[2] == pytest.approx([-0.75 - 0.15 + 0.675, -0.75 - 0.6 + 0.075])
    lists = class_token_lists(S, 2)  # both tokens go to class 0; classes 1 and 2 take their best one
    assert lists[0].tolist() == [1, 0]
    assert lists[1].tolist() == [1] and lists[2].tolist() == [0]
    assert len(candidate_verbalizers(lists)) == 2  # 2 x 1 x 1, no swapping beyond two classes


def test_skip_rule_and_err_zero() -> None:
    with pytest.raises(ConfigError, match="err"):
        samme_alpha(0.0, 2)  # alpha = +inf: the caller must handle it
    assert samme_alpha(0.6, 3) == pytest.approx(math.log(0.4 / 0.6) + math.log(2))  # > 0: 0.6 < 1 - 1/3
    assert samme_alpha(0.6, 3) > 0 and samme_alpha(0.49, 2) > 0
    assert no_better_than_chance(0.5, 2) and not no_better_than_chance(0.49, 2)
    assert no_better_than_chance(2 / 3, 3) and not no_better_than_chance(0.66, 3)
    assert no_better_than_chance(0.75, 4) and not no_better_than_chance(0.74, 4)
    # the vote: alphas 1, 2, 0.5; a learner with alpha None (err = 0) decides alone
    preds = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 0]])
    assert vote(preds, [1.0, 2.0, 0.5], 2).tolist() == [1, 1, 0]
    assert vote(preds, [1.0, None, 0.5], 2).tolist() == [1, 1, 0]
    assert vote(preds, [1.0, 0.2, None], 2).tolist() == [0, 0, 0]


# -- a mock provider with a known rule ---------------------------------------------------------

V = 40
GOOD, BAD = 7, 3  # the "model" puts mass on token 7 after a text with "good", on token 3 otherwise


def _logprobs(text: str, flip: bool = False) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    logits = rng.normal(0, 0.5, V)
    logits[11] += 3.0  # a frequent token that says nothing about the label
    positive = ("good" in text) != flip
    logits[GOOD if positive else BAD] += 2.0
    return logits - np.logaddexp.reduce(logits)


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a.astype(dtype)).tobytes()).decode()


def _answer(query: Query) -> dict[str, Any]:
    if "next_token_logprobs" not in query.extra:  # the harness scores the start template (top-k) as a baseline
        top = {"logprobs": {"tokens": [" bad"], "token_logprobs": [-1.0], "top_logprobs": [{" bad": -1.0, " x": -2.0}]}}
        return {"model": "m", "choices": [{"index": i, "text": " bad", **top} for i in range(len(query.prompt))],
                "usage": {"prompt_tokens": 1}}
    spec = dict(query.extra["next_token_logprobs"])
    choices = []
    for i, text in enumerate(query.prompt):
        lp = _logprobs(text, flip="number 3" in text)  # examples numbered 3 fool the model
        ids = spec.get("ids")
        item = {"position": 5, "vocab_size": V, "n": V if ids is None else len(ids), "dtype": "float16",
                "logprobs": _b64(lp if ids is None else lp[ids], "<f2"),
                "ids": None if ids is None else _b64(np.asarray(ids), "<i4"),
                "mass": float(np.exp(lp if ids is None else lp[ids]).sum())}
        if ids is not None:
            item["tokens"] = [f"tok{j}" for j in ids]
        choices.append({"index": i, "text": "", "finish_reason": "length", "next_token_logprobs": item})
    return {"model": "m", "choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 0}}


def _profile(**caps: Any) -> ProviderProfile:
    base = {"logprobs": True, "max_top_logprobs": 20, "chat_max_top_logprobs": 20, "max_batch": 64,
            "next_token_logprobs": True}
    return ProviderProfile(name="fake", base_url="http://mock/v1", capabilities=Capabilities(**{**base, **caps}))


def _task() -> Task:
    words = ["good", "bad"]
    rows = [Example(text=f"a {w} {f} film, number {i}", label=int(w == "good"))
            for i in range(12) for w in words for f in ("long", "short")]
    test = [Example(text=f"the {w} one, take {i}", label=int(w == "good")) for i in range(10) for w in words]
    return Task(name="toy", labels=("negative", "positive"), label_words=(" bad", " good"), template="{text} It was",
                templates=(("{text} It was", (" bad", " good")), ("Review: {text}\nSentiment:", (" no", " yes"))),
                shot=8, loaders={"train": lambda: list(rows), "test": lambda: list(test)})


def _client(adapter: MockAdapter, store: Any = None, **caps: Any) -> Client:
    return Client("http://mock/v1", adapter=adapter, provider=_profile(**caps), model="m",
                  cache=store if store is not None else MemoryStore())


def test_mock_rule_is_found_and_err_zero_ends_boosting() -> None:
    adapter = MockAdapter(_answer)
    task = _task()
    pb = PromptBoosting(n_rounds=30, tokens_per_class=4, budget=2, seed=1)
    result = run(pb, _client(adapter), task, seed=1, progress=False)
    assert result.budget_spent["calls"] == 2 and result.eval_spent["calls"] >= 2  # dev passes apart
    assert result.eval["accuracy"] == 1.0
    # the training set has examples 'number 3' that fool the model: no verbalizer is perfect there,
    # unless the split holds none of them; either way every learner must speak GOOD vs BAD first
    first = pb.learners_[0]
    assert first["tokens"] == [BAD, GOOD]
    assert pb.extra_["restricted"] is False and pb.extra_["screened_tokens"] == [V, V]
    assert pb.extra_["passes_per_test_example"] == len({lr["template"] for lr in pb.learners_[:pb.ensemble_size_]})
    if pb.perfect_learner_:
        assert pb.learners_[-1]["alpha"] is None and "perfect" in pb.extra_["stopped_by"]
    # test time asks only for the ensemble's tokens, never the full vocabulary
    test_queries = [q for q in adapter.queries if "ids" in q.extra.get("next_token_logprobs", {})]
    assert test_queries and all(set(q.extra["next_token_logprobs"]["ids"]) <= {BAD, GOOD} for q in test_queries)


def test_perfect_learner_alone_when_the_model_never_errs() -> None:
    def clean(q: Query) -> dict[str, Any]:
        q2 = Query(prompt=tuple(p.replace("number 3", "number three") for p in q.prompt), max_tokens=0,
                   extra=q.extra)
        return _answer(q2)

    pb = PromptBoosting(n_rounds=50, tokens_per_class=4, budget=2, seed=2).fit(_client(MockAdapter(clean)), _task())
    assert pb.perfect_learner_ and len(pb.learners_) == 1 and pb.learners_[0]["alpha"] is None
    assert pb.learners_[0]["err"] == 0.0 and pb.extra_["stopped_by"] == "perfect learner (err = 0)"


def test_boosting_rounds_reweight_and_select_on_dev() -> None:
    pb = PromptBoosting(n_rounds=12, tokens_per_class=5, budget=2, seed=3)
    pb.fit(_client(MockAdapter(lambda q: _answer(Query(prompt=tuple(p + " number 3" if "good" in p and "long" in p
                                                                       else p for p in q.prompt), max_tokens=0,
                                                              extra=q.extra)))), _task())
    # the model is wrong on every 'good ... long' example: no learner is perfect, alphas are finite
    assert not pb.perfect_learner_ and len(pb.history_) == 12
    assert all(lr["alpha"] is not None and lr["alpha"] > 0 for lr in pb.learners_)
    assert 1 <= pb.ensemble_size_ <= len(pb.learners_)
    assert [c["learners"] for c in pb.curve_] == list(range(1, len(pb.learners_) + 1))


def test_clear_errors_before_anything_is_sent() -> None:
    adapter = MockAdapter(_answer)
    with pytest.raises(CapabilityError, match="logprobs"):
        PromptBoosting(budget=2).fit(_client(adapter, logprobs=False, next_token_logprobs=False), _task())
    with pytest.raises(CapabilityError, match="chat_logprobs"):
        PromptBoosting(budget=2, endpoint="chat").fit(
            _client(adapter, chat_logprobs=False, next_token_logprobs=False), _task())
    with pytest.raises(CapabilityError, match="next_token_logprobs"):
        PromptBoosting(budget=2, source="full").fit(_client(adapter, next_token_logprobs=False), _task())
    with pytest.raises(ConfigError, match="budget must be at least 1 call"):
        PromptBoosting(budget=0).fit(_client(adapter), _task())
    with pytest.raises(ConfigError, match="answer position at the end"):
        PromptBoosting(templates=["{text} {answer} it was."])
    assert adapter.calls == 0
    # an {answer} marker at the end is fine and dropped; the user's templates join the task's
    pb = PromptBoosting(templates=["Text: {text} Verdict: {answer}", {"template": "{text} It was"}])
    assert pb._own_templates(_task())[-1] == "Text: {text} Verdict:"
    assert len(pb._own_templates(_task())) == 3


def test_budget_exhausted_mid_run_keeps_what_was_fetched_and_projected_calls() -> None:
    client = Client("http://mock/v1", adapter=MockAdapter(_answer), provider=_profile(), model="m",
                    cache=MemoryStore(), budget=Budget(calls=3))  # train 1, dev 1, train 2, then no dev 2
    pb = PromptBoosting(n_rounds=5, tokens_per_class=2, budget=2, seed=1).fit(client, _task())
    assert pb.stopped_by_.startswith("BudgetExhausted") and len(pb.templates_) == 1 and pb.learners_
    assert pb.projected_calls(_task()) == 2 and PromptBoosting(budget=9).projected_calls(_task()) == 2


def test_provider_written_templates_join_the_pool() -> None:
    replies = ["Sure! Here is one:\n\"{text} Overall, it was\"", "no slot here", "{text} {text_pair} bad"]

    def answer(q: Query) -> dict[str, Any]:
        if q.endpoint == "chat":
            assert "{text}" in q.messages[0]["content"] and "Label: positive" in q.messages[0]["content"]
            text = replies[q.sample_id or 0]
            return {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                               "finish_reason": "stop"}], "usage": {"prompt_tokens": 1}}
        return _answer(q)

    adapter = MockAdapter(answer)
    pb = PromptBoosting(n_rounds=3, tokens_per_class=2, budget=3, seed=1, generate_templates=3)
    pb.fit(_client(adapter), _task())
    assert pb.templates_[-1] == "{text} Overall, it was" and len(pb.templates_) == 3  # 2 invalid replies dropped
    assert pb.extra_["generation_spent"]["calls"] == 3 and pb.budget_spent_["calls"] == 3
    assert sum(q.endpoint == "chat" and q.temperature == 0.7 for q in adapter.queries) == 3


def test_the_pool_is_every_template_of_the_task_whatever_the_start() -> None:
    sst2 = load_task("sst2")
    started = sst2.with_template(*sst2.templates[1])  # what the harness does with a start template
    assert len(started.templates) == 1
    pool = PromptBoosting()._own_templates(started)
    assert pool == [t for t, _ in sst2.templates] and PromptBoosting().projected_calls(started) == 5


def test_save_load_predict_and_registry(tmp_path: Path) -> None:
    assert get("promptboosting") is PromptBoosting
    task = _task()
    client = _client(MockAdapter(_answer))
    pb = PromptBoosting(n_rounds=8, tokens_per_class=3, budget=2, seed=1).fit(client, task)
    expected = pb.predict(client, task.split("test"))
    path = pb.save(tmp_path / "pb.json")
    loaded = Method.load(path)
    assert isinstance(loaded, PromptBoosting) and loaded.learners_ == json.loads(json.dumps(pb.learners_))
    assert loaded.predict(client, task.split("test")).tolist() == expected.tolist()
    assert loaded.best_prompt_["learners"][0]["verbalizer"][0].startswith("tok")


# -- the top-k path against a hosted chat API (respx) ------------------------------------------

BASE = "https://api.example.test/v1"


def _chat_answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    assert body["logprobs"] is True and body["top_logprobs"] <= 20
    text = body["messages"][0]["content"]
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    top = {f"w{j}": float(-5 - rng.random()) for j in range(18)}
    top["great" if "good" in text else "awful"] = -0.4
    top["okay"] = -2.0
    entries = sorted(({"token": t, "logprob": v, "bytes": None} for t, v in top.items()), key=lambda e: -e["logprob"])
    first = entries[0]
    return httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": first["token"]}, "finish_reason": "length",
                     "logprobs": {"content": [{**first, "top_logprobs": entries[: body["top_logprobs"]]}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})


@respx.mock
def test_topk_path_through_a_hosted_chat_api() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(side_effect=_chat_answer)
    task = _task()
    with Client(BASE, api_key="sk-test", provider="openai", model="gpt-4o-mini", cache=MemoryStore(),
                requests_per_minute=0, tokens_per_minute=0) as client:  # no pacing in a unit test
        pb = PromptBoosting(n_rounds=10, tokens_per_class=3, budget=2, seed=1, endpoint="chat")
        result = run(pb, client, task, seed=1, progress=False)
    n_train = len(task.few_shot(seed=1).train)
    # two calls (template passes), one request per example each on a chat API
    assert result.budget_spent["calls"] == 2 and result.budget_spent["requests"] == 2 * n_train
    assert pb.extra_["source"] == "topk" and pb.extra_["restricted"] is True
    assert "top-20" in pb.extra_["screening"]
    assert 0.3 < pb.extra_["mass"]["mean"] < 1.0  # the returned tokens hold only part of the mass
    assert set(pb.learners_[0]["tokens"]) == {"awful", "great"} and result.eval["accuracy"] == 1.0
    sent = route.call_count
    # every distinct prompt reached the API once: answers are cached and reused
    assert sent == len({json.loads(c.request.content)["messages"][0]["content"] for c in route.calls})


# -- the real local server at a tiny size ---------------------------------------------------------

def _local_profile() -> ProviderProfile:
    # the checkout's own profile (the installed package may map another checkout's providers/)
    return load_profile(Path(__file__).resolve().parents[2] / "providers" / "bbox-lfm.toml")


def test_local_server_fit_predict_save_load_and_replay(local_server: Any, tmp_path: Path) -> None:
    task = load_task("sample")
    cache = tmp_path / "pb.sqlite"
    test = task.split("test")
    with Client.local(local_server, cache=cache, provider=_local_profile()) as client:
        pb = PromptBoosting(n_rounds=5, tokens_per_class=5, max_templates=2, budget=2, seed=13).fit(client, task)
        pred = pb.predict(client, test)
        sent = client.budget.summary()["requests"]
    assert pb.source_ == "full" and pb.extra_["screened_tokens"][0] > 40_000 and len(pb.templates_) == 2
    assert pb.budget_spent_["calls"] == 2 and pb.extra_["mass"]["min"] == pytest.approx(1.0, abs=0.01)
    assert sent == 2 + 2 + pb.extra_["passes_per_test_example"]  # train, dev, one test request per template
    assert all(isinstance(v, str) for lr in pb.best_prompt_["learners"] for v in lr["verbalizer"])
    loaded = Method.load(pb.save(tmp_path / "pb.json"))
    with Client.local(local_server, cache=cache, provider=_local_profile(), cache_mode="replay") as replay:
        again = PromptBoosting(n_rounds=5, tokens_per_class=5, max_templates=2, budget=2, seed=13).fit(replay, task)
        assert loaded.predict(replay, test).tolist() == pred.tolist()
        assert replay.budget.summary()["requests"] == 0  # nothing sent: every answer came from the cache
    assert again.learners_ == pb.learners_ and again.ensemble_size_ == pb.ensemble_size_
