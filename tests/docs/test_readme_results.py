"""README.md's results section is generated from benchmarks/results/*.json, and stays so.

No server: the section is rebuilt from the committed JSON files by ``benchmarks/readme.py`` and
compared with README.md; a stale README fails with the command that regenerates it.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FILES = ["leaderboard.json", "baselines.json", "bbt.json", "bdpl.json", "promptboosting.json", "rlprompt.json",
         "rlprompt_long.json", "calibration.json", "distill.json", "bidf_mkd.json"]


def test_readme_results_section_is_generated_from_the_json_files(benchmark_script: Any) -> None:
    readme = benchmark_script("readme")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    expected = readme.splice(text, readme.render(RESULTS))
    if expected != text:
        diff = "".join(difflib.unified_diff(text.splitlines(True), expected.splitlines(True), "README.md",
                                            "generated", n=1))
        pytest.fail(f"README.md's results section differs from benchmarks/results/*.json; run "
                    f"`{readme.COMMAND}` and commit README.md\n{diff[:4000]}")


def _copy_results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    for name in FILES:
        shutil.copy(RESULTS / name, out / name)
    return out


def test_check_names_the_command_and_the_rewrite_touches_only_the_section(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], benchmark_script: Any) -> None:
    readme = benchmark_script("readme")
    results = _copy_results(tmp_path)
    board = json.loads((results / "leaderboard.json").read_text())
    first = board["runs"][0]
    for r in board["runs"]:  # a new measurement lands in the JSON: every seed of the first run's row
        if (r["task"], r["extra"].get("label")) == (first["task"], first["extra"].get("label")):
            r["eval"]["accuracy"] = 0.123456
    (results / "leaderboard.json").write_text(json.dumps(board))
    path = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")

    assert readme.main(["--readme", str(path), "--results", str(results), "--check"]) == 1
    assert "run `python benchmarks/readme.py`" in capsys.readouterr().err
    assert readme.main(["--readme", str(path), "--results", str(results)]) == 0
    new = path.read_text(encoding="utf-8")
    assert "12.3" in new and "12.3" not in original
    before, after = original.split(readme.BEGIN), new.split(readme.BEGIN)
    assert before[0] == after[0] and before[1].split(readme.END)[1] == after[1].split(readme.END)[1]
    assert readme.main(["--readme", str(path), "--results", str(results), "--check"]) == 0


def test_a_row_whose_runs_are_gone_fails_loudly(tmp_path: Path, benchmark_script: Any) -> None:
    readme = benchmark_script("readme")
    results = _copy_results(tmp_path)
    bbt = json.loads((results / "bbt.json").read_text())
    bbt["runs"] = [r for r in bbt["runs"] if r["method"] != "bbtv2"]
    (results / "bbt.json").write_text(json.dumps(bbt))
    with pytest.raises(ConfigError, match="bbt.json must hold runs labelled 'bbtv2' on sst2"):
        readme.render(results)


def test_splice_needs_one_pair_of_markers(benchmark_script: Any) -> None:
    readme = benchmark_script("readme")
    assert readme.splice(f"a\n{readme.BEGIN}old{readme.END}\nb", "new") == f"a\n{readme.BEGIN}new{readme.END}\nb"
    for bad in ["no markers", f"{readme.END}{readme.BEGIN}", f"{readme.BEGIN}{readme.BEGIN}{readme.END}"]:
        with pytest.raises(ConfigError, match="README must hold"):
            readme.splice(bad, "new")


def _run(seed: int, acc: float, budget: int | None, n: int, label: str = "bbt") -> dict[str, Any]:
    return {"method": label, "task": "sst2", "seed": seed, "config": {} if budget is None else {"budget": budget},
            "eval": {"accuracy": acc, "n": n}, "extra": {"label": label}, "curve": [],
            "budget_spent": {"calls": budget or 0}}


def test_method_rows_never_average_two_budgets_or_eval_sizes(benchmark_script: Any) -> None:
    readme = benchmark_script("readme")
    runs = [_run(13, 0.80, 40, 200), _run(13, 0.70, 600, 872), _run(21, 0.72, 600, 872),
            _run(21, 0.90, 600, 200), _run(21, 0.74, 600, 872)]  # the last reruns seed 21: it replaces it
    groups = readme.by_setting(runs)
    assert [[(r["seed"], r["eval"]["accuracy"]) for r in g] for g in groups] == [
        [(13, 0.80)], [(21, 0.90)], [(13, 0.70), (21, 0.74)]]
