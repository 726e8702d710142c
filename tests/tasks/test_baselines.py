"""Baselines and the harness against a mock provider (deterministic, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bbox_lfm.errors import ConfigError
from bbox_lfm.methods import Method, get, names
from bbox_lfm.methods.harness import EVAL_SUBSAMPLE_SEED, run
from bbox_lfm.results import read_result, write_result
from bbox_lfm.tasks import load_task, macro_f1, subsample

POSITIVE = ("lovely", "excellent", "delightful", "great", "best", "clear", "perfectly", "warm", "kind",
            "fresh", "sharp", "smooth", "moving", "beautifully", "cosy", "inventive", "comfortable")


def sentiment_rule(prompt: str, words: list[str]) -> list[float]:
    """Scores the last line: positive words in it favour the second label word. Only the
    template "Review: ..." (label words " negative"/" positive") works; others get a constant."""
    query = prompt.rsplit("\n\n", 1)[-1]
    if "Review:" not in query:
        return [-1.0, -2.0]
    pos = any(w in query.lower() for w in POSITIVE)
    return [-2.0, -1.0] if pos else [-1.0, -2.0]


def test_registry_has_the_baselines() -> None:
    assert {"zero-shot", "icl", "best-of-n"} <= set(names())


def test_best_of_n_picks_the_template_that_works(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    method = get("best-of-n")(seed=13)
    result = run(method, mock_client(sentiment_rule), task, seed=13, progress=False)
    assert result.prompt["template"] == "Review: {text}\nSentiment:"
    assert method.dev_scores_[0] == 0.5 and method.dev_scores_[1] > 0.5
    assert result.curve == [{"calls": 1, "dev_accuracy": 0.5}, {"calls": 2, "dev_accuracy": method.dev_scores_[1]},
                            {"calls": 3, "dev_accuracy": method.dev_scores_[1]}]
    assert result.budget_spent["calls"] == 3  # one request per candidate (16 dev rows each)
    # the harness re-scores dev from the cache and sends only the eval rows
    assert result.eval_spent["requests"] == 1 and result.eval_spent["cache_hits"] == 1 == result.eval_spent["calls"] - 1
    assert result.dev["accuracy"] == method.dev_scores_[1]
    assert result.eval["n"] == 20 and result.eval["accuracy"] > 0.5


def test_zero_shot_sends_nothing_to_search(mock_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    result = run(get("zero-shot")(), mock_client(sentiment_rule), task, seed=13, eval_limit=8, progress=False)
    assert result.budget_spent["calls"] == 0 and result.eval_spent["calls"] == 2
    rows = subsample(task.split("eval"), 8, EVAL_SUBSAMPLE_SEED)  # the template never works: always label 0
    neg = sum(e.label == 0 for e in rows) / 8
    assert result.eval == {"accuracy": neg, "f1": pytest.approx(macro_f1([e.label for e in rows], [0] * 8, 2)),
                           "n": 8, "misses": 0}
    assert result.extra["eval_limit"] == 8
    path = write_result(tmp_path / "r.json", result)
    assert read_result(path)["prompt"] == {"template": "{text} It was", "label_words": [" terrible", " great"]}


def test_icl_prefix_has_k_per_class_in_seeded_order(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    a = get("icl")(k=2, seed=5, template="Review: {text}\nSentiment:", label_words=[" negative", " positive"])
    b = get("icl")(k=2, seed=5, template="Review: {text}\nSentiment:", label_words=[" negative", " positive"])
    a.fit(None, task)
    b.fit(None, task)
    assert a.prefix_ == b.prefix_
    assert a.prefix_.count(" positive\n\n") == 2 and a.prefix_.count(" negative\n\n") == 2
    assert all(d in task.few_shot(seed=5).train for d in a.demos_)
    client = mock_client(sentiment_rule)
    result = run(a, client, task, seed=5, progress=False)
    assert client.adapter.queries[0].prompt[0].startswith(a.prefix_)
    assert result.eval["accuracy"] > 0.5


def test_harness_rejects_a_seed_mismatch(mock_client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="seed must be the method's own seed"):
        run(get("icl")(seed=13), mock_client(sentiment_rule), load_task("sample"), seed=21, progress=False)


@pytest.mark.parametrize("name", ["zero-shot", "icl", "best-of-n"])
def test_save_load_round_trip(name: str, mock_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    client = mock_client(sentiment_rule)
    kw = {"k": 2} if name == "icl" else {}
    m = get(name)(**kw).fit(client, task)
    m.save(tmp_path / "m.json")
    m2 = Method.load(tmp_path / "m.json")
    examples = task.split("eval")
    assert type(m2) is type(m) and m2.get_config() == m.get_config()
    assert list(m2.predict(client, examples)) == list(m.predict(client, examples))


class _Searcher(Method):
    """A stand-in for a searching method: it spends a search budget and a dev budget of its own."""

    name = "test-searcher"

    def __init__(self, *, seed: int = 13) -> None:
        self.seed = seed

    def fit(self, client, task):  # type: ignore[no-untyped-def]
        from bbox_lfm.budget import Budget
        from bbox_lfm.tasks import evaluate

        search, dev = client.with_budget(Budget()), client.with_budget(Budget())
        evaluate(search, task, task.few_shot(seed=self.seed).train, progress=False)
        evaluate(dev, task, task.few_shot(seed=self.seed).dev, prompt="x", progress=False)
        self.budget_spent_, self.eval_spent_ = search.budget.summary(), dev.budget.summary()
        self.curve_ = [{"calls": 1, "dev_accuracy": 0.5}]
        self.best_prompt_ = "x"
        return self

    def predict(self, client, examples):  # type: ignore[no-untyped-def]
        return np.zeros(len(examples), dtype=int)

    def get_config(self):  # type: ignore[no-untyped-def]
        return {"seed": self.seed}


def test_harness_keeps_search_and_eval_budgets_apart(mock_client) -> None:  # type: ignore[no-untyped-def]
    client = mock_client(sentiment_rule)
    r = run(_Searcher(), client, load_task("sample"), seed=13, progress=False)
    assert r.budget_spent["calls"] == 1 and r.budget_spent["sequences"] == 16
    # the method's own dev check (1 call, 16 rows), then the harness scores the start prompt on
    # dev (16) and eval (20); the method's predict is local
    assert r.eval_spent["calls"] == 3 and r.eval_spent["sequences"] == 16 + 16 + 20
    assert r.curve == [{"calls": 1, "dev_accuracy": 0.5}]
    assert r.dev["n"] == 16 and r.eval["n"] == 20 and r.eval["accuracy"] == 0.5
    # the search predicts what the start predicts (all label 0): nothing fixed, so the start stays
    assert r.extra["selection"]["chosen"] == "start" and r.prompt["template"] == "{text} It was"
    assert r.extra["search"]["eval"]["accuracy"] == 0.5 and r.extra["gain"]["eval_accuracy"] == 0.0


def test_task_without_few_shot_data_gets_no_dev(mock_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "t.jsonl").write_text('{"text": "fine", "label": 1}\n{"text": "awful", "label": 0}\n')
    (tmp_path / "s.toml").write_text('name = "t"\nlabels = ["neg", "pos"]\nlabel_words = [" bad", " good"]\n'
                                     'template = "{text} It was"\n[data]\ntest = "t.jsonl"\n')
    r = run(get("zero-shot")(), mock_client(sentiment_rule), load_task(tmp_path / "s.toml"), seed=13,
            progress=False)
    assert r.dev == {"accuracy": None, "f1": None, "n": 0, "misses": 0} and r.eval["n"] == 2
