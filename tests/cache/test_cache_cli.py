"""``bbox-lfm cache stats | prune | export | import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm import Client, MockAdapter, Query
from bbox_lfm.cli import main


def fill(path: Path, n: int = 5, repeats: int = 3) -> None:
    def handler(q: Query) -> dict[str, Any]:
        return {"choices": [{"index": 0, "text": " ok"}], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}

    c = Client("http://mock/v1", adapter=MockAdapter(handler), provider="generic", model="m", cache=path)
    for i in range(n):
        c.send(Query(prompt=f"prompt {i}"))
    for i in range(repeats):
        c.send(Query(prompt=f"prompt {i}"))
    c.send(Query(endpoint="chat", messages=({"role": "user", "content": "hello"},), model="other"))
    assert c.store is not None
    c.store.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.sqlite"
    assert cli(capsys, "cache", "--cache", str(path), "stats", "--json")["exists"] is False
    assert not path.exists()  # looking does not create
    fill(path)
    stats = cli(capsys, "cache", "--cache", str(path), "stats", "--json")
    assert (stats["entries"], stats["hits"], stats["misses"]) == (6, 3, 6)
    assert stats["hit_rate"] == pytest.approx(3 / 9) and stats["size_bytes"] > 0
    assert stats["models"] == {"m": 5, "other": 1}
    assert main(["cache", "--cache", str(path), "stats"]) == 0
    assert "hit rate 33.3%" in capsys.readouterr().out


def test_export_prune_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, out = tmp_path / "cache.sqlite", tmp_path / "tape.jsonl"
    fill(path)
    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(tmp_path))  # the default location is the same file
    assert cli(capsys, "cache", "export", "--filter", "model=m", "--filter", "prompt~prompt 1", str(out))["exported"] == 1
    assert cli(capsys, "cache", "export", "--filter", "endpoint=chat", str(out))["exported"] == 1
    assert "hello" in out.read_text()
    assert cli(capsys, "cache", "export", str(out))["exported"] == 6
    assert cli(capsys, "cache", "prune", "--filter", "model=m", "--dry-run")["matched"] == 5
    assert cli(capsys, "cache", "prune", "--older-than", "1")["deleted"] == 0
    assert cli(capsys, "cache", "prune", "--filter", "model=m") == {
        "deleted": 5, "entries_left": 1, "matched": 5, "path": str(path)}
    assert cli(capsys, "cache", "prune", "--older-than", "0")["entries_left"] == 0
    assert cli(capsys, "cache", "import", str(out))["entries"] == 6
    again = tmp_path / "again.jsonl"
    cli(capsys, "cache", "export", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_bad_arguments_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "--cache", str(tmp_path / "c.sqlite"), "prune", "--filter", "colour=red"]) == 2
    assert "--filter must be" in capsys.readouterr().err
    assert main(["cache", "--cache", str(tmp_path / "c.sqlite"), "import", str(tmp_path / "nope.jsonl")]) == 2
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("not sqlite")
    assert main(["cache", "--cache", str(garbage), "stats", "--json"]) == 2
    assert "not a bbox-lfm cache" in capsys.readouterr().err
