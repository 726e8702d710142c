"""Request bodies of the OpenAI routes and of the bbox-lfm extensions, as pydantic models.

OpenAI fields the server does not act on (``user``, ``presence_penalty``, ...) are accepted and
ignored, as the official client may send them; the extension objects forbid unknown keys so a
typo in ``soft_prompt`` is an error rather than a silently ignored field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .next_token import NextTokenRequest

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "HiddenStatsRequest",
    "TensorPayload",
]


class TensorPayload(BaseModel):
    """A float32 tensor as base64 of its little-endian bytes, with the soft prompt's options."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int]
    dtype: str = "float32"
    data: str
    base_ids: list[int] | None = None
    placeholder: str | None = None


class _Extensions(BaseModel):
    model_config = ConfigDict(extra="allow")

    soft_prompt: TensorPayload | None = None
    deep_prompt: TensorPayload | None = None
    label_words: list[str] | None = None
    next_token_logprobs: NextTokenRequest | None = None


class _Sampling(_Extensions):
    model: str
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = False


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: legacy completions; ``max_tokens=0`` scores without generating."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=0)
    # the upper bound is the server's --max-logprobs, checked by the service
    logprobs: int | None = Field(default=None, ge=0)
    echo: bool = False


class ChatMessage(BaseModel):
    """One chat message; ``content`` may be a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``, rendered with the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    # the upper bound is the server's --max-logprobs, checked by the service
    top_logprobs: int | None = Field(default=None, ge=0)


class HiddenStatsRequest(BaseModel):
    """``POST /v1/bbox/hidden_stats``: per-layer hidden-state std on the given texts."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str]
    soft_prompt: TensorPayload | None = None
    clip: bool = True
