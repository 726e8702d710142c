"""A tiny fake of the local server for BBT/BBTv2 unit tests: no network, exact arithmetic.

The "model" scores label c after prompt i as s_c = sign_i * (c - 1/2) * <mean of the prompt
tensor, w>, sign_i = +1 for texts containing "good", -1 otherwise: a prompt direction along w
makes every example right, so a working search drives the loss down.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bbox_lfm import Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import Example, Task
from bbox_lfm.tensors import decode
from bbox_lfm.types import Query

D, L = 8, 3
W = np.random.default_rng(0).standard_normal(D)


def _score(query: Query) -> dict[str, Any]:
    spec = query.extra.get("deep_prompt") or query.extra.get("soft_prompt")
    # no prompt at all (the harness scoring the start template): every label scores the same
    v = decode(spec).reshape(-1, D).mean(axis=0) if spec else np.zeros(D)
    base = 0.1 * len(spec.get("base_ids") or ()) if spec else 0.0
    choices = []
    for i, text in enumerate(query.prompt):
        sign = 1.0 if "good" in text else -1.0
        s = sign * (float(v @ W) + base) * np.array([-0.5, 0.5])
        lp = s - np.logaddexp.reduce(s)
        choices.append({"index": i, "text": "", "finish_reason": "length", "label_logprobs": lp.tolist()})
    return {"model": "m", "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}}


class FakeServer(MockAdapter):
    """The fake model plus the metadata and hidden_stats routes of bbox-lfm's server.
    ``posts`` records the hidden_stats requests as (path, body)."""

    def __init__(self, score: Any = None) -> None:
        super().__init__(self._answer)
        self._score = score or _score
        self.posts: list[tuple[str, Any]] = []

    def _answer(self, query: Query) -> dict[str, Any]:
        if query.endpoint == "hidden_stats":
            self.posts.append(("/bbox/hidden_stats", {"input": list(query.prompt), **query.extra}))
            return {"object": "hidden_stats", "model": "m", "layer_std": [0.5 * (l + 1) for l in range(L)],
                    "n_tokens": 10 * len(query.prompt)}
        return self._score(query)

    @property
    def calls(self) -> int:
        """Scoring queries answered (the hidden_stats requests are in ``posts``)."""
        return sum(q.endpoint != "hidden_stats" for q in self.queries)

    def models(self) -> list[dict[str, Any]]:
        return [{"id": "m", "metadata": {"hidden_size": D, "num_layers": L, "embedding_std": 0.5}}]


def fake_client(provider: str = "bbox-lfm", store: Any = None, adapter: FakeServer | None = None) -> Client:
    return Client("http://mock/v1", adapter=adapter or FakeServer(), provider=provider, model="m",
                  cache=store if store is not None else MemoryStore())


def toy_task() -> Task:
    words = ["good", "bad", "fine", "poor", "nice", "awful", "great", "dull"]
    train = [Example(text=f"a {w} film number {i}", label=int(w in ("good",))) for i in range(40) for w in words]
    return Task(name="toy", labels=("negative", "positive"), label_words=(" bad", " good"), template="{text} It was",
                loaders={"train": lambda: list(train), "dev": lambda: list(train[:16])})
