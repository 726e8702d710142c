"""The leaderboard: registry-driven method list, its table and its figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bbox_lfm.cli import main
from bbox_lfm.commands.report import leaderboard_table, plot_leaderboard, run_setting, seed_band, summary_table
from bbox_lfm.methods import Method, names
from bbox_lfm.methods.base import registry
from bbox_lfm.results import write_result

ROOT = Path(__file__).resolve().parents[2]


def test_every_registered_prompt_method_joins_without_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                                benchmark_script: Any) -> None:
    board = benchmark_script("leaderboard")
    found = board.prompt_methods()
    assert {"bbt", "bbtv2", "bdpl"} <= set(found)
    assert not {"zero-shot", "icl", "best-of-n", "calibrated", "distill", "bidf-mkd"} & set(found)

    class Later(Method):
        name: ClassVar[str] = "test-later"

        def __init__(self, *, budget: int = 1, seed: int = 13) -> None:
            self.budget, self.seed = budget, seed

    names()
    monkeypatch.setitem(registry, "test-later", Later)
    assert "test-later" in board.prompt_methods()
    built = dict(board.entries(21, 30, board.prompt_methods(), ["zero-shot"], {"bbt": {"n_prompt_tokens": 10}}))
    assert built["test-later"].budget == 30 and built["test-later"].seed == 21
    assert built["bbt (n_prompt_tokens=10)"].n_prompt_tokens == 10 and "zero-shot" in built


def _run(task: str, label: str, seed: int, acc: float, start: float | None, chosen: str = "search", *,
         budget: int = 40, n: int = 872, found: float | None = None, ce: str | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {"label": label}
    curve: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    if start is not None:
        extra.update({"start": {"dev": {"accuracy": 0.5}, "eval": {"accuracy": start}},
                      "gain": {"eval_accuracy": acc - start}, "selection": {"chosen": chosen},
                      "search": {"eval": {"accuracy": acc if found is None else found}}})
        if ce is not None:
            extra["selection_ce"] = {"chosen": ce}
        curve = [{"calls": budget // 2, "dev_accuracy": 0.6}, {"calls": budget, "dev_accuracy": 0.7}]
        config = {"budget": budget}
    spent = {"calls": 0, "requests": 0, "sequences": 0, "cache_hits": 0}
    return {"method": label, "config": config, "task": task, "seed": seed, "provider": "p", "model": "m",
            "budget_spent": {**spent, "calls": budget if curve else 0}, "eval_spent": spent, "wall_s": 10.0 * seed,
            "dev": {"accuracy": 0.6, "f1": 0.6}, "eval": {"accuracy": acc, "f1": acc, "n": n}, "curve": curve,
            "prompt": None,
            "version": "0", "commit": "", "extra": extra, "schema": 1}


def test_leaderboard_table_and_figure(tmp_path: Path) -> None:
    runs = [_run("sst2", "bbt", 13, 0.80, 0.78), _run("sst2", "bbt", 21, 0.78, 0.78, "start", found=0.82),
            _run("sst2", "zero-shot", 13, 0.78, None), _run("mr", "bbt", 13, 0.70, 0.76)]
    table = leaderboard_table(runs)
    assert "| sst2 | bbt | 40 | 13,21 | 872 | 78.0 | 79.0 ± 1.4 | +1.0 | 81.0 ± 1.4 | 1/2 | - | 40 | 170 |" in table
    assert "| sst2 | zero-shot | - | 13 | 872 | - | 78.0 | - | - | - | - | 0 | 130 |" in table
    assert "| mr | bbt | 40 | 13 | 872 | 76.0 | 70.0 | -6.0 | 70.0 | 0/1 | - | 40 | 130 |" in table
    png = plot_leaderboard(runs, tmp_path / "b.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = write_result(tmp_path / "leaderboard.json", {"schema": 1, "kind": "bundle", "benchmark": "leaderboard",
                                                            "runs": runs})
    md = tmp_path / "t.md"
    assert main(["report", str(path), "--out-md", str(md), "--out-png", str(tmp_path / "c.png")]) == 0
    assert md.read_text().startswith("## Leaderboard\n\n| task | method | budget | seeds |")


def test_a_wall_time_with_answers_from_the_cache_is_marked_a_lower_bound() -> None:
    resumed = _run("sst2", "bbt", 21, 0.78, 0.78)
    resumed["budget_spent"] = {**resumed["budget_spent"], "cache_hits": 12}
    start_cached = _run("sst2", "bbt", 13, 0.80, 0.78)  # its start's eval came from the cache: the search did not
    start_cached["eval_spent"] = {**start_cached["eval_spent"], "cache_hits": 30}
    calibrated = _run("sst2", "calibrated", 13, 0.80, None)  # a baseline replays its eval rows
    calibrated["eval_spent"] = {**calibrated["eval_spent"], "cache_hits": 30}
    assert leaderboard_table([start_cached]).endswith("| 40 | 130 |")
    assert leaderboard_table([start_cached, resumed]).endswith("| 40 | ≥170 |")
    assert leaderboard_table([calibrated]).endswith("| 0 | ≥130 |")
    assert leaderboard_table([_run("sst2", "zero-shot", 13, 0.78, None)]).endswith("| 0 | 130 |")


def test_seed_band_holds_each_curve_between_its_points() -> None:
    """Seed a logs at 0, 10, 30; seed b at 0, 20: at 10 b still holds 50, at 20 a still holds 70,
    at 30 b holds 60; before a curve's first point it counts its first value."""
    a, b = [(0, 60.0), (10, 70.0), (30, 80.0)], [(0, 50.0), (20, 60.0)]
    assert seed_band([a, b]) == [(0, 55.0, 50.0, 60.0), (10, 60.0, 50.0, 70.0), (20, 65.0, 60.0, 70.0),
                                 (30, 70.0, 60.0, 80.0)]
    assert seed_band([[(5, 40.0)], [(0, 50.0), (10, 70.0)]]) == [(0, 45.0, 40.0, 50.0), (5, 45.0, 40.0, 50.0),
                                                                  (10, 55.0, 40.0, 70.0)]
    assert seed_band([]) == [] and seed_band([[]]) == []


def test_the_table_shows_what_the_ce_guard_would_report() -> None:
    """The row-count guard kept the start on seed 21; the ce rule would have taken the search
    (0.82) there, and kept the start (0.74) on seed 42 where the row-count rule took the search."""
    runs = [_run("sst2", "bbt", 13, 0.80, 0.78, ce="search"), _run("sst2", "bbt", 21, 0.78, 0.78, "start",
                                                                  found=0.82, ce="search"),
            _run("sst2", "bbt", 42, 0.70, 0.74, ce="start"), _run("sst2", "bdpl", 13, 0.78, 0.78, "start", found=0.7)]
    table = leaderboard_table(runs)
    # ce: 0.80 (search), 0.82 (search, where rows kept the start), 0.74 (start) -> 78.7 ± 4.2
    assert "| sst2 | bbt | 40 | 13,21,42 | 872 | 76.7 | 76.0 ± 5.3 | -0.7 | 77.3 ± 6.4 | 1/3 | 78.7 ± 4.2 | 40 |" in table
    assert "| sst2 | bdpl | 40 | 13 | 872 | 78.0 | 78.0 | +0.0 | 70.0 | 1/1 | - | 40 |" in table
    runs[2]["extra"].pop("selection_ce")
    assert "| 1/3 | 81.0 ± 1.4 (2 of 3) | 40 |" in leaderboard_table(runs)


def test_two_budgets_or_eval_sizes_are_never_averaged() -> None:
    """Exploratory runs (40 calls, 200 rows) beside the real ones (600 calls, full split): one row each."""
    runs = [_run("sst2", "bbt", 13, 0.795, 0.795, "start", budget=40, n=200),
            _run("sst2", "bbt", 13, 0.80, 0.78, budget=600), _run("sst2", "bbt", 21, 0.84, 0.78, budget=600),
            _run("sst2", "bbt", 42, 0.60, 0.60, budget=600, n=200),
            _run("sst2", "zero-shot", 13, 0.795, None, n=200), _run("sst2", "zero-shot", 13, 0.786, None)]
    table = leaderboard_table(runs)
    rows = table.splitlines()[2:]
    assert len(rows) == 5
    assert "| sst2 | bbt | 40 | 13 | 200 | 79.5 | 79.5 | +0.0 | 79.5 | 1/1 | - | 40 | 130 |" in rows
    assert "| sst2 | bbt | 600 | 13,21 | 872 | 78.0 | 82.0 ± 2.8 | +4.0 | 82.0 ± 2.8 | 0/2 | - | 600 | 170 |" in rows
    assert "| sst2 | bbt | 600 | 42 | 200 | 60.0 | 60.0 | +0.0 | 60.0 | 0/1 | - | 600 | 420 |" in rows
    assert "| sst2 | zero-shot | - | 13 | 200 | - | 79.5 | - | - | - | - | 0 | 130 |" in rows
    assert "| sst2 | zero-shot | - | 13 | 872 | - | 78.6 | - | - | - | - | 0 | 130 |" in rows
    summary = summary_table(runs)
    assert "| sst2 | bbt | 2 | 872 | 82.0 ± 2.8 |" in summary and "| sst2 | bbt | 1 | 200 | 79.5 |" in summary
    assert run_setting(runs[0]) == (40, 200) and run_setting(runs[-1]) == (None, 872)


def test_a_rewrite_sets_runs_of_an_older_setting_apart(benchmark_script: Any) -> None:
    board = benchmark_script("leaderboard")
    old40 = _run("sst2", "bbt", 13, 0.795, 0.795, budget=40, n=200)
    old_zero = _run("sst2", "zero-shot", 13, 0.795, None, n=200)
    new600 = _run("sst2", "bbt", 21, 0.80, 0.78, budget=600)
    elsewhere = _run("agnews", "bbt", 13, 0.70, 0.68, budget=40, n=500)  # a task this invocation does not run
    wanted = {("sst2", "bbt"): (600, 872), ("sst2", "zero-shot"): (None, 872)}
    runs, earlier = board.sort_stored([old40, old_zero, new600, elsewhere], wanted)
    assert list(runs.values()) == [new600, elsewhere] and earlier == [old40, old_zero]
    # stored earlier and back at that setting: found again, so not rerun
    runs, earlier = board.sort_stored([old40, new600], {("sst2", "bbt"): (40, 200)})
    assert list(runs.values()) == [old40] and earlier == [new600]
    # a later run of the same seed and setting replaces the stored one; of another setting displaces it
    again = {**old40, "wall_s": 1.0}
    runs, earlier = board.sort_stored([old40, again], {})
    assert list(runs.values()) == [again] and earlier == []
    other = {**_run("sst2", "bbt", 13, 0.81, 0.78, budget=600)}
    runs, earlier = board.sort_stored([old40, other], {})
    assert list(runs.values()) == [other] and earlier == [old40]


def test_guard_replay_fills_the_ce_choice_into_runs_that_lack_it(tmp_path: Path, benchmark_script: Any) -> None:
    replay = benchmark_script("guard_replay")
    runs = [_run("sst2", "bbt", 13, 0.786, 0.786, "start", budget=600, found=0.821),
            _run("sst2", "bdpl", 13, 0.786, 0.786, "start", budget=600, found=0.769, ce="start"),
            _run("sst2", "bbtv2", 13, 0.786, 0.786, "start", budget=40, found=0.83)]
    path = write_result(tmp_path / "lb.json", {"kind": "bundle", "runs": runs})
    ce = {"chosen": "search", "mean_gain_nats": 0.035}
    rep = {f"sst2:13:{m}": {"ce_rule": ce, "eval_n": 872, "start": {"eval": 0.786}, "search": {"eval": found}}
           for m, found in (("bbt", 0.821), ("bdpl", 0.769), ("bbtv2", 0.83))}
    # bdpl has its own; bbtv2's run is of another budget
    assert replay.fill_ce(path, rep, 600) == ["sst2:13:bbt"]
    board = json.loads(path.read_text())
    assert board["runs"][0]["extra"]["selection_ce"] == ce and "guard_replay" in board["runs"][0]["extra"][
        "selection_ce_source"]
    assert board["runs"][1]["extra"]["selection_ce"] == {"chosen": "start"}
    assert "selection_ce" not in board["runs"][2]["extra"]
    assert "| sst2 | bbt | 600 | 13 | 872 | 78.6 | 78.6 | +0.0 | 82.1 | 1/1 | 82.1 |" in board["table_md"]
    # a replay that did not reproduce the run's figures is refused, and nothing is written
    board["runs"][0]["extra"].pop("selection_ce")
    write_result(path, board)
    bad = {"sst2:13:bbt": {**rep["sst2:13:bbt"], "search": {"eval": 0.8}}}
    with pytest.raises(SystemExit, match="differ"):
        replay.fill_ce(path, bad, 600)
    assert "selection_ce" not in json.loads(path.read_text())["runs"][0]["extra"]


def _guarded(task: str, seed: int, label: str, start: float, found: float, fixed: int, broken: int,
             ce: str | None, decided_by: str = "rows") -> dict[str, Any]:
    r = _run(task, label, seed, found, start, "start", budget=600, found=found, ce=ce)
    needed = max(2, int(np.ceil(np.sqrt(fixed + broken))))
    rows = "search" if fixed - broken >= needed else "start"
    chosen = rows if decided_by == "rows" else ce
    r["extra"]["selection"] = {"chosen": chosen, "fixed": fixed, "broken": broken, "needed": needed,
                               "rule": "guard 'ce': ..." if decided_by == "ce" else "search replaces start iff ..."}
    return r


def test_guard_compare_counts_the_out_of_sample_disagreements(benchmark_script: Any) -> None:
    gc = benchmark_script("guard_compare")
    runs = [_guarded("sst2", 13, "bbt", 0.786, 0.821, 1, 1, "search"),  # in-sample: left out
            _guarded("mr", 13, "bbt", 0.7655, 0.763, 0, 3, "start"),  # agree (start)
            _guarded("mr", 21, "bbtv2", 0.76, 0.79, 1, 0, "search"),  # differ, ce right (+3.0)
            _guarded("sst2", 21, "bdpl", 0.78, 0.77, 3, 0, "start", decided_by="ce"),  # differ, ce right (+1.0)
            _guarded("sst2", 42, "bbt", 0.78, 0.77, 1, 0, "search"),  # differ, ce wrong (-1.0)
            _guarded("sst2", 42, "bdpl", 0.78, 0.70, 0, 0, None),  # no ce recorded: skipped
            _guarded("mr", 42, "promptboosting", 0.78, 0.70, 0, 2, None)]  # not one of the three methods
    doc = gc.compare(runs)
    assert [r["run"] for r in doc["runs"]] == ["mr:13:bbt", "mr:21:bbtv2", "sst2:21:bdpl", "sst2:42:bbt"]
    assert doc["skipped"] == ["sst2:42:bdpl"]
    assert doc["runs"][2]["rows_chosen"] == "search" and doc["runs"][2]["ce_chosen"] == "start"
    assert (doc["disagreements"], doc["ce_wins"]) == (3, 2)
    assert doc["mean_eval_rows_rule"] == pytest.approx((0.7655 + 0.76 + 0.77 + 0.78) / 4)
    assert doc["mean_eval_ce_rule"] == pytest.approx((0.7655 + 0.79 + 0.78 + 0.77) / 4)
    assert doc["criterion_holds"] is True and doc["decided"] is None and "mr:42:bdpl" in doc["planned_missing"]
    every = [_guarded(t, s, m, 0.78, 0.79, 1, 0, "search") for t, s, m in gc.PLANNED]
    assert gc.compare(every)["decided"] is True and gc.compare(every)["planned_missing"] == []
    # one win in three disagreements: the rule does not become the default
    doc = gc.compare(runs[:3] + [_guarded("sst2", 21, "bdpl", 0.78, 0.80, 3, 0, "start")] + runs[4:])
    assert (doc["disagreements"], doc["ce_wins"], doc["criterion_holds"]) == (3, 1, False)
    # no disagreement at all: nothing shows the ce rule is better
    assert gc.compare(runs[:2])["criterion_holds"] is False


def test_no_run_folds_a_second_process_file_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               benchmark_script: Any) -> None:
    board = benchmark_script("leaderboard")
    mine, theirs = tmp_path / "lb.json", tmp_path / "lb-s42.json"
    write_result(mine, {"kind": "bundle", "runs": [_run("sst2", "zero-shot", 13, 0.786, None)]})
    write_result(theirs, {"kind": "bundle", "runs": [_run("sst2", "zero-shot", 42, 0.786, None),
                                                     _run("sst2", "bbt", 42, 0.80, 0.786, budget=600)]})
    monkeypatch.setattr("sys.argv", ["leaderboard.py", "--tasks", "sst2", "--seeds", "13", "21", "42", "--methods",
                                     "bbt", "--baselines", "zero-shot", "--out", str(mine), "--merge", str(theirs),
                                     "--no-run"])
    assert board.main() == 0  # no server is started: nothing is measured
    doc = json.loads(mine.read_text())
    assert sorted((r["seed"], r["extra"]["label"]) for r in doc["runs"]) == [(13, "zero-shot"), (42, "bbt"),
                                                                              (42, "zero-shot")]
    assert sorted((m["seed"], m["label"]) for m in doc["missing"]) == [(13, "bbt"), (21, "bbt"), (21, "zero-shot")]
    assert "| sst2 | bbt | 600 | 42 | 872 |" in doc["table_md"]
    # a file of another task folds in too: its runs join, its start and its still-missing runs are kept
    rte = tmp_path / "lb-rte.json"
    write_result(rte, {"kind": "bundle", "runs": [_run("rte", "zero-shot", 13, 0.56, None)],
                       "starts": {"rte": {"template": "T"}, "sst2": {"template": "stale"}},
                       "missing": [{"task": "rte", "seed": 13, "label": "bbt"}, {"task": "rte", "seed": 13,
                                                                                 "label": "zero-shot"},
                                   {"task": "sst2", "seed": 99, "label": "bbt"}]})
    monkeypatch.setattr("sys.argv", ["leaderboard.py", "--tasks", "sst2", "--seeds", "13", "21", "42", "--methods",
                                     "bbt", "--baselines", "zero-shot", "--out", str(mine), "--merge", str(rte),
                                     "--no-run"])
    assert board.main() == 0
    doc = json.loads(mine.read_text())
    assert ("rte", 13, "zero-shot") in {(r["task"], r["seed"], r["extra"]["label"]) for r in doc["runs"]}
    assert doc["starts"]["rte"] == {"template": "T"} and doc["starts"]["sst2"]["template"] != "stale"
    # rte's bbt is still missing; its zero-shot (now held) and the other file's view of sst2 are not
    assert sorted((m["task"], m["seed"], m["label"]) for m in doc["missing"]) == [
        ("rte", 13, "bbt"), ("sst2", 13, "bbt"), ("sst2", 21, "bbt"), ("sst2", 21, "zero-shot")]
    # a later fold without that file keeps what this file now says of rte
    monkeypatch.setattr("sys.argv", ["leaderboard.py", "--tasks", "sst2", "--seeds", "13", "21", "42", "--methods",
                                     "bbt", "--baselines", "zero-shot", "--out", str(mine), "--no-run"])
    assert board.main() == 0
    again = json.loads(mine.read_text())
    assert again["starts"] == doc["starts"] and again["missing"] == doc["missing"] and "| rte | zero-shot |" in again[
        "table_md"]


def test_long_soft_prompts_are_stored_apart_and_rebuild_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                benchmark_script: Any) -> None:
    """A BBTv2-sized deep prompt leaves the results file (shape, dtype and SHA-256 stay) for a
    one-run file that holds the run whole; a short prompt stays; a second rewrite changes nothing."""
    import base64
    import hashlib

    from bbox_lfm.results import read_result
    from bbox_lfm.tensors import decode, encode

    board = benchmark_script("leaderboard")
    deep = np.random.default_rng(0).normal(size=(3, 50, 64)).astype(np.float32)
    big, small = _run("sst2", "bbtv2", 42, 0.80, 0.786, budget=600), _run("sst2", "bbt", 42, 0.79, 0.786, budget=600)
    big["prompt"], small["prompt"] = encode(deep), encode(deep[0, :2, :4])
    mine, apart = tmp_path / "lb.json", tmp_path / "prompts"
    write_result(mine, {"kind": "bundle", "runs": [big, small]})
    argv = ["leaderboard.py", "--tasks", "sst2", "--seeds", "42", "--methods", "bbt", "bbtv2", "--baselines",
            "--out", str(mine), "--prompts-dir", str(apart), "--no-run"]
    monkeypatch.setattr("sys.argv", argv)
    assert board.main() == 0
    text = mine.read_text()
    assert len(text) < 60_000 and big["prompt"]["data"] not in text
    runs = {r["method"]: r for r in json.loads(text)["runs"]}
    assert runs["bbt"]["prompt"] == small["prompt"]  # short: kept inline
    held = runs["bbtv2"]["prompt"]
    assert held["tensors"] == {"shape": [3, 50, 64], "dtype": "float32",
                               "sha256": hashlib.sha256(deep.tobytes()).hexdigest()}
    whole = read_result(held["stored_apart"])  # a one-run results file, as --prompt-from takes
    assert np.array_equal(decode(whole["prompt"]), deep) and whole["eval"] == big["eval"]
    assert hashlib.sha256(base64.b64decode(whole["prompt"]["data"])).hexdigest() == held["tensors"]["sha256"]
    assert board.main() == 0 and mine.read_text() == text  # a rewrite of a file already slimmed changes nothing


def test_local_model_is_served_under_the_default_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      benchmark_script: Any) -> None:
    """``--local-model`` (the GGUF a GPU machine carries) starts the server on that file, under
    the default model's name, so its answers share the cache and the results' model name."""
    import bbox_lfm.serve
    from bbox_lfm.models import DEFAULT_MODEL_ID

    board = benchmark_script("leaderboard")
    asked: list[tuple[Any, Any]] = []

    def fake_start(model: Any = None, **kw: Any) -> Any:
        asked.append((model, kw.get("served_model_name")))
        raise RuntimeError("stop before any query")

    monkeypatch.setattr(bbox_lfm.serve, "start_local", fake_start)
    argv = ["leaderboard.py", "--tasks", "sst2", "--seeds", "13", "--methods", "bbt", "--baselines",
            "--out", str(tmp_path / "lb.json"), "--cache", str(tmp_path / "c.sqlite")]
    for extra, want in (([], (None, None)), (["--local-model", "/m/x.gguf"], ("/m/x.gguf", DEFAULT_MODEL_ID))):
        monkeypatch.setattr("sys.argv", argv + extra)
        with pytest.raises(RuntimeError, match="stop before any query"):
            board.main()
        assert asked[-1] == want
