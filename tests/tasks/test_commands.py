"""``bbox-lfm eval`` and ``bbox-lfm report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm.cli import main
from bbox_lfm.results import read_result

from .test_baselines import sentiment_rule
from .test_spec import write_task


@pytest.fixture()
def mock_provider(monkeypatch: pytest.MonkeyPatch, mock_client) -> list[Any]:  # type: ignore[no-untyped-def]
    """Route the command's client to a mock provider (open_client is the one seam)."""
    import contextlib

    from bbox_lfm.commands import eval as eval_cmd

    made: list[Any] = []

    @contextlib.contextmanager
    def fake_open(args, budget=None):  # type: ignore[no-untyped-def]
        client = mock_client(lambda p, w: sentiment_rule(p, w) if len(w) == 2 else [-float(i) for i in range(len(w))])
        made.append(client)
        yield client

    monkeypatch.setattr(eval_cmd, "open_client", fake_open)
    return made


def test_eval_writes_results(tmp_path: Path, mock_provider: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main(["eval", "--task", "sample", "--template", "Review: {text}\nSentiment:", "--label-words", "negative",
               "positive", "--limit", "10", "--no-progress", "--out", str(out)])
    assert rc == 0
    r = read_result(out)
    assert r["eval"]["n"] == 10 and r["eval"]["accuracy"] > 0.5
    assert r["prompt"]["label_words"] == [" negative", " positive"]  # leading spaces added
    assert r["budget_spent"]["calls"] == 0 and r["eval_spent"]["calls"] >= 1
    assert json.loads(capsys.readouterr().out)["eval"]["n"] == 10


def test_eval_task_spec(tmp_path: Path, mock_provider: list[Any]) -> None:
    spec = write_task(tmp_path)
    out = tmp_path / "r.json"
    assert main(["eval", "--task-spec", str(spec), "--no-progress", "--out", str(out)]) == 0
    r = read_result(out)
    assert r["task"] == "tickets" and r["eval"]["n"] == 3
    assert r["dev"]["n"] == 6  # 2 per class sampled from the 15 train rows


def test_eval_needs_exactly_one_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--no-progress"]) == 2
    assert "--task / --task-spec must be exactly one of them" in capsys.readouterr().err


def test_report_table_and_plot(tmp_path: Path, mock_provider: list[Any]) -> None:
    paths = []
    for method in ("zero-shot", "best-of-n"):
        p = tmp_path / f"{method}.json"
        main(["eval", "--task", "sample", "--method", method, "--no-progress", "--out", str(p)])
        paths.append(str(p))
    md, png = tmp_path / "t.md", tmp_path / "c.png"
    assert main(["report", *paths, "--out-md", str(md), "--out-png", str(png)]) == 0
    text = md.read_text()
    assert "| sample | best-of-n | 13 |" in text and "| sample | zero-shot | 1 | 20 |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multi_token_label_word_is_rejected(tmp_path: Path, mock_provider: list[Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["eval", "--task", "sample", "--label-words", "not good", "good", "--no-progress",
               "--out", str(tmp_path / "r.json")])
    assert rc == 2
    assert "label_words must be single tokens for 'm'; got {' not good': 2}" in capsys.readouterr().err
