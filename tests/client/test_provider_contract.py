"""Every shipped provider profile against a respx mock that enforces that profile's documented
limits (prompts per request, top logprobs, echo, the bbox-lfm extensions): whatever the client
sends for scoring and generation must be accepted, and what the provider cannot do must be
refused with CapabilityError before any request goes out."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bbox_lfm import Client
from bbox_lfm.errors import CapabilityError
from bbox_lfm.profiles import ProviderProfile, load_profile

BASE = "https://provider.test/v1"
PROFILES = sorted((Path(__file__).resolve().parents[2] / "providers").glob("*.toml"))
WORDS = [" bad", " good"]
PROMPTS = [f"review {i} It was" for i in range(5)]


def _reject(message: str) -> httpx.Response:
    return httpx.Response(400, json={"error": {"message": message, "type": "invalid_request_error"}})


class LimitedProvider:
    """Answers like an OpenAI-compatible server with ``profile``'s limits, refusing beyond them."""

    def __init__(self, profile: ProviderProfile) -> None:
        self.caps = profile.capabilities
        self.bodies: list[dict[str, Any]] = []

    def completions(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        caps = self.caps
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if not caps.completions:
            return httpx.Response(404, json={"error": {"message": "no completions"}})
        if len(prompts) > caps.max_batch:
            return _reject(f"at most {caps.max_batch} prompts per request; got {len(prompts)}")
        if (body.get("logprobs") or 0) > caps.max_top_logprobs:
            return _reject(f"logprobs must be <= {caps.max_top_logprobs}")
        if body.get("echo") and not caps.echo:
            return _reject("echo is not supported")
        for ext in ("label_words", "soft_prompt", "deep_prompt"):
            if ext in body and not caps.has(ext):
                return _reject(f"unknown field {ext}")
        if body.get("echo") and body.get("max_tokens") == 0 and caps.echo_max_tokens > 0:
            return _reject("max_tokens=0 means no limit here; echo needs max_tokens >= 1")
        choices = []
        generated = 0
        for i, prompt in enumerate(prompts):
            choice: dict[str, Any] = {"index": i, "text": " good", "finish_reason": "length", "logprobs": None}
            if body.get("logprobs"):
                # echo: the prompt's words as tokens, then the generated one (if any)
                tokens = (re.findall(r"\s*\S+", prompt) if body.get("echo") else []) + \
                    ([" good"] if body.get("max_tokens") else [])
                generated = 1 if body.get("max_tokens") else 0
                choice["logprobs"] = {"tokens": tokens, "token_logprobs": [-0.2] * len(tokens),
                                      "text_offset": list(range(len(tokens))),
                                      "top_logprobs": [{" good": -0.2, " bad": -1.8}] * len(tokens)}
            if "label_words" in body:
                choice["label_logprobs"] = [-1.8, -0.2]
            choices.append(choice)
        return httpx.Response(200, json={"id": "c", "object": "text_completion", "created": 0, "model": "m",
                                         "choices": choices,
                                         "usage": {"prompt_tokens": 3, "completion_tokens": generated,
                                                   "total_tokens": 3 + generated}})

    def chat(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if not self.caps.chat:
            return httpx.Response(404, json={"error": {"message": "no chat"}})
        limit = self.caps.chat_max_top_logprobs
        if (body.get("top_logprobs") or 0) > limit:
            return _reject(f"top_logprobs must be <= {limit}")
        logprobs = None
        if body.get("logprobs"):
            top = [{"token": "good", "logprob": -0.2, "bytes": None}, {"token": "bad", "logprob": -1.8, "bytes": None}]
            logprobs = {"content": [{"token": "good", "logprob": -0.2, "bytes": None,
                                     "top_logprobs": top[:body.get("top_logprobs") or 0]}]}
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "good"}, "logprobs": logprobs,
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


@pytest.fixture(params=PROFILES, ids=[p.stem for p in PROFILES])
def provider(request: pytest.FixtureRequest) -> Any:
    profile = load_profile(request.param)
    fake = LimitedProvider(profile)
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE}/completions").mock(side_effect=fake.completions)
        mock.post(f"{BASE}/chat/completions").mock(side_effect=fake.chat)
        client = Client(BASE, api_key="sk-test", provider=profile, model="m", cache_mode="off",
                        max_attempts=1, sleep=lambda s: None)
        yield profile, fake, client
        client.close()


def test_scoring_fits_the_limits(provider: Any) -> None:
    profile, fake, client = provider
    caps = profile.capabilities
    scores = client.score(PROMPTS, WORDS)
    assert scores.logprobs.shape == (len(PROMPTS), 2) and list(scores.predictions()) == [1] * len(PROMPTS)
    assert len(fake.bodies) == math.ceil(len(PROMPTS) / max(1, caps.max_batch))
    if caps.chat and caps.logprobs:
        chat = client.score(PROMPTS[:2], WORDS, endpoint="chat", strategy="topk", top_k=50)
        assert list(chat.predictions()) == [1, 1]


def test_generation_fits_the_limits(provider: Any) -> None:
    profile, fake, client = provider
    assert client.generate(PROMPTS, max_tokens=2) == [" good"] * len(PROMPTS)
    assert client.generate(PROMPTS[:1], endpoint="chat", max_tokens=2) == ["good"]
    assert len(fake.bodies) == math.ceil(len(PROMPTS) / max(1, profile.capabilities.max_batch)) + 1


def test_what_the_profile_lacks_is_refused_before_sending(provider: Any) -> None:
    profile, fake, client = provider
    caps = profile.capabilities
    for name in ("label_words", "soft_prompt", "deep_prompt", "hidden_stats", "echo"):
        if not caps.has(name):
            with pytest.raises(CapabilityError, match=name):
                client.require(name)
    if not caps.label_words:
        with pytest.raises(CapabilityError, match="label_words"):
            client.score(PROMPTS, WORDS, strategy="exact")
    assert fake.bodies == []


def test_echo_is_used_only_where_the_profile_has_it(provider: Any) -> None:
    """Token counting echoes the prompt with the profile's max_tokens (0, or 1 where 0 means no
    limit); a profile without echo is not asked at all."""
    from bbox_lfm.tasks.spec import count_tokens

    profile, fake, client = provider
    counts = count_tokens(client, [" great", " not bad"])
    if profile.capabilities.echo and profile.capabilities.completions:
        assert counts == [1, 2]
        assert all(b["echo"] and b["max_tokens"] == profile.capabilities.echo_max_tokens for b in fake.bodies)
    else:
        assert counts is None and fake.bodies == []
