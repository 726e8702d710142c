"""Against the real local server (SmolLM2): evaluation agrees with a direct forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bbox_lfm.errors import ConfigError
from bbox_lfm.tasks import evaluate, load_task

pytestmark = pytest.mark.slow


def direct_logprobs(server: Any, prompts: list[str], words: tuple[str, ...]) -> np.ndarray:
    """log p(word | prompt) from the server's own model, one unpadded sequence at a time."""
    import torch

    engine = server.app.service.engine
    tok, model = engine.tokenizer, engine.model
    out = np.zeros((len(prompts), len(words)))
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            head = tok(p, add_special_tokens=True)["input_ids"]
            for k, w in enumerate(words):
                cont = tok(w, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([head + cont], device=model.device)
                logp = torch.log_softmax(model(input_ids=ids).logits.float()[0], dim=-1)
                out[i, k] = sum(float(logp[len(head) - 1 + j, t]) for j, t in enumerate(cont))
    return out


def test_evaluate_agrees_with_a_direct_forward_pass(local_server: Any, local_client: Any) -> None:
    task = load_task("sample")
    examples = task.split("eval")[:8]
    m = evaluate(local_client, task, examples, progress=False)
    direct = direct_logprobs(local_server, [task.format(e) for e in examples], task.label_words)
    # batched (padded) and single-sequence passes differ only by rounding
    np.testing.assert_allclose(m.logprobs, direct, atol=0.15)
    margin = np.abs(direct[:, 1] - direct[:, 0])
    assert np.array_equal(m.predictions[margin > 0.3], direct.argmax(axis=1)[margin > 0.3])
    assert m.accuracy == float((m.predictions == np.array([e.label for e in examples])).mean())


def test_label_word_token_check_through_the_server(local_client: Any) -> None:
    task = load_task("sample")
    assert task.check_label_words(local_client) is True
    with pytest.raises(ConfigError, match="label_words must be single tokens"):
        task.check_label_words(local_client, [" not good at all", " great"])
