"""Black-box distillation: a mock teacher with a known rule, then the real local server.

The mock teacher calls a text positive exactly when it contains the word "good"; a student
that learned from it must follow that rule on texts it never saw. Model-backed parts stay tiny
(MiniLM embeddings of a few hundred short texts; the local server only in the last tests).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from typing import Any

import numpy as np
import pytest

from bbox_lfm import Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.errors import ConfigError
from bbox_lfm.methods import get
from bbox_lfm.methods.compare import student_vs_teacher
from bbox_lfm.methods.distill import (
    Distill,
    OneLabelTeacherWarning,
    Teacher,
    k_center_greedy,
    k_means_medoids,
    normalize_text,
    uncertainty,
)
from bbox_lfm.stores import MemoryStore
from bbox_lfm.students import load_student, make_student
from bbox_lfm.tasks import Example, FewShot, Task
from bbox_lfm.types import Query

ADJ = ["quiet", "long", "bright", "odd", "slow", "loud", "warm", "plain", "brief", "dark"]
NOUN = ["film", "story", "plot", "cast", "score", "ending", "script", "scene", "sequel", "premise"]
OTHER = ["bad", "dull", "poor", "weak", "tired", "messy", "flat", "thin"]


def rule(text: str) -> int:
    """The teacher's rule: positive exactly when the text contains the word "good"."""
    return int(re.search(r"\bgood\b", text) is not None)


def make_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct short texts, every other one containing "good"."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        word = "good" if len(out) % 2 else str(rng.choice(OTHER))
        out.setdefault(f"the {rng.choice(ADJ)} {rng.choice(NOUN)} was {word}, {rng.choice(ADJ)} too")
    return list(out)


def toy_task(pool: list[str], test: list[str]) -> Task:
    fs = FewShot(train=[Example(t, rule(t)) for t in test[:4]], dev=[Example(t, rule(t)) for t in test[4:8]])
    return Task(name="toy", labels=("negative", "positive"), label_words=(" terrible", " great"),
                template="{text} It was", eval_split="test",
                loaders={"train": lambda: [Example(t, rule(t)) for t in pool],
                         "test": lambda: [Example(t, rule(t)) for t in test]},
                kshot_loader=lambda k, seed: fs)


def teacher_handler(*, synth: dict[str, list[str]] | None = None) -> Any:
    """Completions: label_logprobs by the rule (on the text before the template's " It was");
    plain completions: the label word as generated text; chat: the next synthetic text."""
    synth = synth or {}

    def handler(q: Query) -> dict[str, Any]:
        if q.endpoint == "chat":
            instr = q.messages[0]["content"]
            options = synth["positive" if "positive" in instr else "negative"]
            text = options[(q.sample_id or 0) % len(options)]
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 5}}
        choices = []
        for i, p in enumerate(q.prompt):
            y = rule(p.removesuffix(" It was"))
            if "label_words" in q.extra:
                lp = [math.log(0.1), math.log(0.9)] if y else [math.log(0.85), math.log(0.15)]
                choices.append({"index": i, "text": "", "finish_reason": "length", "label_logprobs": lp})
            else:
                choices.append({"index": i, "text": " great!" if y else " terrible.", "finish_reason": "length"})
        return {"choices": choices, "usage": {"prompt_tokens": 10 * len(q.prompt), "completion_tokens": 0}}

    return handler


def mock_client(handler: Any, store: MemoryStore | None = None, **kw: Any) -> tuple[Client, MockAdapter]:
    adapter = MockAdapter(handler)
    return Client("http://mock/v1", adapter=adapter, provider="bbox-lfm", model="m",
                  cache=store if store is not None else MemoryStore(), **kw), adapter


def sequences(adapter: MockAdapter) -> int:
    return sum(q.sequences for q in adapter.queries)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], list[str]]:
    texts = make_texts(260, seed=1)
    assert sum(map(rule, texts)) == 130  # both labels, so a constant student cannot pass
    return texts[:200], texts[200:]


# -- pieces -------------------------------------------------------------------------------------

def test_registered_and_validated() -> None:
    assert get("distill") is Distill
    with pytest.raises(ConfigError, match="budget must be"):
        Distill(budget=0)
    with pytest.raises(ConfigError, match="student must be one of"):
        Distill(student="bert-large")
    with pytest.raises(ConfigError, match="transfer must be one of"):
        Distill(transfer="stolen")
    with pytest.raises(ConfigError, match="diversity must be one of"):
        Distill(diversity="far")
    with pytest.raises(ConfigError, match=r"explore must be in \[0, 1\]"):
        Distill(explore=1.5)


def test_helpers() -> None:
    assert normalize_text("  The FILM, was good!! ") == normalize_text("the film was good")
    q = np.array([[0.5, 0.5], [0.99, 0.01]])
    for kind in ("entropy", "margin"):
        u = uncertainty(q, kind)
        assert u[0] > u[1]
    emb = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0]])
    # with point 0 labelled, the two far points come first, the near one last
    assert set(k_center_greedy(emb, [1, 2, 3], [0], 2, np.random.default_rng(0))) == {2, 3}
    # two tight clusters and an outlier: k-means medoids take one typical member of each cluster
    blobs = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1], [20.0, -20.0]])
    picked = k_means_medoids(blobs, [0, 1, 2, 3, 4, 5], 2, seed=0)
    assert sorted(p // 3 for p in picked) == [0, 1]
    assert k_means_medoids(blobs, [0, 6], 2, seed=0) == [0, 6]


def test_teacher_parses_hard_labels() -> None:
    task = toy_task(["a"], ["b"])
    t = Teacher(task)
    assert t.parse(" great movie") == 1
    assert t.parse("It was terrible.") == 0
    assert t.parse(" meh") is None


def test_kd_loss_prefers_the_teacher() -> None:
    import torch

    from bbox_lfm.students import distillation_loss

    t = torch.log(torch.tensor([[0.9, 0.1]]))
    near = distillation_loss(torch.tensor([[2.0, 0.0]]), t, None, temperature=2.0, alpha=0.5)
    far = distillation_loss(torch.tensor([[0.0, 2.0]]), t, None, temperature=2.0, alpha=0.5)
    assert float(near) < float(far)


def test_kd_loss_value_by_hand() -> None:
    """T = 2, alpha = 0.3, one row with teacher p = (0.8, 0.2) and gold label 0, student logits
    (1, 0): p_T = softmax(log p / 2) = (2/3, 1/3) since sqrt(0.8) / sqrt(0.2) = 2;
    q_T = softmax((0.5, 0)) = (0.622459, 0.377541); KL(p_T || q_T) = 2/3 ln((2/3)/0.622459)
    + 1/3 ln((1/3)/0.377541) = 0.0042295; CE = ln(1 + e^-1) = 0.3132617;
    L = 0.3 * 4 * 0.0042295 + 0.7 * 0.3132617 = 0.2243586. KL's direction matters:
    KL(q_T || p_T) = 0.0043090 would give 0.2244540; without T^2, 0.2205524."""
    import torch

    from bbox_lfm.students import distillation_loss

    t = torch.log(torch.tensor([[0.8, 0.2]]))
    loss = distillation_loss(torch.tensor([[1.0, 0.0]]), t, torch.tensor([0]), temperature=2.0, alpha=0.3)
    assert float(loss) == pytest.approx(0.2243586, abs=2e-6)


def test_minilm_ft_gold_only_minibatch_keeps_its_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """With teacher answers and gold labels in the transfer set, a minibatch holding only gold rows
    weighs its cross-entropy 1 - alpha, as a mixed one does (before the fix: 1)."""
    import torch
    import torch.nn.functional as F

    from bbox_lfm.students import minilm

    seen: list[tuple[Any, Any, Any, float]] = []
    real = minilm.distillation_loss

    def spy(logits: Any, t: Any, y: Any, **kw: Any) -> Any:
        loss = real(logits, t, y, **kw)
        seen.append((logits.detach(), t, y, float(loss)))
        return loss

    monkeypatch.setattr(minilm, "distillation_loss", spy)
    texts = ["a fine film", "a dull film", "great acting", "awful plot"]
    nan = float("nan")
    t = np.array([[-0.1, -2.3], [-2.3, -0.1], [nan, nan], [nan, nan]])
    y = np.array([-1, -1, 1, 0])
    make_student("minilm-ft", epochs=1, batch_size=1, alpha=0.3, max_length=16, seed=0).fit(
        texts, teacher_logprobs=t, gold=y)
    gold_only = [(logits, yy, loss) for logits, tt, yy, loss in seen if bool(torch.isnan(tt).all())]
    assert len(gold_only) == 2
    for logits, yy, loss in gold_only:
        assert loss == pytest.approx(0.7 * float(F.cross_entropy(logits, yy)), rel=1e-5)


# -- the student learns the teacher's rule -------------------------------------------------------------

@pytest.mark.parametrize("selection", ["random", "active", "active-kmeans-explore"])
def test_student_learns_the_mock_teachers_rule(data: tuple[list[str], list[str]], selection: str) -> None:
    pool, test = data
    task = toy_task(pool, test)
    client, adapter = mock_client(teacher_handler())
    kw = {"selection": "active", "diversity": "kmeans", "explore": 0.5} if selection == "active-kmeans-explore" \
        else {"selection": selection}
    m = Distill(budget=60, rounds=3, seed=0, **kw).fit(client, task, progress=False)
    assert sequences(adapter) <= 60 and m.n_queried_ == 60
    assert m.budget_spent_["sequences"] <= 60
    pred = m.predict(client, task.split("test"), progress=False)
    acc = float(np.mean(pred == np.array([rule(t) for t in test])))
    assert acc >= 0.9, acc
    assert len(m.curve_) >= 2 and m.curve_[-1]["sequences"] == 60


def test_hard_labels_from_generated_text(data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    client, adapter = mock_client(teacher_handler())
    m = Distill(budget=40, teacher_signal="hard", seed=1).fit(client, task, progress=False)
    assert all(q.max_tokens > 0 and "label_words" not in q.extra for q in adapter.queries)
    assert m.stats_["teacher_signal"] == "hard"
    pred = m.predict(client, task.split("test"), progress=False)
    assert float(np.mean(pred == np.array([rule(t) for t in test]))) >= 0.9


def test_one_label_teacher_warns(data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    rule_teacher = teacher_handler()

    def always_positive(q: Query) -> dict[str, Any]:  # the rule teacher asked about texts that all contain "good"
        return rule_teacher(Query(prompt=tuple(p + " good" for p in q.prompt), extra=q.extra))

    client, _ = mock_client(always_positive)
    with pytest.warns(OneLabelTeacherWarning, match=r"'positive' to 100% of the 30 transfer texts"):
        m = Distill(budget=30, seed=0).fit(client, task, progress=False)
    assert m.stats_["teacher_label_share"] == {"negative": 0.0, "positive": 1.0}
    # the rule teacher answers both labels: recorded, no warning
    client, _ = mock_client(teacher_handler())
    with warnings.catch_warnings():
        warnings.simplefilter("error", OneLabelTeacherWarning)
        m = Distill(budget=30, seed=0).fit(client, task, progress=False)
    assert 0.2 < m.stats_["teacher_label_share"]["positive"] < 0.8


def test_cached_rerun_sends_nothing(data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    store = MemoryStore()
    client, adapter = mock_client(teacher_handler(), store)
    first = Distill(budget=30, selection="active", rounds=2, seed=3).fit(client, task, progress=False)
    sent = adapter.calls
    again, adapter2 = mock_client(teacher_handler(), store, cache_mode="replay")
    second = Distill(budget=30, selection="active", rounds=2, seed=3).fit(again, task, progress=False)
    assert sent > 0 and adapter2.calls == 0
    assert second.budget_spent_["sequences"] == 0 and second.budget_spent_["cache_hits"] == 30
    assert second.inputs_ == first.inputs_


def test_synthetic_never_stores_duplicates(data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    # a teacher that repeats itself: 3 distinct positives (one only differing in case and
    # punctuation), 2 negatives, asked for many more
    synth = {"positive": ["a good film", "A GOOD film!", "the good plot", "good cast"],
             "negative": ["a dull film", "the poor plot"]}
    client, adapter = mock_client(teacher_handler(synth=synth))
    m = Distill(transfer="synthetic", budget=40, seed=0).fit(client, task, progress=False)
    keys = [normalize_text(x) for x in m.inputs_]
    assert len(keys) == len(set(keys)) == 5
    s = m.stats_["synthetic"]
    assert s["duplicates"] > 0 and s["kept"] == 5
    assert sequences(adapter) <= 40
    # a duplicate is never labelled: labelling requests = distinct texts
    assert sum(q.sequences for q in adapter.queries if q.endpoint == "completions") == 5


def test_synthetic_filters_unconfident_texts(data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    # the "negative" instruction yields a text the teacher itself calls positive: filtered out
    synth = {"positive": ["a good film"], "negative": ["a good ending"]}
    client, _ = mock_client(teacher_handler(synth=synth))
    m = Distill(transfer="synthetic", budget=12, seed=0).fit(client, task, progress=False)
    assert m.inputs_ == ["a good film"] and m.stats_["synthetic"]["unconfident"] == 1


def test_both_transfer_and_gold(data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    synth = {"positive": ["a good film", "good cast"], "negative": ["a dull film", "the poor plot"]}
    client, adapter = mock_client(teacher_handler(synth=synth))
    m = Distill(transfer="both", budget=40, gold_k=2, seed=0).fit(client, task, progress=False)
    assert sequences(adapter) <= 40
    assert {"a good film", "a dull film"} <= set(m.inputs_) and len(m.inputs_) > 4


def test_method_save_load(tmp_path: Any, data: tuple[list[str], list[str]]) -> None:
    pool, test = data
    task = toy_task(pool, test)
    client, _ = mock_client(teacher_handler())
    m = Distill(budget=20, seed=0).fit(client, task, progress=False)
    path = m.save(tmp_path / "distill.json")
    back = Distill.load(path)
    assert json.loads(path.read_text())["method"] == "distill"
    np.testing.assert_array_equal(back.predict(None, test, progress=False), m.predict(None, test, progress=False))


def test_minilm_ft_student_learns(data: tuple[list[str], list[str]], tmp_path: Any) -> None:
    pool, test = data
    texts = pool[:32]
    lp = np.log(np.array([[0.1, 0.9] if rule(t) else [0.9, 0.1] for t in texts]))
    s = make_student("minilm-ft", epochs=2, batch_size=8, lr=1e-4, max_length=32, seed=0).fit(texts,
                                                                                            teacher_logprobs=lp)
    pred = s.predict(test[:20], progress=False)
    assert float(np.mean(pred == np.array([rule(t) for t in test[:20]]))) >= 0.8
    s.save(tmp_path / "ft")
    np.testing.assert_allclose(load_student(tmp_path / "ft").predict_proba(test[:20], progress=False),
                               s.predict_proba(test[:20], progress=False), atol=1e-5)


# -- the real local server ------------------------------------------------------------------------------

def test_local_teacher_tiny_budget(local_client: Any, tmp_path: Any) -> None:
    from bbox_lfm.tasks import load_task, subsample

    task = load_task("sst2")
    m = Distill(budget=16, pool_size=64, seed=0).fit(local_client, task, progress=False)
    assert local_client.budget.summary()["sequences"] <= 16 and m.n_queried_ == 16
    assert m.stats_["teacher_signal"] == "soft" and m.teacher_logprobs_.shape == (16, 2)
    examples = subsample(task.split("eval"), 24, seed=0)
    pred = m.predict(local_client, examples, progress=False)
    back = Distill.load(m.save(tmp_path / "d.json"))
    np.testing.assert_array_equal(back.predict(local_client, examples, progress=False), pred)
    # a cached rerun: replay mode sends nothing (a miss would raise CacheMiss)
    again = Distill(budget=16, pool_size=64, seed=0).fit(local_client.with_cache_mode("replay"), task,
                                                         progress=False)
    assert again.budget_spent_["sequences"] == 0
    np.testing.assert_array_equal(again.teacher_logprobs_, m.teacher_logprobs_)


# -- the student beside its teacher ---------------------------------------------------------------

def test_student_beside_its_teacher_live_then_replayed(data: tuple[list[str], list[str]], tmp_path: Any) -> None:
    pool, test = data
    task = toy_task(pool, test)
    client, adapter = mock_client(teacher_handler())
    adapter.latency_s = 0.02  # the teacher takes 20 ms an answer
    m = Distill(budget=40, rounds=2, seed=0).fit(client, task, progress=False)
    examples = task.split("test")[:12]
    before = adapter.calls
    live = student_vs_teacher(m, client, examples)
    assert adapter.calls - before == 12 and not live.teacher_cached
    truth = np.array([rule(ex.text) for ex in examples])
    assert live.teacher_accuracy == 1.0  # the mock teacher is the rule
    student = m.predict(client, examples, progress=False)
    assert live.student_accuracy == pytest.approx(float(np.mean(student == truth)))
    assert live.agreement == live.student_accuracy  # the teacher is always right here
    assert live.teacher_s_per_example >= 0.02 and live.student_s_per_example > 0

    # replayed: nothing sent, the teacher's recorded times reported; a loaded method needs its task
    loaded = Distill.load(m.save(tmp_path / "m.json"))
    with pytest.raises(Exception, match="task"):
        student_vs_teacher(loaded, client, examples)
    again = student_vs_teacher(loaded, client.with_cache_mode("replay"), examples, task=task)
    assert adapter.calls - before == 12 and again.teacher_cached
    assert again.teacher_s_per_example == live.teacher_s_per_example
    assert (again.agreement, again.student_accuracy) == (live.agreement, live.student_accuracy)
    assert again.to_json()["speedup"] == pytest.approx(again.teacher_s_per_example / again.student_s_per_example)
