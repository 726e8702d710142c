"""Evaluation through a mock provider computes the right accuracy and F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from bbox_lfm.tasks import Example, evaluate, load_task, macro_f1, subsample, task_from_spec
from bbox_lfm.tasks.evaluate import CHUNK

LABELS = ["World", "Sports", "Business"]


def three_class_task(n: int = 101):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    rows = [Example(f"item {i} says {LABELS[int(rng.integers(3))]}", int(rng.integers(3))) for i in range(n)]
    spec = {"name": "toy", "labels": LABELS, "label_words": [" World", " Sports", " Business"],
            "template": "{text}\nTopic:", "data": {}}
    task = task_from_spec(spec, check_files=False)
    task.loaders["test"] = lambda: rows
    return task


def rule(prompt: str, words: list[str]) -> list[float]:
    """The word the text names gets the highest score."""
    return [0.0 if w.strip() in prompt.split("\n")[0] else -3.0 for w in words]


def test_mock_evaluation_matches_sklearn(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = three_class_task()
    client = mock_client(rule)
    m = evaluate(client, task, "eval", progress=False)
    rows = task.split("test")
    y = [e.label for e in rows]
    expected = [LABELS.index(e.text.rsplit(" ", 1)[1]) for e in rows]
    assert m.n == 101 and m.logprobs.shape == (101, 3)
    assert list(m.predictions) == expected
    assert m.accuracy == pytest.approx(accuracy_score(y, expected))
    assert m.f1 == pytest.approx(f1_score(y, expected, average="macro"))
    assert 0.2 < m.accuracy < 0.5  # labels are random: the check is not trivially 0 or 1
    # one request per CHUNK prompts, each carrying the label words
    sent = client.adapter.queries
    assert len(sent) == -(-101 // CHUNK) and all(len(q.prompt) <= CHUNK for q in sent)
    assert all(q.extra["label_words"] == [" World", " Sports", " Business"] for q in sent)
    # requests carry prompts of similar length (less padding); results still come back in order
    lengths = [len(p) for q in sorted(sent, key=lambda q: len(q.prompt[0])) for p in q.prompt]
    assert lengths == sorted(lengths) and len(set(lengths)) > 1


def test_limit_is_a_seeded_subsample_and_cached(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = three_class_task()
    client = mock_client(rule)
    a = evaluate(client, task, "eval", limit=40, seed=1, progress=False)
    sent = client.adapter.calls
    b = evaluate(client, task, "eval", limit=40, seed=1, progress=False)
    assert client.adapter.calls == sent  # the rerun is answered from the cache
    assert a.n == 40 and np.array_equal(a.predictions, b.predictions)
    assert subsample(task.split("test"), 40, 1) != subsample(task.split("test"), 40, 2)


def test_prompt_reaches_every_query(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = three_class_task(5)
    client = mock_client(rule)
    evaluate(client, task, "eval", prompt="News.", extra={"tag": 1}, progress=False)
    q = client.adapter.queries[0]
    assert all(p.startswith("News. item ") for p in q.prompt) and q.extra["tag"] == 1


def test_macro_f1_counts_absent_classes_as_zero() -> None:
    assert macro_f1([0, 0, 1], [0, 0, 0], 3) == pytest.approx(f1_score([0, 0, 1], [0, 0, 0], average="macro",
                                                                        labels=[0, 1, 2], zero_division=0))


def test_sample_task_through_mock(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    m = evaluate(mock_client(lambda p, w: [-1.0, -2.0]), task, "eval", progress=False)
    assert m.accuracy == 0.5 and m.f1 == pytest.approx(1 / 3)  # always "negative" on a balanced set
