"""The cassette header (what it was recorded against) and the replay miss that says what changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm import Client, MockAdapter, Query
from bbox_lfm.cli import main
from bbox_lfm.errors import CacheMiss, ConfigError
from bbox_lfm.stores import JSONLStore, MemoryStore, SQLiteStore, read_cassette, write_cassette
from bbox_lfm.stores.jsonl import public_url, read_header, recorded_against

REPO = Path(__file__).resolve().parents[2]


def echo(q: Query) -> dict[str, Any]:
    text = q.prompt[0] if q.prompt else q.messages[-1]["content"]
    return {"choices": [{"index": 0, "text": " re:" + text}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def client(store: Any, mode: str = "readwrite", model: str = "m") -> Client:
    return Client("http://mock/v1", adapter=MockAdapter(echo), provider="generic", model=model, cache=store,
                  cache_mode=mode)


RECORDED = [Query(prompt="The film was great. It was", max_tokens=1, extra={"label_words": [" a", " b"]}),
            Query(prompt="The capital of France is", max_tokens=4),
            Query(endpoint="chat", messages=({"role": "user", "content": "Say hi"},), max_tokens=3)]


def miss(store: Any, query: Query, model: str = "m") -> CacheMiss:
    with pytest.raises(CacheMiss) as info:
        client(store, "replay", model).send(query)
    return info.value


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_replay_miss_names_what_differs_from_the_nearest_recorded_query(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "c.sqlite")
    rec = client(store)
    for q in RECORDED:
        rec.send(q)

    edited = miss(store, Query(prompt="The film was awful. It was", max_tokens=1, extra={"label_words": [" a", " b"]}))
    assert edited.hint == ("the nearest recorded query differs in prompt[0] (recorded 'The film was great. It was',"
                           " asked 'The film was awful. It was')")
    assert str(edited).endswith(edited.hint)
    longer = miss(store, Query(prompt="The capital of France is", max_tokens=5))
    assert longer.hint == "the nearest recorded query differs in max_tokens (recorded 4, asked 5)"
    words = miss(store, Query(prompt="The film was great. It was", max_tokens=1, extra={"label_words": [" a", " c"]}))
    assert words.hint == "the nearest recorded query differs in extra.label_words[1] (recorded ' b', asked ' c')"
    other = miss(store, Query(prompt="The capital of France is", max_tokens=4), model="gpt-4o-mini")
    assert other.hint == "the nearest recorded query differs in model (recorded 'm', asked 'gpt-4o-mini')"
    chat = miss(store, Query(endpoint="chat", messages=({"role": "user", "content": "Say hello"},), max_tokens=3))
    assert chat.hint is not None and chat.hint.startswith("the nearest recorded query differs in messages[0].content")
    assert "'Say hi'" in chat.hint and "'Say hello'" in chat.hint

    long_a, long_b = "x" * 200 + "tail one" + "y" * 200, "x" * 200 + "tail two" + "y" * 200
    rec.send(Query(prompt=long_a, max_tokens=1))
    cut = miss(store, Query(prompt=long_b, max_tokens=1)).hint
    assert cut == ("the nearest recorded query differs in prompt[0] (recorded '..." + "x" * 25 + "tail one" + "y" * 27
                   + "...', asked '..." + "x" * 25 + "tail two" + "y" * 27 + "...')")  # 30 characters either side

    assert miss(MemoryStore(), RECORDED[0]).hint is None  # nothing recorded: nothing to compare


def test_header_names_what_was_recorded_never_a_credential(tmp_path: Path) -> None:
    store = MemoryStore()
    for q in RECORDED:
        client(store).send(q)
    tape = tmp_path / "tape.jsonl"
    write_cassette(tape, store.items(), recorded={
        "base_url": "https://user:hunter22@api.example.test/v1/?api-key=abc123", "provider": "generic", "model": "m",
        "namespace": "http://mock/v1"})
    text = tape.read_text()
    assert "hunter22" not in text and "abc123" not in text
    assert read_header(tape) == {"base_url": "https://api.example.test/v1", "provider": "generic", "model": "m",
                                 "namespace": "http://mock/v1"}
    assert len(list(read_cassette(tape))) == 3  # the header is not an entry
    assert JSONLStore(tape).recorded == read_header(tape)

    local = tmp_path / "local.jsonl"
    write_cassette(local, store.items(), recorded={"base_url": "http://127.0.0.1:43117/v1", "provider": "bbox-lfm",
                                                   "model": "m", "namespace": "bbox-lfm-local:m"})
    assert read_header(local) == {"provider": "bbox-lfm", "model": "m", "namespace": "bbox-lfm-local:m"}  # no port
    assert public_url("http://a:b@h.test:8080/v1?x=1#f") == "http://h.test:8080/v1"


def test_a_cassette_from_before_headers_still_tells_what_it_was_recorded_against() -> None:
    legacy = REPO / "tests/cassettes/test_cache_plugin/test_this_projects_recorded_cassette_replays.jsonl"
    assert read_header(legacy) is None
    assert recorded_against(legacy) == {"model": "SmolLM2-135M-Instruct", "provider": "bbox-lfm",
                                        "namespace": "bbox-lfm-local:SmolLM2-135M-Instruct"}


def test_cache_export_writes_the_plugins_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, out = tmp_path / "cache.sqlite", tmp_path / "cut.jsonl"
    with Client.local("http://127.0.0.1:9/v1", adapter=MockAdapter(echo), cache=db) as c:  # a long run's cache
        for q in RECORDED[:2]:
            c.send(q)
    with Client("https://api.example.test/v1", adapter=MockAdapter(echo), provider="generic", model="g",
                cache=db) as c:
        c.send(RECORDED[0])
    assert main(["cache", "--cache", str(db), "export", "--filter", "model=SmolLM2-135M-Instruct", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["exported"] == 2 and printed["recorded_against"] == read_header(out) == {
        "model": "SmolLM2-135M-Instruct", "namespace": "bbox-lfm-local:SmolLM2-135M-Instruct", "provider": "bbox-lfm"}
    # a cut across two providers names only what they share; --provider names the profile
    assert main(["cache", "--cache", str(db), "export", "--filter", "prompt~film", "--provider", "generic",
                 str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["recorded_against"] == {"provider": "generic"}
    assert main(["cache", "--cache", str(db), "export", "--provider", "nope", str(out)]) == 2
    assert "provider must be one of" in capsys.readouterr().err
    SQLiteStore(db).close()


def test_cassette_client_records_with_a_server_and_replays_without(tmp_path: Path) -> None:
    from bbox_lfm.testing import cassette_client

    tape = tmp_path / "nb.jsonl"
    with pytest.raises(ConfigError, match="cassette must be an existing cassette file"):
        cassette_client(tape)
    sent: list[Query] = []

    def provider(q: Query) -> dict[str, Any]:
        sent.append(q)
        return echo(q)

    rec = cassette_client(tape, server="https://api.example.test/v1", provider="generic", model="g",
                          adapter=MockAdapter(provider))
    first = rec.send(RECORDED[0])
    assert len(list(read_cassette(tape))) == 1  # written as it arrived
    rec.send_many(RECORDED)
    assert len(sent) == 3 and read_header(tape) == {"base_url": "https://api.example.test/v1", "provider": "generic",
                                                    "model": "g", "namespace": "https://api.example.test/v1"}

    replay = cassette_client(tape)  # everything from the header: no flags, no key, no server
    assert replay.send(RECORDED[0]).choices == first.choices
    assert replay.budget.summary()["requests"] == 0 and replay.budget.summary()["cache_hits"] == 1
    with pytest.raises(CacheMiss, match=r"differs in max_tokens \(recorded 4, asked 9\)"):
        replay.send(Query(prompt="The capital of France is", max_tokens=9))
    with pytest.raises(ConfigError, match="model must be what the cassette .* was recorded against, 'g'"):
        cassette_client(tape, model="other")

    local = tmp_path / "local.jsonl"
    cassette_client(local, server="http://127.0.0.1:9/v1", adapter=MockAdapter(provider)).send(RECORDED[1])
    assert read_header(local) == {"provider": "bbox-lfm", "model": "SmolLM2-135M-Instruct",
                                  "namespace": "bbox-lfm-local:SmolLM2-135M-Instruct"}
    assert cassette_client(local).send(RECORDED[1]).cache_hit
