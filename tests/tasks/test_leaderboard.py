"""The leaderboard: registry-driven method list, its table and its figure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bbox_lfm.cli import main
from bbox_lfm.commands.report import leaderboard_table, plot_leaderboard
from bbox_lfm.methods import Method, names
from bbox_lfm.methods.base import registry
from bbox_lfm.results import write_result

ROOT = Path(__file__).resolve().parents[2]


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("leaderboard_script", ROOT / "benchmarks" / "leaderboard.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["leaderboard_script"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_every_registered_prompt_method_joins_without_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    board = _script()
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


def _run(task: str, label: str, seed: int, acc: float, start: float | None, chosen: str = "search") -> dict[str, Any]:
    extra: dict[str, Any] = {"label": label}
    curve: list[dict[str, Any]] = []
    if start is not None:
        extra.update({"start": {"dev": {"accuracy": 0.5}, "eval": {"accuracy": start}},
                      "gain": {"eval_accuracy": acc - start}, "selection": {"chosen": chosen}})
        curve = [{"calls": 20, "dev_accuracy": 0.6}, {"calls": 40, "dev_accuracy": 0.7}]
    spent = {"calls": 0, "requests": 0, "sequences": 0, "cache_hits": 0}
    return {"method": label, "config": {}, "task": task, "seed": seed, "provider": "p", "model": "m",
            "budget_spent": {**spent, "calls": 40 if curve else 0}, "eval_spent": spent, "wall_s": 10.0 * seed,
            "dev": {"accuracy": 0.6, "f1": 0.6}, "eval": {"accuracy": acc, "f1": acc, "n": 872}, "curve": curve,
            "prompt": None,
            "version": "0", "commit": "", "extra": extra, "schema": 1}


def test_leaderboard_table_and_figure(tmp_path: Path) -> None:
    runs = [_run("sst2", "bbt", 13, 0.80, 0.78), _run("sst2", "bbt", 21, 0.78, 0.78, "start"),
            _run("sst2", "zero-shot", 13, 0.78, None), _run("mr", "bbt", 13, 0.70, 0.76)]
    table = leaderboard_table(runs)
    assert "| sst2 | bbt | 13,21 | 872 | 78.0 | 79.0 ± 1.4 | +1.0 | 1/2 | 40 | 170 |" in table
    assert "| sst2 | zero-shot | 13 | 872 | - | 78.0 ± 0.0 | - | - | 0 | 130 |" in table
    assert "| mr | bbt | 13 | 872 | 76.0 | 70.0 ± 0.0 | -6.0 | 0/1 | 40 | 130 |" in table
    png = plot_leaderboard(runs, tmp_path / "b.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = write_result(tmp_path / "leaderboard.json", {"schema": 1, "kind": "bundle", "benchmark": "leaderboard",
                                                            "runs": runs})
    md = tmp_path / "t.md"
    assert main(["report", str(path), "--out-md", str(md), "--out-png", str(tmp_path / "c.png")]) == 0
    assert md.read_text().startswith("## Leaderboard\n\n| task | method | seeds |")
