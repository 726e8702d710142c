"""Client construction, fan-out, capabilities, rate limiting, scoring strategies."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest

import bbox_lfm
from bbox_lfm import Client, MockAdapter, Query
from bbox_lfm.errors import CapabilityError, ConfigError
from bbox_lfm.layers.ratelimit import RateLimitLayer
from bbox_lfm.profiles import available_profiles, load_profile
from bbox_lfm.types import Choice, Response, TokenLogprobs, Usage


def echo_handler(q: Query) -> Response:
    return Response(choices=tuple(Choice(index=i, text=p) for i, p in enumerate(q.prompt)), usage=Usage())


def test_exports_sorted_and_importable() -> None:
    assert bbox_lfm.__all__ == sorted(bbox_lfm.__all__)
    for name in bbox_lfm.__all__:
        assert getattr(bbox_lfm, name) is not None


def test_import_is_light() -> None:
    code = ("import sys, bbox_lfm; bbox_lfm.Client; "
            "print(sorted(m for m in ('torch','transformers','openai','numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_profiles_ship_and_load() -> None:
    assert {"openai", "vllm", "llama-cpp", "bbox-lfm", "generic"} <= set(available_profiles())
    assert load_profile("bbox-lfm").capabilities.soft_prompt
    assert load_profile("openai").capabilities.chat_max_top_logprobs == 20
    assert load_profile("openai").capabilities.max_top_logprobs == 5
    with pytest.raises(ConfigError, match="provider must be one of"):
        load_profile("nope")


def test_user_profile_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mine.toml").write_text('name = "mine"\nbase_url = "http://h/v1"\n[capabilities]\necho = true\n')
    monkeypatch.setenv("BBOX_LFM_PROVIDERS_DIR", str(tmp_path))
    assert "mine" in available_profiles()
    assert load_profile("mine").capabilities.echo


def test_env_key_and_placeholder(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"api_key must be given or set in \$OPENAI_API_KEY"):
        Client(provider="openai", cache_mode="off")
    c = Client("http://127.0.0.1:8000/v1", cache_mode="off")  # local: placeholder key, bbox-lfm profile
    assert c.profile.name == "bbox-lfm"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://10.0.0.5:8000/v1")
    assert Client(cache_mode="off").profile.name == "generic"


def test_send_many_keeps_order_and_runs_concurrently() -> None:
    adapter = MockAdapter(echo_handler, latency_s=0.05)
    c = Client("http://mock/v1", adapter=adapter, provider="generic", model="m", cache_mode="off")
    qs = [Query(prompt=f"p{i}") for i in range(40)]
    t0 = time.perf_counter()
    out = c.send_many(qs, max_concurrency=20)
    wall = time.perf_counter() - t0
    assert [r.text for r in out] == [f"p{i}" for i in range(40)]
    assert wall < 40 * 0.05 / 4


def test_send_many_raises_the_first_failure_after_the_rest_finished() -> None:
    def handler(q: Query) -> Response:
        if q.prompt[0] in ("p3", "p7"):
            raise ValueError(q.prompt[0])
        return echo_handler(q)

    adapter = MockAdapter(handler)
    c = Client("http://mock/v1", adapter=adapter, provider="generic", model="m", cache_mode="off")
    with pytest.raises(ValueError, match="p3"):
        c.send_many([Query(prompt=f"p{i}") for i in range(10)], max_concurrency=4)
    assert adapter.calls == 10


def test_model_is_required() -> None:
    c = Client("http://mock/v1", adapter=MockAdapter(echo_handler), provider="generic", cache_mode="off")
    with pytest.raises(ConfigError, match="model must be given"):
        c.send(Query(prompt="x"))


def test_capability_error_names_the_capability() -> None:
    c = Client("http://mock/v1", adapter=MockAdapter(echo_handler), provider="openai", api_key="sk-x",
               cache_mode="off")
    with pytest.raises(CapabilityError, match="BBT needs the capability 'soft_prompt'.*'openai'"):
        c.require("soft_prompt", needed_by="BBT")
    with pytest.raises(CapabilityError, match="top_logprobs >= 100"):
        c.require(min_top_logprobs=100)
    c.require("logprobs", min_top_logprobs=20)


def test_rate_limiter_with_injected_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    layer = RateLimitLayer(MockAdapter(echo_handler), requests_per_minute=60, clock=lambda: now[0], sleep=sleep)
    for i in range(65):
        layer.send(Query(prompt=f"p{i}", model="m"))
    # a full minute's allowance is banked, then one request a second
    assert len(slept) == 5 and all(s == pytest.approx(1.0) for s in slept)


def test_token_rate_limit() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    layer = RateLimitLayer(MockAdapter(echo_handler), tokens_per_minute=600, clock=lambda: now[0], sleep=sleep)
    q = Query(prompt="x" * 200, model="m", max_tokens=0)  # estimate ~202 tokens, usage reports 0
    for _ in range(3):
        layer.send(q)
    assert slept == []  # 3 x 202 > 600 but the unused estimate is refunded after each answer


def _topk_handler(q: Query) -> Response:
    top = {" great": math.log(0.6), " good": math.log(0.2), "Great": math.log(0.1)}
    lp = TokenLogprobs(tokens=(" great",), token_logprobs=(math.log(0.6),), top_logprobs=(top,))
    return Response(choices=tuple(Choice(index=i, text=" great", logprobs=lp) for i in range(len(q.prompt))),
                    usage=Usage(prompt_tokens=1, completion_tokens=1))


def test_score_topk_with_floor_and_misses() -> None:
    c = Client("http://mock/v1", adapter=MockAdapter(_topk_handler), provider="vllm", model="m", cache_mode="off")
    s = c.score(["a", "b"], [" great", " terrible", "good"], strategy="topk")
    assert s.strategy == "topk" and s.misses == 2
    np.testing.assert_allclose(s.logprobs[0], [math.log(0.6), math.log(0.1), math.log(0.2)])
    assert list(s.predictions()) == [0, 0]


def test_score_exact_uses_label_words() -> None:
    def handler(q: Query) -> dict:
        assert q.max_tokens == 0 and q.extra["label_words"] == [" no", " yes"]
        return {"choices": [{"index": i, "text": "", "label_logprobs": [-float(i), -1.0]}
                            for i in range(len(q.prompt))]}

    adapter = MockAdapter(handler)
    c = Client("http://mock/v1", adapter=adapter, provider="bbox-lfm", model="m", cache_mode="off")
    s = c.score([f"p{i}" for i in range(300)], [" no", " yes"])
    assert s.strategy == "exact" and s.logprobs.shape == (300, 2)
    assert adapter.calls == 2  # max_batch 256: two requests
    assert s.logprobs[2, 0] == -2.0 and s.logprobs[256, 0] == 0.0


def test_score_exact_needs_the_capability() -> None:
    c = Client("http://mock/v1", adapter=MockAdapter(_topk_handler), provider="vllm", model="m", cache_mode="off")
    with pytest.raises(CapabilityError, match="label_words"):
        c.score(["a"], [" x"], strategy="exact")
