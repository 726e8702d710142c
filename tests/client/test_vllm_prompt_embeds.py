"""BBT's soft prompts as vLLM prompt embeddings, against the request format vLLM documents.

vLLM's ``CompletionRequest`` has ``prompt_embeds: bytes | list[bytes] | None`` (an extra
parameter, enabled by ``vllm serve --enable-prompt-embeds``); each item is base64 of a
``torch.save``'d ``[sequence_length, hidden_size]`` tensor, read back with
``torch.load(..., weights_only=True)``; the docs' client example sends ``prompt=None`` with it.
The emulated server below refuses anything else. No GPU here: no real vLLM run.
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import respx

from bbox_lfm import Client
from bbox_lfm.adapters.prompt_embeds import EmbeddingTable, from_prompt_embeds, to_prompt_embeds
from bbox_lfm.tensors import encode

BASE = "http://vllm.test/v1"
WORDS = ["<s>", "a", "bad", "good", "film", "number", "It", "was", "fine", "poor", "nice", "awful", "great", "dull",
         "0", "1", "2", "3"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
D = 8


def _encode(text: str, specials: bool) -> list[int]:
    ids = [VOCAB.get(w, 0) for w in text.split()]
    return ([VOCAB["<s>"]] if specials else []) + ids


def table() -> EmbeddingTable:
    rng = np.random.default_rng(0)
    return EmbeddingTable(_encode, rng.standard_normal((1100, D)).astype(np.float32))


class VLLM:
    """Answers like vLLM with --enable-prompt-embeds, checking every request body first."""

    def __init__(self) -> None:
        self.sequences: list[np.ndarray] = []

    def completions(self, request: httpx.Request) -> httpx.Response:
        import torch

        body = json.loads(request.content)
        embeds = body.get("prompt_embeds")
        if embeds is None:
            return httpx.Response(400, json={"error": {"message": "text prompts are not used here"}})
        assert body.get("prompt") is None, "the embeddings are the prompt"
        items = embeds if isinstance(embeds, list) else [embeds]
        choices = []
        for i, item in enumerate(items):
            t = torch.load(io.BytesIO(base64.b64decode(item)), weights_only=True)  # as vLLM reads it
            assert isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] == D
            x = t.numpy()
            self.sequences.append(x)
            s = float(x[1:4].mean())  # the soft rows decide: " good" rises with their mean
            top = {" good": -1.0 + s, " bad": -1.0 - s, " the": -3.0}
            choices.append({"index": i, "text": " good", "finish_reason": "length",
                            "logprobs": {"tokens": [" good"], "token_logprobs": [top[" good"]],
                                         "top_logprobs": [top], "text_offset": [0]}})
        return httpx.Response(200, json={"id": "c", "object": "text_completion", "model": body["model"],
                                         "choices": choices, "usage": {"prompt_tokens": 10, "completion_tokens": 1}})

    def install(self, router: respx.Router) -> None:
        router.get(f"{BASE}/models").mock(return_value=httpx.Response(
            200, json={"object": "list", "data": [{"id": "served", "object": "model"}]}))
        router.post(f"{BASE}/completions").mock(side_effect=self.completions)


def test_wire_form_round_trips_as_vllm_reads_it() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(from_prompt_embeds(to_prompt_embeds(x)), x)
    with pytest.raises(Exception, match="num_tokens, hidden_size"):
        to_prompt_embeds(np.zeros(4))


def test_soft_prompt_scoring_becomes_prompt_embeds_requests() -> None:
    tab, server = table(), VLLM()
    values = np.full((3, D), 0.5, dtype=np.float32)
    soft = encode(values, base_ids=[1000, 1001, 1002])
    with respx.mock(assert_all_called=False) as router:
        server.install(router)
        with Client(BASE, provider="vllm-embeds", embeddings=tab, cache_mode="off") as client:
            assert client.capabilities.soft_prompt and client.capabilities.label_words
            assert client.model_info()["hidden_size"] == D
            sc = client.score(["a good film", "a bad film"], [" bad", " good"], extra={"soft_prompt": soft})
    # one request with the two sequences: <s>, three soft rows E[base] + values, then the text
    assert len(server.sequences) == 2
    first = server.sequences[0]
    E = tab.matrix
    expected = np.concatenate([E[[VOCAB["<s>"]]], E[[1000, 1001, 1002]] + values,
                               E[[VOCAB["a"], VOCAB["good"], VOCAB["film"]]]])
    assert np.allclose(first, expected)
    assert sc.logprobs.shape == (2, 2) and sc.logprobs[0, 1] > sc.logprobs[0, 0]


def test_without_embeddings_the_profile_has_no_soft_prompt() -> None:
    c = Client(BASE, provider="vllm-embeds", cache_mode="off", embeddings="")
    assert c.capabilities.prompt_embeds and not c.capabilities.soft_prompt


def test_bbt_runs_on_emulated_vllm_through_prompt_embeds() -> None:
    from bbox_lfm.methods.bbt import BBT
    from bbox_lfm.tasks import Example, FewShot, Task

    train = [Example(text=f"a {w} film number {i % 4}", label=int(w == "good"))
             for i in range(4) for w in ("good", "bad")]
    task = Task(name="toy", labels=("negative", "positive"), label_words=(" bad", " good"), template="{text} It was",
                kshot_loader=lambda k, seed: FewShot(train=train, dev=train))
    server = VLLM()
    with respx.mock(assert_all_called=False) as router:
        server.install(router)
        with Client(BASE, provider="vllm-embeds", embeddings=table(), cache_mode="off") as client:
            m = BBT(intrinsic_dim=4, n_prompt_tokens=3, popsize=4, budget=8, eval_every=4, seed=1).fit(
                client, task, progress=False)
    assert m.calls_ == 8 == m.budget_spent_["calls"] and m.budget_spent_["requests"] == 8
    assert m.best_prompt_["shape"] == [3, D] and len(m.curve_) == 2
