"""Parts of the server that need no model: the batcher, tensor decoding, the CLI parser."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bbox_lfm.serve import ServeConfig, encode_tensor
from bbox_lfm.serve.batcher import Batcher
from bbox_lfm.serve.cli import build_parser
from bbox_lfm.serve.errors import InvalidRequest
from bbox_lfm.serve.protocol import TensorPayload
from bbox_lfm.serve.tensors import decode_tensor


def test_batcher_merges_queued_jobs_and_keeps_order() -> None:
    batches: list[list[int]] = []

    def forward(rows: list[int]) -> list[int]:
        batches.append(rows)
        time.sleep(0.01)
        return [r * 10 for r in rows]

    batcher: Batcher[int] = Batcher(forward, length=lambda r: -r, window_s=0.05, max_batch=64)
    results: dict[int, list[int]] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.score([i, i + 100]))) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: [i * 10, (i + 100) * 10] for i in range(8)}
    assert len(batches) < 8
    assert all(b == sorted(b, reverse=True) for b in batches)  # sorted by the length key


def test_batcher_without_window_runs_each_job_alone() -> None:
    sizes: list[int] = []
    batcher: Batcher[int] = Batcher(lambda rows: sizes.append(len(rows)) or rows, length=int, window_s=0, max_batch=2)
    assert batcher.score([1, 2, 3]) == [1, 2, 3]
    assert batcher.call(lambda: "alone") == "alone"
    batcher.close()
    assert sizes == [2, 1]


def test_batcher_merges_jobs_with_equal_keys_and_isolates_failures() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def fn(items: list[int]) -> list[int]:
        calls.append(items)
        gate.wait(1)  # the first call holds the worker while the others queue
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]

    batcher: Batcher[int] = Batcher(lambda rows: rows, length=int, window_s=0.05, max_batch=64)
    out: dict[int, object] = {}

    def run(key: str, item: int) -> None:
        try:
            out[item] = batcher.merge(key, item, fn)
        except ValueError as exc:
            out[item] = str(exc)

    first = threading.Thread(target=run, args=("a", 0))
    first.start()
    time.sleep(0.1)
    threads = [threading.Thread(target=run, args=(k, i)) for k, i in [("a", 1), ("a", 2), ("a", -1), ("b", 3)]]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [first, *threads]:
        t.join()
    batcher.close()
    assert out == {0: 0, 1: 10, 2: 20, -1: "bad item", 3: 30}
    assert any(len(c) >= 2 for c in calls)  # jobs of key "a" ran together
    assert all(not (3 in c and len(c) > 1) for c in calls)  # key "b" never joined them
    assert batcher.merged_jobs >= 2


def test_batcher_isolates_a_failing_job() -> None:
    def forward(rows: list[int]) -> list[int]:
        if -1 in rows:
            raise ValueError("bad row")
        return rows

    batcher: Batcher[int] = Batcher(forward, length=int, window_s=0.05)
    outcomes: dict[str, object] = {}

    def run(name: str, rows: list[int]) -> None:
        try:
            outcomes[name] = batcher.score(rows)
        except ValueError as exc:
            outcomes[name] = str(exc)

    threads = [threading.Thread(target=run, args=(n, r)) for n, r in [("good", [1]), ("bad", [-1])]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert outcomes == {"good": [1], "bad": "bad row"}


def test_tensor_round_trip_and_errors() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload = TensorPayload(**encode_tensor(array))
    np.testing.assert_array_equal(decode_tensor(payload, "soft_prompt", ["n", 3]), array)
    with pytest.raises(InvalidRequest, match=r"soft_prompt.shape must be \[n, 4\].*got \[2, 3\]"):
        decode_tensor(payload, "soft_prompt", ["n", 4])


def test_cli_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BBOX_LFM_SERVE_PORT", "8123")
    monkeypatch.setenv("BBOX_LFM_SERVE_BATCH_WINDOW_MS", "0")
    args = build_parser().parse_args(["--max-logprobs", "5", "--dtype", "bfloat16"])
    assert (args.port, args.batch_window_ms, args.max_logprobs, args.dtype) == (8123, 0.0, 5, "bfloat16")
    assert args.model is None and args.host == "127.0.0.1" and args.max_batch == ServeConfig().max_batch
    with pytest.raises(ValueError, match="max_batch"):
        ServeConfig(max_batch=0)


def test_cache_argument_follows_the_forward_signature() -> None:
    """The prefix keys/values go under the name the model's forward takes: transformers renamed
    ``past_key_values`` to ``cache``, and a wrong name is swallowed by ``**kwargs`` (a pass that
    silently ignores the cached prefix: the shared-prefix rows lost their soft prompt)."""
    from types import SimpleNamespace

    from bbox_lfm.serve.engine import cache_argument, output_cache

    def new(input_ids=None, cache=None, use_cache=None, **kwargs): ...
    def old(input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...
    def neither(input_ids=None, **kwargs): ...

    assert cache_argument(new) == "cache"
    assert cache_argument(old) == "past_key_values"
    with pytest.raises(TypeError, match="neither 'cache' nor 'past_key_values'"):
        cache_argument(neither)
    assert output_cache(SimpleNamespace(cache=1)) == 1
    assert output_cache(SimpleNamespace(past_key_values=2)) == 2


def test_clipped_std_is_five_rounds_of_three_sigma_clipping() -> None:
    """200 zeros, 50 ones and 10, 30, 100, 1000: each round clamps to mean +- 3 std (population),
    and the std keeps shrinking for several rounds: 62.917106 raw, then 13.730934, 4.244431,
    1.600955, 0.737980, 0.488827 after the fifth (0.438721 after a sixth)."""
    import torch

    from bbox_lfm.serve.forward import clipped_std

    x = torch.tensor([0.0] * 200 + [1.0] * 50 + [10.0, 30.0, 100.0, 1000.0])
    assert clipped_std(x, False) == pytest.approx(62.917106, abs=1e-5)
    assert clipped_std(x, True) == pytest.approx(0.488827, abs=1e-5)


def _cost(lengths: list[int], ends: list[int], overhead: int) -> int:
    starts = [0, *ends[:-1]]
    return sum((b - a) * lengths[b - 1] + overhead for a, b in zip(starts, ends))


def test_cut_by_length_is_the_cheapest_cut() -> None:
    """Every way of cutting a few sorted rows, tried: the DP's cut costs no more than any."""
    import itertools
    import random

    from bbox_lfm.serve.prefix import cut_by_length

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 9)
        lengths = sorted(rng.randint(1, 60) for _ in range(n))
        max_rows, overhead, min_rows = rng.randint(1, 9), rng.choice([0, 8, 48]), rng.choice([1, 2])
        ends = cut_by_length(lengths, max_rows, overhead, min_rows=min_rows)
        lo = max(1, min(min_rows, n, max_rows))
        if not any(lo * k <= n <= max_rows * k for k in range(1, n + 1)):
            lo = 1  # no cut keeps every pass at min_rows or more: it falls back to one row minimum
        assert ends[-1] == n and all(lo <= b - a <= max_rows for a, b in zip([0, *ends[:-1]], ends))
        best = None
        for mask in itertools.product([0, 1], repeat=n - 1):
            cand = [i + 1 for i, m in enumerate(mask) if m] + [n]
            if all(lo <= b - a <= max_rows for a, b in zip([0, *cand[:-1]], cand)):
                c = _cost(lengths, cand, overhead)
                best = c if best is None else min(best, c)
        assert best is not None and _cost(lengths, ends, overhead) == best


def test_plan_cuts_a_shared_prefix_group_by_length_never_alone() -> None:
    """32 rows behind one long shared prefix, 5 to 50 tokens after it: several passes of similar
    lengths (far fewer padded positions than one pass), each with at least two rows so that it
    can reuse the prefix's keys/values."""
    import random

    from bbox_lfm.serve.prefix import MIN_SHARED_PREFIX, plan
    from bbox_lfm.serve.tokenization import Sequence

    rng = random.Random(1)
    head = tuple(range(1000, 1000 + MIN_SHARED_PREFIX + 6))
    seqs = [Sequence(head + tuple(rng.randint(1, 999) for _ in range(rng.randint(5, 50))), 1) for _ in range(32)]
    seqs.append(Sequence(head + tuple(range(90)), 1))  # one much longer row still goes with another
    passes = plan(seqs, 64)
    assert sorted(i for p in passes for i in p) == list(range(len(seqs)))
    assert len(passes) > 1 and all(len(p) >= 2 for p in passes)
    padded = sum(len(p) * max(len(seqs[i].ids) - len(head) for i in p) for p in passes)
    one_pass = len(seqs) * max(len(s.ids) - len(head) for s in seqs)
    assert padded < 0.75 * one_pass
