"""``bbox-lfm tune`` end to end against the session's local server, as a user types it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbox_lfm.cli import main
from bbox_lfm.results import read_result

from .test_spec import write_task

pytestmark = pytest.mark.slow


def tune(server, tmp_path: Path, *args: str, mode: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    out = tmp_path / f"r-{mode or 'first'}.json"
    argv = ["tune", *args, "--base-url", server.base_url, "--cache", str(tmp_path / "cache.sqlite"),
            "--no-progress", "--out", str(out)]
    if mode:
        argv += ["--cache-mode", mode]
    assert main(argv) == 0
    return read_result(out)


def test_bdpl_runs_a_task_spec_the_project_has_never_seen(local_server, tmp_path: Path) -> None:
    spec = write_task(tmp_path)  # three labels, its own template and files
    args = ("bdpl", "--task-spec", str(spec), "--seed", "13", "--budget", "40", "--set", "prompt_length=3",
            "--set", "n_candidates=20")
    r = tune(local_server, tmp_path, *args)
    assert r["task"] == "tickets" and r["eval"]["n"] == 3
    assert 0 < r["budget_spent"]["calls"] <= 40 and r["curve"]
    again = tune(local_server, tmp_path, *args, mode="replay")
    assert again["budget_spent"]["requests"] == 0 and again["eval_spent"]["requests"] == 0
    assert again["prompt"] == r["prompt"] and again["eval"] == r["eval"]


def test_bbt_within_budget_then_replayed_sends_nothing(local_server, tmp_path: Path) -> None:
    args = ("bbt", "--task", "sample", "--seed", "13", "--budget", "20", "--set", "n_prompt_tokens=5",
            "--set", "intrinsic_dim=20", "--set", "popsize=8", "--eval-limit", "8")
    r = tune(local_server, tmp_path, *args)
    # whole generations of 8 within the 20; dev and eval scoring counted apart
    assert r["budget_spent"]["calls"] == 16 and r["eval_spent"]["calls"] > 0 and r["curve"]
    again = tune(local_server, tmp_path, *args, mode="replay")
    assert again["budget_spent"]["requests"] == 0 and again["eval_spent"]["requests"] == 0
    assert again["prompt"] == r["prompt"]


def test_bbt_starts_from_the_template_it_is_given_and_reports_the_start(local_server, tmp_path: Path) -> None:
    # the check, at the sample task's size: the start is recorded, scored, and compared
    args = ("bbt", "--task", "sample", "--template-index", "1", "--seed", "13", "--budget", "8", "--set",
            "n_prompt_tokens=5", "--set", "intrinsic_dim=20", "--set", "popsize=4", "--eval-limit", "8")
    r = tune(local_server, tmp_path, *args)
    assert r["config"]["start"]["template"] == "Review: {text}\nSentiment:"
    assert r["config"]["start"]["template_index"] == 1
    start = r["extra"]["start"]
    assert start["eval"]["n"] == 8 and start["dev"]["n"] == 16 and start["prompt"]["template"] == r["config"][
        "start"]["template"]
    assert r["extra"]["gain"]["eval_accuracy"] == pytest.approx(r["eval"]["accuracy"] - start["eval"]["accuracy"])
    assert r["extra"]["selection"]["chosen"] in ("start", "search")
    again = tune(local_server, tmp_path, *args, mode="replay")
    assert again["eval_spent"]["requests"] == 0 and again["extra"]["start"] == start
