"""The shipped profiles against servers that behave as each one's documentation says (respx).

Each emulated server answers the way its documentation (and, for llama.cpp, the real
llama-cpp-python server probed in ``test_llama_cpp_server.py``) says: how many top logprobs it
returns or refuses, what ``echo`` and ``max_tokens=0`` do, whether a list of prompts is one
request. ``providers probe`` against the emulation must find the shipped profile's values, and
the client must count label-word tokens and score through that profile.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx
import pytest
import respx

from bbox_lfm import Client
from bbox_lfm.probe import probe, write_probed_profile
from bbox_lfm.profiles import load_profile, probed_profile, probed_profile_path
from bbox_lfm.tasks.spec import count_tokens

BASE = "http://server.test/v1"


@dataclass(frozen=True)
class Behaviour:
    """What a server does with the requests bbox-lfm sends (the documented facts)."""

    models: tuple[str, ...]
    max_logprobs: int          # Completions: more is refused with HTTP 400
    chat_max_logprobs: int     # Chat: more is refused with HTTP 400
    echo: str                  # "yes", "ignored" (answer without the prompt), "refused_with_logprobs"
    zero: str                  # max_tokens=0: "scores" (prompt only), "generates" (no limit), "refused"
    prompt_list: bool          # a list of prompts: one choice each
    echo_shifted: bool = False  # echoed log-probabilities off by one position (llama-cpp-python 0.3)


BEHAVIOURS = {
    # vLLM: --max-logprobs 20; echo with max_tokens=0 returns only the prompt; prompt lists
    "vllm": Behaviour(("Qwen/Qwen2.5-0.5B",), 20, 20, "yes", "scores", True),
    # llama-cpp-python's server: what test_llama_cpp_server.py found on the real one
    "llama-cpp": Behaviour(("SmolLM2.gguf",), 100, 100, "yes", "generates", False, echo_shifted=True),
    # Ollama: top_logprobs up to 20; echo not a documented field; "prompt only accepts a string"
    "ollama": Behaviour(("llama3.2", "qwen2.5:0.5b"), 20, 20, "ignored", "generates", False),
    # OpenAI: Completions logprobs <= 5 and no echo with logprobs; Chat top_logprobs <= 20
    "openai": Behaviour(("gpt-3.5-turbo-instruct", "gpt-4o-mini"), 5, 20, "refused_with_logprobs", "refused", True),
}
MODEL = {"vllm": None, "llama-cpp": None, "ollama": "llama3.2", "openai": "gpt-3.5-turbo-instruct"}


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [text]


def _top(k: int) -> dict[str, float]:
    return {f" w{i}": -1.0 - i for i in range(k)}


def _error(msg: str) -> httpx.Response:
    return httpx.Response(400, json={"error": {"message": msg, "type": "invalid_request_error"}})


class Emulator:
    def __init__(self, b: Behaviour):
        self.b = b
        self.bodies: list[dict] = []

    def completions(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        b, k = self.b, body.get("logprobs")
        if k is not None and k > b.max_logprobs:
            return _error(f"logprobs must be <= {b.max_logprobs}")
        if body.get("echo") and k is not None and b.echo == "refused_with_logprobs":
            return _error("Setting 'echo' and 'logprobs' at the same time is not supported for this model.")
        if body["max_tokens"] == 0 and b.zero == "refused":
            return _error("max_tokens must be at least 1")
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if len(prompts) > 1 and not b.prompt_list:  # llama-cpp-python asserts one prompt: HTTP 500
            return httpx.Response(500, json={"error": {"message": "AssertionError"}})
        n_gen = body["max_tokens"] or (7 if b.zero == "generates" else 0)
        choices, n_prompt = [], 0
        for i, p in enumerate(prompts):
            echo = bool(body.get("echo")) and b.echo == "yes"
            toks = (_tokens(p) if echo else []) + [" w0"] * n_gen
            n_prompt += len(_tokens(p))
            value = -1.5 if echo and b.echo_shifted else -1.0  # the top-k says -1 for every token
            lp = None if k is None else {"tokens": toks, "token_logprobs": [value] * len(toks),
                                         "top_logprobs": [_top(k) for _ in toks], "text_offset": [0] * len(toks)}
            choices.append({"index": i, "text": "".join(toks), "finish_reason": "length", "logprobs": lp})
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_gen * len(prompts)}
        return httpx.Response(200, json={"id": "c", "object": "text_completion", "model": body["model"],
                                         "choices": choices, "usage": usage})

    def chat(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        k = body.get("top_logprobs")
        if k is not None and k > self.b.chat_max_logprobs:
            return _error(f"top_logprobs must be <= {self.b.chat_max_logprobs}")
        content = [{"token": " w0", "logprob": -1.0,
                    "top_logprobs": [{"token": t, "logprob": v} for t, v in _top(k or 0).items()]}]
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " w0"}, "finish_reason": "length",
                         "logprobs": {"content": content} if body.get("logprobs") else None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1}})

    def install(self, router: respx.Router) -> None:
        router.get(f"{BASE}/models").mock(return_value=httpx.Response(
            200, json={"object": "list", "data": [{"id": m, "object": "model"} for m in self.b.models]}))
        router.post(f"{BASE}/completions").mock(side_effect=self.completions)
        router.post(f"{BASE}/chat/completions").mock(side_effect=self.chat)


PROBED = ("completions", "logprobs", "max_top_logprobs", "chat_logprobs", "chat_max_top_logprobs", "echo",
          "echo_max_tokens", "echo_logprobs", "max_batch")


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_probe_finds_the_shipped_profile(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    emu = Emulator(BEHAVIOURS[name])
    with respx.mock(assert_all_called=False) as router:
        emu.install(router)
        with Client(BASE, provider=name, cache_mode="off", max_attempts=1, model=MODEL[name]) as client:
            result = probe(client)
    shipped = load_profile(name).capabilities
    found = {k: result.capabilities[k] for k in PROBED}
    expected = {k: getattr(shipped, k) for k in PROBED}
    if found["max_batch"] > 1:  # the probe tries lists of 2 and 16; the profile may allow more
        expected["max_batch"] = min(expected["max_batch"], 16)
    assert found == expected
    assert result.requests <= 15 and all(b.get("max_tokens", 0) <= 1 for b in emu.bodies)
    assert result.model_named == (MODEL[name] is not None)
    path = write_probed_profile(load_profile(name), result)
    assert path == probed_profile_path(BASE) and probed_profile(BASE).capabilities.echo == shipped.echo


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_token_counting_and_scoring_follow_the_profile(name: str, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    emu = Emulator(BEHAVIOURS[name])
    with respx.mock(assert_all_called=False) as router:
        emu.install(router)
        with Client(BASE, provider=name, cache_mode="off", model=MODEL[name]) as client:
            counts = count_tokens(client, [" positive", " very negative"])
            endpoint = "completions" if client.capabilities.logprobs else "chat"
            scores = client.score(["a b", "c d", "e f"], [" w1", " w3"], endpoint=endpoint, strategy="topk")
            auto = client.score(["a b", "c d"], [" w1", " w3 w4"],
                                strategy="echo" if client.capabilities.echo_logprobs else "auto")
            chat = client.score(["a b"], [" w1", " w3"], endpoint="chat")
    prof = load_profile(name).capabilities
    if prof.echo:
        assert counts == [1, 2]  # the generated token(s) set aside, whatever max_tokens=0 means
        sent = [b for b in emu.bodies if b.get("echo")]
        assert sent and all(b["max_tokens"] == prof.echo_max_tokens for b in sent)
    else:
        assert counts is None and not any(b.get("echo") for b in emu.bodies)
    assert scores.logprobs.shape == (3, 2) and scores.misses == 0
    # with echo, scores are exact: prompt + word echoed, the word's tokens summed (-1 each here)
    assert auto.strategy == ("echo" if prof.echo_logprobs else "topk")
    if prof.echo_logprobs:
        assert auto.logprobs.tolist() == [[-1.0, -2.0], [-1.0, -2.0]] and auto.misses == 0
    asked = [b for b in emu.bodies if "logprobs" in b and "messages" not in b and not b.get("echo")]
    assert all(b["logprobs"] == prof.max_top_logprobs for b in asked)
    assert all(len([b["prompt"]] if isinstance(b["prompt"], str) else b["prompt"]) <= prof.max_batch for b in asked)
    chat_bodies = [b for b in emu.bodies if "messages" in b]
    assert chat.logprobs.shape == (1, 2) and chat_bodies[-1]["top_logprobs"] == prof.chat_max_top_logprobs


def test_the_one_served_model_is_used_and_said(monkeypatch, caplog) -> None:
    emu = Emulator(BEHAVIOURS["llama-cpp"])
    with respx.mock(assert_all_called=False) as router:
        emu.install(router)
        with Client(BASE, provider="llama-cpp", cache_mode="off") as client:
            assert client.model is None
            with caplog.at_level("INFO", logger="bbox_lfm.client"):
                client.score(["a b"], [" w1", " w3"])
            assert client.model == "SmolLM2.gguf" and client.model_source == "the one model the server lists"
    assert emu.bodies[-1]["model"] == "SmolLM2.gguf" and "SmolLM2.gguf" in caplog.text


def test_several_served_models_and_none_named_is_a_clear_error() -> None:
    from bbox_lfm.errors import ConfigError

    emu = Emulator(BEHAVIOURS["ollama"])
    with respx.mock(assert_all_called=False) as router:
        emu.install(router)
        with Client(BASE, provider="ollama", cache_mode="off") as client, \
                pytest.raises(ConfigError, match=r"lists 2 models \['llama3.2', 'qwen2.5:0.5b'\]"):
            client.score(["a b"], [" w1"])
    assert emu.bodies == []


def test_a_probed_profile_wins_for_its_url_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(tmp_path))
    emu = Emulator(BEHAVIOURS["llama-cpp"])
    with respx.mock(assert_all_called=False) as router:
        emu.install(router)
        with Client(BASE, provider="generic", cache_mode="off", max_attempts=1) as client:
            result = probe(client)
        write_probed_profile(load_profile("generic"), result)
    used = Client(BASE, cache_mode="off", adapter=object())  # type: ignore[arg-type]
    assert used.profile.probed and used.profile.capabilities.echo_max_tokens == 1
    assert used.profile.capabilities.echo and not load_profile("generic").capabilities.echo
    assert not Client("http://other.test/v1", cache_mode="off", adapter=object()).profile.probed  # type: ignore[arg-type]
    named = Client(BASE, provider="openai", api_key="sk-x", cache_mode="off", adapter=object())  # type: ignore[arg-type]
    assert named.profile.probed and named.profile.name == "openai" and named.capabilities.echo_max_tokens == 1
    assert named.profile.prices == load_profile("openai").prices  # the named profile's prices stay
    assert not Client(BASE, cache_mode="off", adapter=object(), probed=False).profile.probed  # type: ignore[arg-type]


def test_vllm_end_to_end_for_the_text_prompt_methods(tmp_path, monkeypatch) -> None:
    """The documented vLLM commands (docs/providers.md) on an emulated vLLM: eval and tune bdpl
    run with --provider vllm and no --model, the whole batch in one request per call."""
    from bbox_lfm.cli import main

    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(tmp_path))
    emu = Emulator(BEHAVIOURS["vllm"])
    common = ["--task", "sample", "--base-url", BASE, "--provider", "vllm", "--no-progress"]
    with respx.mock(assert_all_called=False) as router:
        emu.install(router)
        assert main(["eval", *common, "--template-index", "1", "--limit", "8", "--out", str(tmp_path / "e.json")]) == 0
        assert main(["tune", "bdpl", *common, "--budget", "4", "--set", "sample_size=2", "--eval-limit", "8",
                     "--out", str(tmp_path / "t.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    tuned = json.loads((tmp_path / "t.json").read_text())
    assert ev["model"] == "Qwen/Qwen2.5-0.5B" and ev["provider"] == "vllm" and ev["eval"]["n"] == 8
    assert tuned["budget_spent"]["calls"] == 4 == tuned["budget_spent"]["requests"]  # 16 prompts in each
    assert all(b["model"] == "Qwen/Qwen2.5-0.5B" for b in emu.bodies)


def test_probe_of_bbox_lfms_own_server_finds_its_profile(local_server, tmp_path, monkeypatch) -> None:
    """A real server: the probe agrees with the shipped bbox-lfm profile, extensions included."""
    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(tmp_path))
    with Client(local_server.base_url, provider="bbox-lfm", cache_mode="off", max_attempts=1) as client:
        result = probe(client)
    shipped = load_profile("bbox-lfm").capabilities
    expected = {k: getattr(shipped, k) for k in PROBED}
    expected["max_batch"] = 16
    assert {k: result.capabilities[k] for k in PROBED} == expected, result.evidence
    assert result.max_tokens_zero == "scores" and result.capabilities["soft_prompt"]
