"""The cache layer and its stores: replay, modes, sampling numbering, hit accounting, secrets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bbox_lfm import Budget, Client, MockAdapter, Query
from bbox_lfm.cachekey import cache_key
from bbox_lfm.errors import CacheCorrupt, CacheMiss
from bbox_lfm.stores import EntryFilter, JSONLStore, MemoryStore, SQLiteStore, parse_filter, write_cassette

BASE = "https://api.example.test/v1"
KEY = "sk-test-SECRET-0123456789abcdef"


def completion(text: str, *, lp: float = -0.5, tokens: int = 7) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": text, "index": 0, "finish_reason": "length",
                         "logprobs": {"tokens": [text], "token_logprobs": [lp], "text_offset": [0],
                                      "top_logprobs": [{text: lp, " other": lp - 1.0 / 3.0}]}}],
            "usage": {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1}}


def echo_handler(query: Query) -> dict[str, Any]:
    if query.endpoint == "chat":
        return {"id": "c", "object": "chat.completion", "model": "m", "usage": {"prompt_tokens": 3},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
    return completion(" " + query.prompt[0][::-1], lp=-len(query.prompt[0]) / 7.0)


def mock_client(store: Any, mode: str = "readwrite", handler: Any = echo_handler, **kw: Any) -> Client:
    return Client("http://mock/v1", adapter=MockAdapter(handler), provider="generic", model="m", cache=store,
                  cache_mode=mode, **kw)


QUERIES = [Query(prompt=(f"prompt {i} \u00e9\u4e2d",), max_tokens=1, logprobs=2, extra={"label_words": [" a", " b"]})
           for i in range(6)]


# -- replay -----------------------------------------------------------------------------------

@respx.mock
def test_replay_of_a_recorded_session_is_identical_and_sends_nothing(tmp_path: Path) -> None:
    route = respx.post(f"{BASE}/completions").mock(
        side_effect=lambda req: httpx.Response(200, json=completion(" x" + json.loads(req.content)["prompt"][-3:])))
    path = tmp_path / "c.sqlite"
    with Client(BASE, api_key=KEY, provider="openai", model="gpt-3.5-turbo-instruct", cache=path) as rec:
        recorded = rec.send_many(QUERIES, max_concurrency=3)
    assert route.call_count == len(QUERIES)
    route.reset()
    with Client(BASE, api_key=KEY, provider="openai", model="gpt-3.5-turbo-instruct", cache=path,
                cache_mode="replay") as rep:
        replayed = rep.send_many(QUERIES, max_concurrency=3)
        report = rep.budget_report()
    assert route.call_count == 0
    assert all(r.cache_hit for r in replayed) and not any(r.cache_hit for r in recorded)
    for a, b in zip(recorded, replayed):
        assert a.choices == b.choices  # bit for bit, logprobs included
        assert a.usage == b.usage and a.cost_usd == b.cost_usd and a.model == b.model
    assert report["requests"]["spent"] == 0 and report["cache_hits"] == len(QUERIES)
    assert report["saved_usd"] == pytest.approx(sum(r.cost_usd for r in recorded))
    assert report["saved_usd"] > 0


@respx.mock
def test_replay_miss_raises_names_the_query_and_sends_nothing(tmp_path: Path) -> None:
    route = respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, json=completion(" y")))
    with Client(BASE, api_key=KEY, provider="openai", model="gpt-3.5-turbo-instruct", cache=tmp_path / "c.sqlite",
                cache_mode="replay") as c:
        with pytest.raises(CacheMiss, match="nothing was sent") as err:
            c.send(Query(prompt="never recorded prompt"))
        with pytest.raises(LookupError):  # the builtin a caller would catch
            c.send_many(QUERIES, max_concurrency=4)
    assert "never recorded prompt" in str(err.value)
    assert not route.called


def test_modes_readwrite_record_off() -> None:
    store = MemoryStore()
    c = mock_client(store)
    q = QUERIES[0]
    assert not c.send(q).cache_hit and c.send(q).cache_hit
    assert c.adapter.calls == 1  # type: ignore[attr-defined]
    rec = c.with_cache_mode("record")
    assert not rec.send(q).cache_hit
    assert c.adapter.calls == 2  # type: ignore[attr-defined]
    off = mock_client(None, mode="off")
    off.send(q)
    off.send(q)
    assert off.adapter.calls == 2  # type: ignore[attr-defined]


def test_a_hit_costs_no_budget_and_counts_in_the_store() -> None:
    store = MemoryStore()
    mock_client(store).send(QUERIES[0])
    budget = Budget(requests=0)
    hit = mock_client(store, budget=budget).send(QUERIES[0])  # calls=0: only a hit can answer
    assert hit.cache_hit and hit.usage.total_tokens == 8
    assert budget.summary()["cache_hits"] == 1
    assert store.stats()["hits"] == 1 and store.stats()["misses"] == 1


# -- the sample_id rule ---------------------------------------------------------------------------

def counter_handler() -> Any:
    n = [0]

    def handler(query: Query) -> dict[str, Any]:
        n[0] += 1
        return completion(f" sample{n[0]}")
    return handler


def test_unlabelled_sampling_repeats_are_distinct_and_replay_in_order() -> None:
    store = MemoryStore()
    q = Query(prompt="tell me a story", max_tokens=8, temperature=0.7)
    provider = counter_handler()  # one provider that never repeats itself
    first = mock_client(store, handler=provider).send(q).text
    c = mock_client(store, handler=provider)
    texts = [c.send(q).text for _ in range(3)]
    assert len(set(texts)) == 3 and texts[0] == first  # sample 0 replayed, samples 1 and 2 new
    again = mock_client(store, mode="replay", handler=counter_handler())
    assert [again.send(q).text for _ in range(3)] == texts
    assert len(store) == 3


def test_explicit_sample_id_and_greedy_queries() -> None:
    store = MemoryStore()
    c = mock_client(store, handler=counter_handler())
    samples = [c.send(Query(prompt="p", max_tokens=4, temperature=1.0, sample_id=i)).text for i in (0, 1, 1)]
    assert samples[1] == samples[2] != samples[0]
    # a greedy answer does not depend on the sample: the sample_id does not split the entry
    greedy = [c.send(Query(prompt="p", max_tokens=4, sample_id=i)).text for i in range(3)]
    assert len(set(greedy)) == 1
    # temperature 1 and 1.0 are one request
    k1 = cache_key(Query(prompt="p", temperature=1, sample_id=0), "u")
    assert k1 == cache_key(Query(prompt="p", temperature=1.0, sample_id=0), "u")


def test_generate_with_sample_id_gives_distinct_cached_samples() -> None:
    store = MemoryStore()
    c = mock_client(store, handler=counter_handler())
    a = [c.generate(["p"], temperature=0.9, sample_id=i)[0] for i in range(3)]
    b = [c.generate(["p"], temperature=0.9, sample_id=i)[0] for i in range(3)]
    assert len(set(a)) == 3 and a == b and c.adapter.calls == 3  # type: ignore[attr-defined]


# -- the SQLite store ------------------------------------------------------------------------------

def test_sqlite_stats_count_hits_misses_and_money_saved(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"

    def priced(query: Query) -> Any:
        import dataclasses

        from bbox_lfm.adapters.parse import parse_response

        return dataclasses.replace(parse_response(echo_handler(query), "completions"), cost_usd=0.25)

    c = mock_client(path, handler=priced)
    for q in QUERIES[:4]:
        c.send(q)
    for q in QUERIES[:2] * 3:
        c.send(q)
    c.store.close()  # type: ignore[union-attr]
    store = SQLiteStore(path)
    stats = store.stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (4, 6, 4)
    assert stats["hit_rate"] == pytest.approx(0.6)
    assert stats["saved_usd"] == pytest.approx(1.5) and stats["stored_cost_usd"] == pytest.approx(1.0)
    assert stats["size_bytes"] > 0 and stats["models"] == {"m": 4}
    store.close()


def test_sqlite_prune_and_filters(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.sqlite")
    c = mock_client(store)
    for q in QUERIES:
        c.send(q)
    c.send(Query(endpoint="chat", messages=({"role": "user", "content": "hello there"},)))
    old_key = next(iter(store.items()))[0]
    entry = store.get(old_key)
    assert entry is not None
    store.put(old_key, {**entry, "created_at": 1000.0})
    now = 1e10
    assert [k for k, _ in store.select(parse_filter(["endpoint=chat"], now=now))] != []
    assert len(list(store.select(parse_filter(["prompt~hello there"], now=now)))) == 1
    assert len(list(store.select(parse_filter(["prompt~prompt 3 \u00e9"], now=now)))) == 1
    assert len(list(store.select(parse_filter([f"key={old_key[:6]}"], now=now)))) >= 1
    memory = MemoryStore()
    for k, e in store.items():
        memory.put(k, e)
    for terms in (["endpoint=chat"], ["prompt~hello"], ["model=m", "endpoint=completions"], ["prompt~3 \u00e9"]):
        f = parse_filter(terms, now=now)
        assert [k for k, _ in store.select(f)] == [k for k, _ in memory.select(f)]
    assert store.delete(EntryFilter(created_before=2000.0)) == 1
    assert store.get(old_key) is None and len(store) == len(QUERIES)
    store.close()


def test_corrupt_and_foreign_files_are_reported_and_left_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all\n" * 100)
    before = garbage.read_bytes()
    with pytest.raises(CacheCorrupt, match="not an SQLite file"):
        SQLiteStore(garbage)
    with pytest.raises(CacheCorrupt):
        Client("http://mock/v1", adapter=MockAdapter(echo_handler), provider="generic", model="m", cache=garbage)
    assert garbage.read_bytes() == before

    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(CacheCorrupt, match="not a bbox-lfm cache"):
        SQLiteStore(foreign)
    assert foreign.read_bytes() == before

    damaged = tmp_path / "damaged.sqlite"
    store = SQLiteStore(damaged)
    c = mock_client(store)
    for i in range(300):
        c.send(Query(prompt=f"fill {i} " + "x" * 200))
    store.close()
    raw = bytearray(damaged.read_bytes())
    raw[4096:len(raw) - 4096] = b"\xff" * (len(raw) - 8192)  # destroy every page but the header's
    damaged.write_bytes(bytes(raw))
    with pytest.raises(CacheCorrupt):
        s = SQLiteStore(damaged)
        for i in range(300):
            s.get(cache_key(Query(model="m", prompt=f"fill {i} " + "x" * 200), "http://mock/v1"))
    assert damaged.read_bytes() == bytes(raw)


def test_a_schema_1_cache_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={0x62626F78}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL,"
                 " hits INTEGER NOT NULL DEFAULT 0)")
    entry = {"query": {"model": "old", "endpoint": "chat"}, "response": {"choices": []}, "cost_usd": 0.5,
             "base_url": "u", "created_at": 5.0}
    conn.execute("INSERT INTO entries VALUES ('k', ?, 5.0, 2)", (json.dumps(entry),))
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    assert store.get("k") == entry and store.get_response("k") == entry["response"]
    assert [e for _, e in store.items()] == [entry]
    stats = store.stats()
    assert stats["models"] == {"old": 1} and stats["saved_usd"] == pytest.approx(1.0)
    store.close()


# -- secrets -------------------------------------------------------------------------------------

@respx.mock
def test_the_api_key_never_reaches_the_database_or_a_cassette(tmp_path: Path) -> None:
    respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, json=completion(" z")))
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}))
    path = tmp_path / "c.sqlite"
    with Client(BASE, api_key=KEY, provider="openai", model="gpt-4o-mini", cache=path) as c:
        c.send_many(QUERIES, max_concurrency=2)
        c.send(Query(endpoint="chat", messages=({"role": "user", "content": "hi"},)))
        # a prompt that quotes a key-shaped string is scrubbed from the cassette, but still replays
        leaky = Query(prompt=f"my key is {KEY}")
        c.send(leaky)
        assert c.store is not None
        entries = list(c.store.items())
        c.store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"Bearer" not in on_disk and b"authorization" not in on_disk.lower()
    assert on_disk.count(KEY.encode()) == 1  # only inside the one prompt that contains it
    cassette = tmp_path / "tape.jsonl"
    write_cassette(cassette, entries, secrets=[KEY])
    assert KEY.encode() not in cassette.read_bytes() and b"sk-test" not in cassette.read_bytes()
    replay = Client(BASE, api_key=KEY, provider="openai", model="gpt-4o-mini", cache=JSONLStore(cassette),
                    cache_mode="replay")
    assert replay.send(leaky).cache_hit


def test_cassettes_are_sorted_stable_and_round_trip(tmp_path: Path) -> None:
    store = MemoryStore()
    c = mock_client(store)
    for q in reversed(QUERIES):
        c.send(q)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_cassette(a, store.items())
    tape = JSONLStore(a)
    tape.save()
    write_cassette(b, reversed(list(store.items())))
    assert a.read_bytes() == b.read_bytes()
    header, *lines = a.read_text(encoding="utf-8").splitlines()
    assert json.loads(header) == {"bbox_lfm_cassette": 1, "recorded_against": {
        "base_url": "http://mock/v1", "model": "m", "namespace": "http://mock/v1"}}  # what the entries tell
    assert len(lines) == len(QUERIES) and [json.loads(x)["key"] for x in lines] == sorted(k for k, _ in store.items())
    assert "\u00e9\u4e2d" in lines[0]  # readable, not \u-escaped
    replay = mock_client(JSONLStore(a), mode="replay")
    assert [r.choices for r in replay.send_many(QUERIES)] == [r.choices for r in c.send_many(QUERIES)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(CacheCorrupt, match="bad.jsonl:2"):
        JSONLStore(bad)


def test_stored_query_keeps_tensors_as_digests_only() -> None:
    """A 100 kB soft prompt is hashed into the key but not stored verbatim."""
    from bbox_lfm import Client, MockAdapter, Query
    from bbox_lfm.stores import MemoryStore

    store = MemoryStore()
    c = Client("http://mock/v1", adapter=MockAdapter(lambda q: {"choices": [{"index": 0, "text": "x"}]}),
               provider="bbox-lfm", model="m", cache=store)
    blob = "A" * 100_000
    q = Query(prompt="p", extra={"soft_prompt": {"shape": [1, 2], "data": blob}})
    c.send(q)
    (_, entry), = store.items()
    stored = entry["query"]["extra"]["soft_prompt"]["data"]
    assert stored["chars"] == 100_000 and len(stored["sha256"]) == 64
    assert entry["query"]["prompt"] == ["p"]
    assert c.send(q).cache_hit  # the key still covers the full tensor
    assert not c.send(Query(prompt="p", extra={"soft_prompt": {"shape": [1, 2], "data": "B" * 100_000}})).cache_hit


def test_every_built_in_store_is_a_store_and_other_objects_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bbox_lfm import Client
    from bbox_lfm.errors import ConfigError
    from bbox_lfm.stores import JSONLStore, MemoryStore, SQLiteStore, Store

    sqlite = SQLiteStore(tmp_path / "c.sqlite")
    try:
        for store in (MemoryStore(), JSONLStore(tmp_path / "c.jsonl"), sqlite):
            assert isinstance(store, Store)
    finally:
        sqlite.close()
    with pytest.raises(ConfigError, match="cache must be a store"):
        Client("http://127.0.0.1:9/v1", cache={"not": "a store"})  # type: ignore[arg-type]
