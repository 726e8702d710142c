"""Helpers for the tasks tests: a mock provider that scores label words by a rule."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from bbox_lfm import Client
from bbox_lfm.adapters.mock import MockAdapter
from bbox_lfm.stores import MemoryStore
from bbox_lfm.types import Query


def label_word_handler(rule: Callable[[str, list[str]], list[float]]) -> Callable[[Query], dict[str, Any]]:
    """A handler answering bbox-lfm's ``label_words`` extension with ``rule(prompt, words)``."""

    def handler(q: Query) -> dict[str, Any]:
        if q.echo:  # a "tokenizer" where each word with its leading space is one token
            return {"choices": [{"index": i, "text": "", "logprobs": {
                "tokens": (toks := re.findall(r"\s*\S+", p)), "token_logprobs": [None] * len(toks),
                "top_logprobs": [None] * len(toks)}} for i, p in enumerate(q.prompt)]}
        words = list(q.extra["label_words"])
        return {"choices": [{"index": i, "text": "", "finish_reason": "length", "label_logprobs": rule(p, words)}
                            for i, p in enumerate(q.prompt)],
                "usage": {"prompt_tokens": len(q.prompt), "completion_tokens": 0, "total_tokens": len(q.prompt)}}

    return handler


@pytest.fixture()
def mock_client() -> Callable[..., Client]:
    """``mock_client(rule)``: a client over a MockAdapter with an in-memory cache."""

    def make(rule: Callable[[str, list[str]], list[float]]) -> Client:
        return Client("http://mock/v1", adapter=MockAdapter(label_word_handler(rule)), provider="bbox-lfm",
                      cache=MemoryStore(), model="m")

    return make
