"""The local provider against the official openai client: real model, real server."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from bbox_lfm.serve import LocalServer, encode_tensor, start_local
from bbox_lfm.serve.loading import LoadedModel, converted_dir, default_gguf, load_model

PROMPTS = [
    "Review: a charming and often affecting journey. Sentiment:",
    "Review: unflinchingly bleak and desperate. Sentiment:",
    "Review: the acting is superb. Sentiment:",
    "Review: it is a mess from start to finish. Sentiment:",
]
WORDS = [" positive", " negative", " mixed feelings"]  # the last one has several tokens


@pytest.fixture(scope="session")
def direct(local_server: LocalServer) -> LoadedModel:
    """A second copy of the served model, in the server's dtype, for direct forward passes."""
    engine = local_server.app.service.engine
    return load_model(dtype=str(engine.dtype).removeprefix("torch."))  # type: ignore[arg-type]


def direct_logprobs(direct: LoadedModel, ids: list[int]) -> np.ndarray:
    """(len(ids), V) next-token log-probs of one unpadded sequence."""
    import torch

    with torch.inference_mode():
        logits = direct.model(torch.tensor([ids], device=direct.device)).logits
    return torch.log_softmax(logits.float(), dim=-1)[0].cpu().numpy()


def encode(direct: LoadedModel, text: str, specials: bool = True) -> list[int]:
    return list(direct.tokenizer(text, add_special_tokens=specials)["input_ids"])


def post(server: LocalServer, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=60, **kw)


def label_logprobs(client: Any, server: LocalServer, prompts: list[str], **extra: Any) -> np.ndarray:
    response = client.completions.create(
        model=server.model_id,
        prompt=prompts,
        max_tokens=0,
        extra_body={"label_words": WORDS, **extra},
    )
    return np.array([c.model_extra["label_logprobs"] for c in response.choices])


def test_import_is_light() -> None:
    code = "import sys, bbox_lfm.serve; assert 'torch' not in sys.modules; assert 'fastapi' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lists_and_retrieves_the_model(openai_client: Any, local_server: LocalServer) -> None:
    import openai

    ids = [m.id for m in openai_client.models.list()]
    assert ids == ["SmolLM2-135M-Instruct"]
    card = openai_client.models.retrieve(local_server.model_id)
    meta = card.model_extra["metadata"]
    assert card.owned_by == "bbox-lfm"
    assert (meta["hidden_size"], meta["num_layers"], meta["vocab_size"]) == (576, 30, 49152)
    assert 0 < meta["embedding_std"] < 1
    assert meta["capabilities"]["soft_prompt"] and meta["capabilities"]["max_top_logprobs"] == 20
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("no-such-model")


def test_completes_with_logprobs(openai_client: Any, local_server: LocalServer) -> None:
    response = openai_client.completions.create(
        model=local_server.model_id,
        prompt=PROMPTS[:2],
        max_tokens=4,
        temperature=0,
        n=2,
        logprobs=3,
    )
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    # Greedy samples of the same prompt agree.
    assert response.choices[0].text == response.choices[1].text
    first = response.choices[0].logprobs
    assert len(first.tokens) == len(first.token_logprobs) == len(first.top_logprobs) == 4
    assert all(len(top) <= 3 and lp <= 0 for top, lp in zip(first.top_logprobs, first.token_logprobs))
    # Greedy: the chosen token is the most likely one.
    assert first.token_logprobs[0] == pytest.approx(max(first.top_logprobs[0].values()))
    assert response.usage.completion_tokens == 16
    assert response.usage.total_tokens == response.usage.prompt_tokens + 16


def test_chat_with_logprobs(openai_client: Any, local_server: LocalServer) -> None:
    response = openai_client.chat.completions.create(
        model=local_server.model_id,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert 1 <= len(choice.logprobs.content) <= 5
    entry = choice.logprobs.content[0]
    assert len(entry.top_logprobs) == 2 and entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)


def test_echo_equals_direct_forward(openai_client: Any, local_server: LocalServer, direct: LoadedModel) -> None:
    response = openai_client.completions.create(
        model=local_server.model_id, prompt=PROMPTS[0], max_tokens=0, echo=True, logprobs=1
    )
    served = response.choices[0].logprobs.token_logprobs
    ids = encode(direct, PROMPTS[0])
    expected = direct_logprobs(direct, ids)
    assert served[0] is None and len(served) == len(ids)
    np.testing.assert_allclose(served[1:], [expected[j - 1, ids[j]] for j in range(1, len(ids))], atol=1e-4)
    assert response.choices[0].text == PROMPTS[0]


def test_label_words_are_exact_sums(openai_client: Any, local_server: LocalServer, direct: LoadedModel) -> None:
    served = label_logprobs(openai_client, local_server, PROMPTS[:2])
    for row, prompt in enumerate(PROMPTS[:2]):
        prompt_ids = encode(direct, prompt)
        for col, word in enumerate(WORDS):
            word_ids = encode(direct, word, specials=False)
            logp = direct_logprobs(direct, prompt_ids + word_ids)
            start = len(prompt_ids) - 1
            expected = sum(logp[start + j, t] for j, t in enumerate(word_ids))
            assert served[row, col] == pytest.approx(expected, abs=1e-4)
    assert len(encode(direct, WORDS[2], specials=False)) > 1


def test_zero_soft_prompt_on_base_ids_equals_text(
    openai_client: Any, local_server: LocalServer, direct: LoadedModel
) -> None:
    inserted = " the acting is superb."
    base_ids = encode(direct, inserted, specials=False)
    soft = encode_tensor(np.zeros((len(base_ids), 576), dtype=np.float32))
    with_placeholder = label_logprobs(
        openai_client,
        local_server,
        ["Review:<soft> Sentiment:"],
        soft_prompt={**soft, "base_ids": base_ids, "placeholder": "<soft>"},
    )
    # The text prompt splits into the same tokens at the placeholder's boundaries.
    assert encode(direct, "Review:") + base_ids + encode(direct, " Sentiment:", False) == encode(direct, PROMPTS[2])
    np.testing.assert_allclose(with_placeholder, label_logprobs(openai_client, local_server, [PROMPTS[2]]), atol=1e-4)
    at_start = label_logprobs(openai_client, local_server, [" Sentiment:"], soft_prompt={**soft, "base_ids": base_ids})
    np.testing.assert_allclose(
        at_start, label_logprobs(openai_client, local_server, [inserted + " Sentiment:"]), atol=1e-4
    )


def test_deep_prompt_of_zeros_changes_nothing(openai_client: Any, local_server: LocalServer) -> None:
    rng = np.random.default_rng(0)
    soft = {**encode_tensor(rng.normal(0, 0.1, (4, 576))), "placeholder": "<soft>"}
    prompts = ["Review:<soft> great. Sentiment:", "Review:<soft> awful. Sentiment:"]
    plain = label_logprobs(openai_client, local_server, prompts, soft_prompt=soft)
    zeros = encode_tensor(np.zeros((30, 4, 576)))
    deep = label_logprobs(openai_client, local_server, prompts, soft_prompt=soft, deep_prompt=zeros)
    np.testing.assert_allclose(deep, plain, atol=1e-4)
    # A non-zero deep prompt does act, and alone it implies n zero soft positions.
    moved = label_logprobs(
        openai_client,
        local_server,
        prompts,
        soft_prompt=soft,
        deep_prompt=encode_tensor(rng.normal(0, 1.0, (30, 4, 576))),
    )
    assert np.abs(moved - plain).max() > 1e-2
    alone = label_logprobs(openai_client, local_server, prompts, deep_prompt={**zeros, "placeholder": "<soft>"})
    zero_soft = {**encode_tensor(np.zeros((4, 576))), "placeholder": "<soft>"}
    np.testing.assert_allclose(
        alone, label_logprobs(openai_client, local_server, prompts, soft_prompt=zero_soft), atol=1e-4
    )


def _reference_layer_std(engine: Any, texts: list[str], clip: bool) -> list[float]:
    """Per-layer std of the hidden states entering each decoder layer, from transformers' own
    ``output_hidden_states`` (one unpadded pass per text), clipped by an independent loop."""
    import torch

    states: list[list[torch.Tensor]] = []
    for text in texts:
        ids = torch.tensor([engine.encode(text, specials=True)], device=engine.device)
        with torch.inference_mode():
            out = engine.model(input_ids=ids, output_hidden_states=True)
        states.append([h[0].double().cpu() for h in out.hidden_states[:-1]])  # entering layers 0..L-1
    result = []
    for layer in range(len(states[0])):
        x = torch.cat([s[layer].flatten() for s in states])
        for _ in range(5 if clip else 0):
            mean, std = float(x.mean()), float(x.std(unbiased=False))
            x = torch.clamp(x, mean - 3 * std, mean + 3 * std)
        result.append(float(x.std(unbiased=False)))
    return result


def test_hidden_stats(local_server: LocalServer) -> None:
    body = {"model": local_server.model_id, "input": PROMPTS[:2]}
    stats = post(local_server, "/bbox/hidden_stats", body).json()
    assert stats["object"] == "hidden_stats" and "leaks" in stats["note"]
    engine = local_server.app.service.engine
    raw = post(local_server, "/bbox/hidden_stats", {**body, "clip": False}).json()
    # the values themselves, against transformers' hidden states (float32: rounding only)
    np.testing.assert_allclose(stats["layer_std"], _reference_layer_std(engine, PROMPTS[:2], True), rtol=1e-4)
    np.testing.assert_allclose(raw["layer_std"], _reference_layer_std(engine, PROMPTS[:2], False), rtol=1e-4)
    assert stats["n_tokens"] == sum(len(engine.encode(p, specials=True)) for p in PROMPTS[:2])


def test_a_deep_prompt_reaches_its_own_layer_and_those_after(local_server: LocalServer) -> None:
    """deep_prompt[l] is added to the hidden states entering layer l: with only layer 3 non-zero,
    the statistics of layers 0..2 stay as without a prompt and layer 3 on move."""
    from bbox_lfm.serve.engine import Sequence
    from bbox_lfm.serve.tokenization import PromptTensors

    engine = local_server.app.service.engine
    L, n = engine.num_layers, 2
    deep = np.zeros((L, n, engine.hidden_size), dtype=np.float32)
    deep[3] = 5.0
    prompt = PromptTensors(n=n, values=np.zeros((n, engine.hidden_size), dtype=np.float32),
                           base_ids=tuple(range(1000, 1000 + n)), placeholder=None, deep=deep)
    ids, start = engine.build(PROMPTS[0], specials=True, prompt=prompt, index=0)
    plain = dataclasses.replace(prompt, deep=np.zeros_like(deep))
    with_deep, _ = engine.hidden_stats([Sequence(ids, 1, engine.soft_span(prompt, start))], clip=False)
    without, _ = engine.hidden_stats([Sequence(ids, 1, engine.soft_span(plain, start))], clip=False)
    np.testing.assert_allclose(with_deep[:3], without[:3], rtol=1e-6)
    moved = [abs(a - b) / b for a, b in zip(with_deep, without)]
    assert moved[3] > 1e-3, moved
    assert all(m > 1e-6 for m in moved[4:]), moved


def test_concurrent_requests_equal_sequential(openai_client: Any, local_server: LocalServer) -> None:
    prompts = [[p] for p in PROMPTS] + [PROMPTS[:2], PROMPTS[2:], PROMPTS, PROMPTS[1:3]]
    sequential = [label_logprobs(openai_client, local_server, p) for p in prompts]
    calls_before = local_server.app.batcher.forward_calls
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda p: label_logprobs(openai_client, local_server, p), prompts))
    for seq, conc in zip(sequential, concurrent):
        np.testing.assert_allclose(conc, seq, atol=1e-4)
    # Merged: fewer forward passes than requests (each request alone needs two: one per length).
    assert local_server.app.batcher.forward_calls - calls_before < 2 * len(prompts)


DEMOS = (
    "Review: a gripping and funny film. Sentiment: positive\n"
    "Review: dull, slow and far too long. Sentiment: negative\n"
    "Review: the best thing I have seen all year. Sentiment: positive\n"
    "Review: nothing works in this picture. Sentiment: negative\n"
)


@pytest.mark.parametrize("prompted", [False, True], ids=["text", "soft+deep"])
def test_shared_prefix_runs_once_and_changes_nothing(
    openai_client: Any, local_server: LocalServer, prompted: bool
) -> None:
    """In-context demonstrations (and a soft/deep prompt) shared by a request's prompts are run
    once; the label-word scores equal those of each prompt sent alone."""
    rng = np.random.default_rng(3)
    extra: dict[str, Any] = {}
    if prompted:
        extra = {"soft_prompt": encode_tensor(rng.normal(0, 0.02, (4, 576)).astype(np.float32)),
                 "deep_prompt": encode_tensor(rng.normal(0, 0.02, (30, 4, 576)).astype(np.float32))}
    prompts = [DEMOS + p for p in PROMPTS]
    engine = local_server.app.service.engine
    before = dict(engine.prefix_stats)
    together = label_logprobs(openai_client, local_server, prompts, **extra)
    assert engine.prefix_stats["shared_passes"] > before["shared_passes"]
    saved = engine.prefix_stats["prefix_positions_saved"] - before["prefix_positions_saved"]
    # at least the demonstrations (and the soft slots), for every row but the first
    assert saved >= 3 * len(engine.encode(DEMOS, specials=True))
    alone = np.concatenate([label_logprobs(openai_client, local_server, [p], **extra) for p in prompts])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    # rows sharing more than the cached prefix (the demonstrations and a few more words) reuse it
    longer = [DEMOS + "Review: the acting is superb and the plot moves. Sentiment:",
              DEMOS + "Review: the acting is wooden and the plot drags. Sentiment:"]
    hits = engine.prefix_stats["prefix_hits"]
    reused = label_logprobs(openai_client, local_server, longer, **extra)
    assert engine.prefix_stats["prefix_hits"] == hits + 1
    np.testing.assert_allclose(
        reused, np.concatenate([label_logprobs(openai_client, local_server, [p], **extra) for p in longer]), atol=1e-4
    )
    # a different soft prompt must not reuse the cached prefix of the first
    if prompted:
        other = {**extra, "soft_prompt": encode_tensor(rng.normal(0, 0.5, (4, 576)).astype(np.float32))}
        changed = label_logprobs(openai_client, local_server, prompts, **other)
        assert np.abs(changed - together).max() > 1e-3


def test_engine_refuses_a_cache_keyword_the_model_ignores(local_server: LocalServer) -> None:
    """The start-up probe catches a forward that swallows the prefix's keys/values (the
    transformers 5.17 failure: the wrong keyword vanished into ``**kwargs``)."""
    engine = local_server.app.service.engine
    engine.check_prefix_reuse()  # the real keyword passes
    right, engine.forward.cache_arg = engine.forward.cache_arg, "not_a_cache_keyword"
    try:
        with pytest.raises(RuntimeError, match="shared-prefix pass differs from a plain pass"):
            engine.check_prefix_reuse()
    finally:
        engine.forward.cache_arg = right


def test_concurrent_generations_decode_together(openai_client: Any, local_server: LocalServer) -> None:
    """Sampled generations sent at once decode in shared passes and give what each gives alone."""

    def write(seed: int) -> str:
        r = openai_client.completions.create(model=local_server.model_id, prompt=PROMPTS[seed % 4], max_tokens=8,
                                             temperature=1.0, seed=seed)
        return str(r.choices[0].text)

    seeds = list(range(6))
    alone = [write(s) for s in seeds]
    merged_before = local_server.app.batcher.merged_jobs
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(write, seeds))
    assert together == alone
    assert len(set(alone)) > 1  # different seeds, different samples
    assert local_server.app.batcher.merged_jobs > merged_before


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode()


BAD_BODIES: dict[str, tuple[dict[str, Any], int, str]] = {
    "soft_shape": ({"soft_prompt": encode_tensor(np.zeros((3, 10)))}, 422, "soft_prompt.shape"),
    "soft_dtype": (
        {"soft_prompt": {**encode_tensor(np.zeros((2, 576))), "dtype": "float16"}},
        422,
        "soft_prompt.dtype",
    ),
    "soft_base64": (
        {"soft_prompt": {"shape": [1, 576], "data": "not base64!!"}},
        422,
        "soft_prompt.data",
    ),
    "soft_bytes": ({"soft_prompt": {"shape": [2, 576], "data": _b64(np.zeros(576))}}, 422, "soft_prompt.data"),
    "soft_nan": ({"soft_prompt": encode_tensor(np.full((2, 576), np.nan))}, 422, "soft_prompt.data"),
    "soft_inf": ({"soft_prompt": encode_tensor(np.full((2, 576), np.inf))}, 422, "soft_prompt.data"),
    "soft_base_ids": (
        {"soft_prompt": {**encode_tensor(np.zeros((2, 576))), "base_ids": [1]}},
        422,
        "soft_prompt.base_ids",
    ),
    "soft_placeholder": (
        {"soft_prompt": {**encode_tensor(np.zeros((2, 576))), "placeholder": "<missing>"}},
        422,
        "soft_prompt.placeholder",
    ),
    "soft_unknown_key": (
        {"soft_prompt": {**encode_tensor(np.zeros((2, 576))), "shap": [2]}},
        422,
        "soft_prompt.shap",
    ),
    "deep_shape": ({"deep_prompt": encode_tensor(np.zeros((29, 2, 576)))}, 422, "deep_prompt.shape"),
    "too_long": ({"prompt": "hi " * 9000}, 422, "context length"),
    "too_long_with_tokens": ({"max_tokens": 8192}, 422, "context length"),
    "unknown_model": ({"model": "gpt-5"}, 404, "gpt-5"),
    "logprobs_above_max": ({"logprobs": 21}, 422, "logprobs"),
    "n_zero": ({"n": 0}, 422, "n: Input should be greater than or equal to 1"),
    "max_tokens_negative": ({"max_tokens": -1}, 422, "max_tokens: Input should be greater than or equal to 0"),
    "logprobs_negative": ({"logprobs": -1}, 422, "logprobs: Input should be greater than or equal to 0"),
    "n_not_int": ({"n": "two"}, 422, "n"),
    "label_words_empty": ({"label_words": []}, 422, "label_words"),
    "label_words_blank": ({"label_words": [""]}, 422, "label_words[0]"),
    "stream": ({"stream": True}, 400, "stream"),
    "no_prompt": ({"prompt": None}, 422, "prompt"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_input_is_4xx_and_server_keeps_serving(local_server: LocalServer, case: str) -> None:
    override, status, named = BAD_BODIES[case]
    body = {"model": local_server.model_id, "prompt": "Hello", "max_tokens": 0, **override}
    response = post(local_server, "/completions", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert named in error["message"] and error["type"] == "invalid_request_error"
    ok = post(local_server, "/completions", {"model": local_server.model_id, "prompt": "Hi", "max_tokens": 1})
    assert ok.status_code == 200


def test_chat_top_logprobs_above_max(local_server: LocalServer) -> None:
    body = {
        "model": local_server.model_id,
        "messages": [{"role": "user", "content": "Hi"}],
        "logprobs": True,
        "top_logprobs": 21,
    }
    response = post(local_server, "/chat/completions", body)
    assert response.status_code == 422 and "top_logprobs" in response.json()["error"]["message"]


def test_malformed_json_and_oversized_body(local_server: LocalServer) -> None:
    url = local_server.base_url + "/completions"
    headers = {"content-type": "application/json"}
    assert httpx.post(url, content=b'{"model": ', headers=headers).status_code == 400
    limit = local_server.config.max_body_bytes
    big = httpx.post(url, content=b" " * (limit + 1), headers=headers, timeout=60)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    ok = post(local_server, "/completions", {"model": local_server.model_id, "prompt": "Hi", "max_tokens": 1})
    assert ok.status_code == 200


def test_api_key_and_model_directory() -> None:
    """A second server from a plain HF directory (the converted GGUF), behind a bearer key."""
    import openai

    directory = converted_dir(default_gguf())
    with start_local(str(directory), api_key="sekrit", batch_window_ms=0) as server:
        assert server.model_id == directory.name
        body = {"model": server.model_id, "prompt": "Hi", "max_tokens": 1}
        assert post(server, "/completions", body).status_code == 401
        wrong = post(server, "/completions", body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=server.base_url, api_key="sekrit", max_retries=0)
        assert client.completions.create(**body).choices[0].finish_reason in ("length", "stop")
        assert httpx.get(server.base_url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
