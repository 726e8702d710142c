"""Runs through a proxy that injects faults at 20 % of requests end exactly like clean runs.

429 with Retry-After, 500, 503, truncated 200 bodies, closed connections and stalls past the
client's timeout, in turn (bbox_lfm.testing.faults). The clean and the faulty run each have a
cache of their own, so every request really goes out in both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bbox_lfm.methods import get
from bbox_lfm.methods.harness import run
from bbox_lfm.tasks import load_task
from bbox_lfm.testing.faults import KINDS, FaultProxy

from ._util import comparable, differences, local_client

pytestmark = pytest.mark.slow

STALL_S, TIMEOUT_S = 16.0, 15.0  # past the timeout; the timeout well past a slow answer on a shared CPU


def _eval(base_url: str, model_id: str, cache: Path) -> tuple[dict, dict]:
    task = load_task("sample")
    method = get("zero-shot")(prompt="", template=task.template, label_words=task.label_words)
    with local_client(base_url, model_id, cache, max_batch=1, timeout=TIMEOUT_S) as client:
        result = run(method, client, task, seed=13, progress=False)
    return comparable(result), result.to_json()


def test_eval_through_faults_equals_the_clean_run(local_server, tmp_path: Path) -> None:
    clean, _ = _eval(local_server.base_url, local_server.model_id, tmp_path / "clean.sqlite")
    with FaultProxy(local_server.base_url, every=5, stall_s=STALL_S) as proxy:
        faulty, raw = _eval(proxy.base_url, local_server.model_id, tmp_path / "faulty.sqlite")
    seen = proxy.summary()
    assert set(seen["injected"]) == set(KINDS), seen  # every kind of fault met at least once
    assert differences(faulty, clean) == []  # same metrics, same calls, sequences, tokens and dollars
    retries = raw["budget_spent"]["retries"] + raw["eval_spent"]["retries"]
    assert retries >= seen["faults"]  # each fault cost one retry (a slow answer may cost more)


def test_bdpl_through_faults_equals_the_clean_run(local_server, tmp_path: Path) -> None:
    task = load_task("sample")

    def tune(base_url: str, cache: Path) -> tuple[dict, dict]:
        method = get("bdpl")(prompt_length=2, n_candidates=4, sample_size=3, budget=9, eval_every=6, seed=13)
        with local_client(base_url, local_server.model_id, cache, max_batch=4, timeout=TIMEOUT_S) as client:
            result = run(method, client, task, seed=13, progress=False)
        return comparable(result), result.to_json()

    clean, _ = tune(local_server.base_url, tmp_path / "clean.sqlite")
    with FaultProxy(local_server.base_url, every=5, stall_s=STALL_S) as proxy:
        faulty, raw = tune(proxy.base_url, tmp_path / "faulty.sqlite")
    assert proxy.summary()["faults"] >= 3, proxy.summary()
    assert differences(faulty, clean) == []  # same prompt, same curve, same budget
    assert raw["budget_spent"]["retries"] + raw["eval_spent"]["retries"] >= proxy.summary()["faults"]
