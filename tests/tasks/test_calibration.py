"""Contextual calibration against hand-computed values, through a mock provider."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bbox_lfm.cli import main
from bbox_lfm.methods import get
from bbox_lfm.methods.harness import run
from bbox_lfm.results import read_result
from bbox_lfm.tasks import CONTENT_FREE, apply_calibration, content_free_prompts, load_task, score_prompts
from bbox_lfm.tasks.calibration import content_free_examples, content_free_probs

from .test_baselines import POSITIVE


def test_apply_calibration_by_hand() -> None:
    # label probabilities 0.3 / 0.7, scored as unnormalised log-probabilities (x 0.5 each)
    logprobs = np.log([[0.15, 0.35], [0.05, 0.45]])
    # content-free rows renormalise to (0.1, 0.9) and (0.3, 0.7): p_cf = (0.2, 0.8)
    cf = np.log([[0.01, 0.09], [0.3, 0.7]])
    assert content_free_probs(cf) == pytest.approx([0.2, 0.8])
    out = apply_calibration(logprobs, cf)
    # W p = (0.3 / 0.2, 0.7 / 0.8) = (1.5, 0.875): the first row flips to label 0;
    # (0.1 / 0.2, 0.9 / 0.8) = (0.5, 1.125): the second stays label 1
    assert np.exp(out) == pytest.approx(np.array([[1.5, 0.875], [0.5, 1.125]]))
    assert out.argmax(axis=1).tolist() == [0, 1]
    assert apply_calibration(np.zeros((0, 2)), cf).shape == (0, 2)


def test_content_free_prompts_fill_every_slot() -> None:
    assert CONTENT_FREE == ("N/A", "", "[MASK]")
    task = load_task("sample").with_template("Review: {text}\nSentiment:")
    assert content_free_prompts(task) == ["Review: N/A\nSentiment:", "Review: \nSentiment:", "Review: [MASK]\nSentiment:"]
    assert content_free_prompts(task, prompt="p", prefix="D\n") == ["D\np Review: N/A\nSentiment:",
                                                                      "D\np Review: \nSentiment:",
                                                                      "D\np Review: [MASK]\nSentiment:"]
    assert [(e.text, e.text_pair) for e in content_free_examples(pair=True)] == [(s, s) for s in CONTENT_FREE]


def biased(prompt: str, words: list[str]) -> list[float]:
    """A model that prefers the second label word by 1 nat on a content-free input, by 1.5 nats
    on a text with a positive word and by 0.5 nats on any other: uncalibrated, it says label 1
    to everything."""
    text = prompt.rsplit("\n\n", 1)[-1].lower()
    if any(cf in text for cf in ("n/a", "[mask]", "review: \n")):
        return [-2.0, -1.0]
    return [-2.5, -1.0] if any(w in text for w in POSITIVE) else [-1.5, -1.0]


def test_score_prompts_calibrates_and_caches_the_content_free_query(mock_client) -> None:  # type: ignore[no-untyped-def]
    client = mock_client(biased)
    task = load_task("sample").with_template("Review: {text}\nSentiment:", [" negative", " positive"])
    prompts = ["Review: awful\nSentiment:", "Review: lovely\nSentiment:"]
    cf = content_free_prompts(task)
    plain, _ = score_prompts(client, prompts, task.label_words, progress=False)
    assert plain.argmax(axis=1).tolist() == [1, 1]
    sent = client.budget.summary()["requests"]
    cal, misses = score_prompts(client, prompts, task.label_words, progress=False, content_free=cf)
    # the content-free prompts score (-2, -1): p_cf = (1 / (1 + e), e / (1 + e)); "awful" scores
    # (-1.5, -1): W p favours label 0 by log(e^-1.5 / e^-1) + log(e) = 0.5 nats; "lovely" scores
    # (-2.5, -1): -1.5 + 1 = -0.5 nats
    assert cal[0, 0] - cal[0, 1] == pytest.approx(0.5)
    assert cal[1, 0] - cal[1, 1] == pytest.approx(-0.5)
    p_cf = np.array([1.0, math.e]) / (1 + math.e)
    p = np.array([math.exp(-1.5), math.exp(-1.0)]) / (math.exp(-1.5) + math.exp(-1.0))
    assert np.exp(cal[0]) == pytest.approx(p / p_cf)
    assert misses == 0
    # the prompts came from the cache; the content-free query is one request of its own
    assert client.budget.summary()["requests"] == sent + 1
    score_prompts(client, prompts, task.label_words, progress=False, content_free=cf)
    assert client.budget.summary()["requests"] == sent + 1  # calibrating again sends nothing


def test_calibrated_baseline_fixes_a_one_label_model(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    client = mock_client(biased)
    tpl, words = task.templates[1]
    plain = run(get("zero-shot")(template=tpl, label_words=words), client, task, seed=13, progress=False)
    cal = run(get("calibrated")(template=tpl, label_words=words), client, task, seed=13, progress=False)
    assert plain.eval["accuracy"] == 0.5  # label 1 for every row
    assert cal.eval["accuracy"] > 0.9
    assert cal.prompt["calibrated"] is True and cal.config["calibrate"] is True
    icl = run(get("icl")(k=2, seed=13, template=tpl, label_words=words, calibrate=True), client, task, seed=13,
              progress=False)
    assert icl.eval["accuracy"] > 0.9


def test_eval_method_calibrated_on_the_command_line(tmp_path, monkeypatch, mock_client) -> None:  # type: ignore[no-untyped-def]
    import contextlib

    from bbox_lfm.commands import eval as eval_cmd

    @contextlib.contextmanager
    def fake_open(args, budget=None):  # type: ignore[no-untyped-def]
        yield mock_client(biased)

    monkeypatch.setattr(eval_cmd, "open_client", fake_open)
    out = tmp_path / "r.json"
    assert main(["eval", "--task", "sample", "--method", "calibrated", "--template-index", "1", "--no-progress",
                 "--out", str(out)]) == 0
    r = read_result(out)
    assert r["method"] == "calibrated" and r["eval"]["accuracy"] > 0.9
    assert r["config"]["start"]["template_index"] == 1
    assert main(["eval", "--task", "sample", "--calibrate", "--template-index", "1", "--no-progress",
                 "--out", str(out)]) == 0
    assert read_result(out)["method"] == "zero-shot" and read_result(out)["eval"]["accuracy"] > 0.9
