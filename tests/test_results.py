"""The results format: its published JSON Schema, what it accepts and how it says no."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm.errors import ConfigError
from bbox_lfm.results import RunResult, read_results, results_json_schema, validate_run, write_result

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.schema.json"


def run(**changes: Any) -> dict[str, Any]:
    spent = {"calls": 2, "sequences": 4, "tokens": 40, "cost_usd": 0.0, "cache_hits": 1}
    r = RunResult(method="bbt", config={"budget": 2}, task="sample", seed=13, provider="bbox-lfm", model="m",
                  budget_spent=spent, eval_spent=dict(spent), wall_s=1.5,
                  dev={"accuracy": 0.5, "f1": 0.4, "n": 16}, eval={"accuracy": 0.6, "f1": 0.5, "n": 20},
                  curve=[{"calls": 2, "dev_accuracy": 0.5}], prompt="p").to_json()
    r.update(changes)
    return r


def test_published_schema_matches_the_models() -> None:
    assert json.loads(DOCS.read_text(encoding="utf-8")) == json.loads(json.dumps(results_json_schema())), (
        "docs/results.schema.json is out of date; regenerate it (see docs/results.md)")


def test_additions_pass_and_core_fields_are_required() -> None:
    grown = run(start={"prompt": "x"}, budget_spent={**run()["budget_spent"], "requests": 3})
    grown["config"]["start"] = {"source": "manual"}
    validate_run(grown)
    with pytest.raises(ConfigError, match=r"eval\.f1: Field required"):
        validate_run(run(eval={"accuracy": 0.5, "n": 20}))
    with pytest.raises(ConfigError, match=r"budget_spent\.calls"):
        validate_run(run(budget_spent={"calls": -1, "sequences": 0, "tokens": 0, "cost_usd": 0, "cache_hits": 0}))
    with pytest.raises(ConfigError, match="schema"):
        validate_run(run(schema=2))


def test_files_runs_bundles_and_speed(tmp_path: Path) -> None:
    one = write_result(tmp_path / "one.json", run())
    bundle = write_result(tmp_path / "b.json", {"schema": 1, "kind": "bundle", "runs": [run(), run(seed=21)],
                                                 "summary": {"mean": 0.6}})
    speed = write_result(tmp_path / "s.json", {"kind": "speed", "benchmark": "server", "tokens_per_s": 9.0})
    assert read_results(one)[0] == "run"
    assert [r["seed"] for r in read_results(bundle)[1]] == [13, 21]
    assert read_results(speed) == ("speed", [])
    bad = write_result(tmp_path / "bad.json", {"schema": 1, "kind": "bundle", "runs": [{"method": "bbt"}]})
    with pytest.raises(ConfigError, match=r"runs\.0\.config: Field required"):
        read_results(bad)


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_report_reads_every_benchmark_file_and_skips_speed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """``bbox-lfm report benchmarks/results/*.json`` renders every method file in one call."""
    from bbox_lfm.cli import main

    files = sorted(str(p) for p in RESULTS.glob("*.json"))
    skipped: list[str] = []
    from bbox_lfm.commands.report import load_runs

    runs = load_runs(files, skipped=skipped)
    assert {r["method"] for r in runs} >= {"zero-shot", "icl", "best-of-n", "bbt", "bbtv2", "bdpl", "distill"}
    speed = sorted(Path(p).stem for p in files if json.loads(Path(p).read_text(encoding="utf-8")).get("kind") == "speed")
    assert {"batching", "cache_replay", "overhead", "server"} <= set(speed)
    assert sorted(Path(p).stem for p in skipped) == speed
    assert main(["report", *files]) == 0
    out = capsys.readouterr()
    assert "| sst2 | bbtv2 |" in out.out and out.err.count("speed benchmark") == len(speed)


def test_benchmark_bundles_convert_back_to_their_working_layout(benchmark_script: Any) -> None:
    """benchmarks/bundle.py loses nothing: a bundle read back is the layout the scripts resume from,
    and written again it is the same file."""
    bundle = benchmark_script("bundle")
    for name in ("baselines", "bbt", "bdpl", "distill", "rlprompt"):
        stored = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
        native = bundle.from_bundle(stored)
        assert native.get("kind") is None
        assert json.loads(json.dumps(bundle.to_bundle(native, name), default=float)) == stored, name
