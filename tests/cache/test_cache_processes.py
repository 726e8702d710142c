"""The cache across processes: stable keys, concurrent writers, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bbox_lfm.cachekey import cache_key
from bbox_lfm.stores import SQLiteStore
from bbox_lfm.types import Query

KEYS_SCRIPT = textwrap.dedent("""
    import json, sys
    from bbox_lfm.cachekey import cache_key
    from bbox_lfm.types import Query
    qs = [
        Query(model="m", prompt=("It was",), max_tokens=0, logprobs=5, extra={"label_words": [" bad", " good"]}),
        Query(model="m", prompt=("\\u00e9t\\u00e9 \\u4e2d\\u6587 \\U0001F600", "b"), temperature=0.1 + 0.2,
              top_p=1e-300, stop=("\\n",), seed=7, sample_id=3),
        Query(endpoint="chat", model="gpt", messages=({"role": "user", "content": "hi", "name": "z"},),
              top_logprobs=20, extra={"soft_prompt": {"shape": [2, 3], "dtype": "float32", "data": "AACAPwAAAEA="},
                                      "nested": {"b": [1, 2.5, None, True], "a": {"y": 1, "x": -0.0}}}),
    ]
    json.dump([cache_key(q, "http://h:1/v1/") for q in qs], sys.stdout)
""")

# The key of the first query above, pinned: a change here invalidates every user's cache and
# cassettes, so it must be deliberate.
PINNED_FIRST_KEY = "782c4909afcb8d95e24c08e6e6cf449b8a8dfccf1fed0351b19a9f1370e20078"


def run_python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_keys_are_the_same_in_every_process_and_hash_seed() -> None:
    runs = [json.loads(run_python(KEYS_SCRIPT, env={"PYTHONHASHSEED": seed})) for seed in ("0", "1", "12345")]
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0])) == 3
    here = cache_key(Query(model="m", prompt=("It was",), max_tokens=0, logprobs=5,
                           extra={"label_words": [" bad", " good"]}), "http://h:1/v1")
    assert runs[0][0] == here  # a trailing slash on the URL does not matter
    assert here == PINNED_FIRST_KEY


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    from bbox_lfm.stores import SQLiteStore
    path, who, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start:  # all four open the fresh file at the same moment
        time.sleep(0.001)
    store = SQLiteStore(path)
    for i in range(n):
        store.put(f"{who}-{i}", {"query": {"model": "m", "endpoint": "completions"}, "base_url": "u",
                                 "response": {"choices": [{"text": f"{who}/{i}"}]}, "created_at": time.time(),
                                 "cost_usd": 0.001})
        if i % 10 == 0:
            store.get(f"{(who + 1) % 4}-{i}")
    store.close()
""")


def test_four_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    n = 250
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path), str(w), str(n), str(start)],
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    store = SQLiteStore(path)
    assert len(store) == 4 * n
    for w in range(4):
        for i in range(n):
            entry = store.get(f"{w}-{i}")
            assert entry is not None and entry["response"]["choices"][0]["text"] == f"{w}/{i}"
    store.close()


OPENER_SCRIPT = textwrap.dedent("""
    import sqlite3, sys, time
    from bbox_lfm.stores import SQLiteStore
    base, who, rounds, start, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    connect = sqlite3.connect

    def slow_connect(*args, **kwargs):
        # The test's hook: every statement that reads the table list starts 0.1 s late, which
        # widens any gap between reading the file's id and reading its tables from microseconds
        # to a tenth of a second, so that another process's creation lands inside it.
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: time.sleep(0.1) if "sqlite_master" in sql else None)
        return conn

    sqlite3.connect = slow_connect
    failures = []
    for r in range(rounds):
        # staggered by 40 ms, so that some process is always halfway through its check when
        # another commits the new file
        while time.time() < start + r * gap + 0.04 * who:
            time.sleep(0.0005)
        try:
            store = SQLiteStore(f"{base}-{r}.sqlite")
        except Exception as exc:
            failures.append(f"round {r}: {exc!r}")
            continue
        store.put(str(who), {"query": {}, "response": {"who": who}})
        store.close()
    print("\\n".join(failures), file=sys.stderr)
    sys.exit(1 if failures else 0)
""")


def test_many_processes_opening_new_caches_at_once_all_succeed(tmp_path: Path) -> None:
    """Eight processes open each of four new cache files at once; none may take it for a foreign file."""
    n_procs, rounds, gap = 8, 4, 0.8
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", OPENER_SCRIPT, str(tmp_path / "c"), str(w), str(rounds),
                               str(start), str(gap)], stderr=subprocess.PIPE, text=True) for w in range(n_procs)]
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=240)
        if p.returncode != 0:
            errors.append(err.strip())
    assert not errors, "\n".join(errors)
    for r in range(rounds):
        store = SQLiteStore(tmp_path / f"c-{r}.sqlite")
        assert sorted(int(k) for k, _ in store.items()) == list(range(n_procs))
        store.close()


RUN_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from bbox_lfm import Client, MockAdapter, Query
    cache, log, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def slow_provider(query):
        # the provider's own record of what it answered: one line per query, written before the
        # answer is handed back
        time.sleep(0.01)
        with open(log, "a") as f:
            f.write(query.prompt[0] + "\\n")
        return {"id": "x", "object": "text_completion", "model": "m",
                "choices": [{"index": 0, "text": " " + query.prompt[0], "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

    client = Client("http://slow/v1", provider="generic", model="m", adapter=MockAdapter(slow_provider), cache=cache)
    queries = [Query(prompt=(f"q{i}",), max_tokens=1) for i in range(n)]
    for i in range(0, n, workers):
        out = client.send_many(queries[i:i + workers], max_concurrency=workers)
        assert [r.text for r in out] == [" " + q.prompt[0] for q in queries[i:i + workers]]
    print("done", client.budget.summary()["requests"])
""")


def _kill_midway_then_resume(tmp_path: Path, workers: int) -> None:
    cache, log, n = tmp_path / "c.sqlite", tmp_path / "provider.log", 120
    args = [sys.executable, "-c", RUN_SCRIPT, str(cache), str(log), str(n), str(workers)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < n // 3) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    answered_before = log.read_text().splitlines()
    assert n // 3 <= len(answered_before) < n, "the run must have been killed midway"

    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    answered = log.read_text().splitlines()
    assert sorted(set(answered)) == sorted(f"q{i}" for i in range(n))
    repeats = [q for q in set(answered) if answered.count(q) > 1]
    # Only a query whose answer was in flight at the moment of the kill (answered by the provider,
    # not yet committed to the cache) can be asked again: at most one per worker, and only from
    # the last answers of the killed run.
    assert len(repeats) <= workers
    assert set(repeats) <= set(answered_before[-workers:])
    assert int(out.stdout.split()[1]) == n - len(answered_before) + len(repeats)


def test_sigkill_then_resume_sends_no_answered_query_again(tmp_path: Path) -> None:
    _kill_midway_then_resume(tmp_path, workers=1)


def test_sigkill_then_resume_with_concurrent_sends(tmp_path: Path) -> None:
    _kill_midway_then_resume(tmp_path, workers=4)
