"""The OpenAI-compatible adapter against responses shaped like OpenAI's documentation (respx)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from bbox_lfm import Budget, Client, Query
from bbox_lfm.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    TruncatedResponseError,
)

BASE = "https://api.example.test/v1"
KEY = "sk-test-SECRET-0123456789abcdef"

COMPLETION = {  # the legacy Completions answer as documented, with logprobs and echo
    "id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "gpt-3.5-turbo-instruct",
    "choices": [
        {"text": " great", "index": 0, "finish_reason": "length",
         "logprobs": {"tokens": [" great"], "token_logprobs": [-0.1], "text_offset": [10],
                      "top_logprobs": [{" great": -0.1, " good": -2.5}]}},
        {"text": " bad", "index": 1, "finish_reason": "length",
         "logprobs": {"tokens": [" bad"], "token_logprobs": [-0.3], "text_offset": [8],
                      "top_logprobs": [{" bad": -0.3, " terrible": -1.9}]}},
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}

CHAT = {  # the Chat Completions answer as documented, with logprobs.content and top_logprobs
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "system_fingerprint": "fp_1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "great", "refusal": None},
                 "logprobs": {"content": [{"token": "great", "logprob": -0.05, "bytes": [103, 114, 101, 97, 116],
                                           "top_logprobs": [{"token": "great", "logprob": -0.05, "bytes": None},
                                                            {"token": "good", "logprob": -3.2, "bytes": None}]}],
                              "refusal": None},
                 "finish_reason": "length"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
}


def make_client(**kw: object) -> Client:
    kw.setdefault("sleep", lambda s: None)
    return Client(BASE, api_key=KEY, provider="openai", model="gpt-4o-mini", cache_mode="off", **kw)  # type: ignore[arg-type]


@respx.mock
def test_completions_list_of_prompts_in_one_request() -> None:
    route = respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, json=COMPLETION))
    with make_client() as c:
        r = c.send(Query(prompt=("a b c", "d e"), max_tokens=1, logprobs=5, echo=True,
                         extra={"custom_engine_field": 7}))
    body = json.loads(route.calls.last.request.content)
    assert body["prompt"] == ["a b c", "d e"] and body["logprobs"] == 5 and body["echo"] is True
    assert body["custom_engine_field"] == 7  # extra fields travel in the body like extra_body
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"
    assert [ch.text for ch in r.choices] == [" great", " bad"]
    assert r.choices[0].logprobs is not None and r.choices[0].logprobs.top_logprobs[0][" good"] == -2.5
    assert r.usage.total_tokens == 14 and r.attempts == 1 and not r.cache_hit
    assert r.cost_usd == pytest.approx((12 * 0.15 + 2 * 0.60) / 1e6)


@respx.mock
def test_chat_logprobs_and_top_logprobs() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=CHAT))
    with make_client() as c:
        r = c.send(Query(endpoint="chat", messages=({"role": "user", "content": "hi"},), max_tokens=1,
                         logprobs=1, top_logprobs=2))
    body = json.loads(route.calls.last.request.content)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert r.text == "great"
    assert r.choices[0].logprobs is not None
    assert dict(r.choices[0].logprobs.top_logprobs[0]) == {"great": -0.05, "good": -3.2}


@respx.mock
def test_a_truncated_body_is_a_transport_fault_retried_and_counted() -> None:
    whole = json.dumps(COMPLETION).encode()
    route = respx.post(f"{BASE}/completions").mock(side_effect=[
        httpx.Response(200, content=whole[:len(whole) // 2]), httpx.Response(200, content=b"<html>bad gateway</html>"),
        httpx.Response(200, content=whole)])
    budget = Budget(requests=1)
    with make_client(budget=budget) as c:
        r = c.send(Query(prompt="x"))
    assert route.call_count == 3 and r.attempts == 3 and r.text == " great"
    assert budget.summary()["requests"] == 1 and budget.summary()["retries"] == 2


@respx.mock
def test_a_body_that_stays_truncated_fails_after_bounded_attempts() -> None:
    route = respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, content=b'{"choices": [{"te'))
    budget = Budget()
    with make_client(max_attempts=3, budget=budget) as c, \
            pytest.raises(TruncatedResponseError, match="not JSON") as info:
        c.send(Query(prompt="x"))
    assert isinstance(info.value, APIConnectionError) and not isinstance(info.value, MalformedResponseError)
    assert route.call_count == 3 and info.value.attempts == 3
    assert budget.summary()["requests"] == 1 and budget.summary()["retries"] == 2


@respx.mock
def test_wrong_shape_is_a_clear_error_not_retried() -> None:
    route = respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, json={"choices": 3}))
    with make_client() as c, pytest.raises(MalformedResponseError, match="documented shape"):
        c.send(Query(prompt="x"))
    assert route.call_count == 1  # whole and still wrong: a provider error, sending it again would not help


@respx.mock
def test_429_honours_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    route = respx.post(f"{BASE}/completions").mock(side_effect=[
        httpx.Response(429, headers={"retry-after": "7"}, json={"error": {"message": "slow down"}}),
        httpx.Response(429, headers={"retry-after-ms": "250"}, json={"error": {"message": "slow down"}}),
        httpx.Response(200, json=COMPLETION),
    ])
    with make_client(sleep=sleeps.append) as c:
        r = c.send(Query(prompt="x"))
    assert route.call_count == 3 and r.attempts == 3
    assert sleeps == [7.0, 0.25]


@respx.mock
def test_500_burst_is_retried_and_counted_once_in_the_budget() -> None:
    route = respx.post(f"{BASE}/completions").mock(side_effect=[httpx.Response(500), httpx.Response(502),
                                                                httpx.Response(503), httpx.Response(200, json=COMPLETION)])
    budget = Budget(requests=1)
    with make_client(budget=budget) as c:
        r = c.send(Query(prompt="x"))
    assert route.call_count == 4 and r.attempts == 4
    assert budget.summary()["requests"] == 1


@respx.mock
def test_retries_give_up_with_the_last_error() -> None:
    respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(503, json={"error": {"message": "down"}}))
    with make_client(max_attempts=3) as c, pytest.raises(ServerError, match="503"):
        c.send(Query(prompt="x"))


@respx.mock
def test_timeouts_are_retried() -> None:
    route = respx.post(f"{BASE}/completions").mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json=COMPLETION)])
    with make_client() as c:
        assert c.send(Query(prompt="x")).attempts == 2
    assert route.call_count == 2
    respx.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ConnectTimeout("slow"))
    with make_client(max_attempts=2) as c, pytest.raises(APITimeoutError):
        c.send(Query(endpoint="chat", messages=({"role": "user", "content": "x"},)))


@respx.mock
def test_connection_errors_are_retried_then_raised() -> None:
    route = respx.post(f"{BASE}/completions").mock(side_effect=httpx.ConnectError("refused"))
    with make_client(max_attempts=3) as c, pytest.raises(APIConnectionError):
        c.send(Query(prompt="x"))
    assert route.call_count == 3


@pytest.mark.parametrize("status,exc", [(400, BadRequestError), (404, BadRequestError), (422, BadRequestError),
                                        (401, AuthenticationError), (403, AuthenticationError)])
@respx.mock
def test_client_errors_fail_at_once(status: int, exc: type) -> None:
    route = respx.post(f"{BASE}/completions").mock(
        return_value=httpx.Response(status, json={"error": {"message": "bad field max_tokens", "param": "max_tokens"}}))
    with make_client() as c, pytest.raises(exc, match="bad field max_tokens"):
        c.send(Query(prompt="x"))
    assert route.call_count == 1


@respx.mock
def test_rate_limit_error_type_after_retries() -> None:
    respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(429, json={"error": {"message": "quota"}}))
    with make_client(max_attempts=2) as c, pytest.raises(RateLimitError):
        c.send(Query(prompt="x"))


@respx.mock
def test_api_key_never_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # OpenAI's 401 quotes the key back (masked); we also echo the raw key to be sure it is scrubbed
    msg = f"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."
    respx.post(f"{BASE}/completions").mock(return_value=httpx.Response(401, json={"error": {"message": msg}}))
    respx.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ConnectError(f"refused for key {KEY}"))
    with make_client(max_attempts=2) as c:
        with pytest.raises(AuthenticationError) as e1:
            c.send(Query(prompt="x"))
        with pytest.raises(APIConnectionError) as e2:
            c.send(Query(endpoint="chat", messages=({"role": "user", "content": "x"},)))
    for text in (str(e1.value), str(e2.value), repr(e1.value), caplog.text):
        assert KEY not in text and "SECRET" not in text
    assert "Incorrect API key provided" in str(e1.value)


@respx.mock
def test_models_are_retried_like_queries() -> None:
    route = respx.get(f"{BASE}/models").mock(side_effect=[
        httpx.Response(503), httpx.Response(200, content=b'{"object": "li'),
        httpx.Response(200, json={"object": "list", "data": [{"id": "m1", "object": "model"}]})])
    with make_client() as c:
        assert c.models()[0]["id"] == "m1"
    assert route.call_count == 3


@respx.mock
def test_models_lists_metadata() -> None:
    respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json={"object": "list", "data": [
        {"id": "m1", "object": "model", "created": 0, "owned_by": "x", "metadata": {"hidden_size": 576}}]}))
    with make_client() as c:
        assert c.models()[0]["metadata"]["hidden_size"] == 576
