"""Typed, frozen values that travel along the query path.

A :class:`Query` is everything that decides an answer (and nothing else: no credentials, no
headers). A :class:`Response` is the provider's answer plus what the stack learned while
getting it (``cache_hit``, ``latency_s``, ``attempts``, ``cost_usd``). Both convert to and from
plain JSON, which is what the cache stores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .errors import check

__all__ = ["CLASSIFY_OUTPUTS", "Capabilities", "Choice", "Query", "Response", "TokenLogprobs", "Usage"]

Endpoint = Literal["completions", "chat", "hidden_stats", "classify"]
ENDPOINTS = ("completions", "chat", "hidden_stats", "classify")
#: what a classification query may ask for, least to most revealing
CLASSIFY_OUTPUTS = ("top1", "probabilities", "logits")


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _thaw(value: Any) -> Any:
    """Plain JSON-able copy of a value that may hold read-only mappings and tuples."""
    t = type(value)
    if t in _SCALARS:  # the common case first: ABC isinstance checks are slow on the hot path
        return value
    if t is dict or t is MappingProxyType:
        return {str(k): _thaw(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Query:
    """One request to a provider.

    ``prompt`` holds one or more prompts for the legacy Completions endpoint (one request, many
    sequences); ``messages`` is a chat conversation. ``hidden_stats`` is the local server's
    ``POST /v1/bbox/hidden_stats`` extension, its texts in ``prompt`` (and ``max_tokens=0``): an
    extension request is a query like any other, so it is cached, budgeted, throttled and
    retried. ``extra`` is sent as extra fields of the
    request body (the ``openai`` client's ``extra_body``): engine-specific options such as the
    local server's ``soft_prompt`` or ``label_words``. ``sample_id`` tells repeated sampling
    queries apart, so that n samples are n cache entries rather than one.

    ``endpoint="classify"`` asks a classifier model (``POST /v1/bbox/classify``): the rows to
    classify travel in ``extra["inputs"]`` (a float32 tensor, :mod:`bbox_lfm.tensors`) and
    ``extra["output"]`` names what comes back (one of ``CLASSIFY_OUTPUTS``); it has no prompt,
    and each row counts as one sequence. :meth:`bbox_lfm.Client.classify` builds these.
    """

    endpoint: Endpoint = "completions"
    model: str | None = None
    prompt: tuple[str, ...] = ()
    messages: tuple[Mapping[str, Any], ...] = ()
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float | None = None
    n: int = 1
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    logprobs: int | None = None
    top_logprobs: int | None = None
    echo: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    sample_id: int | None = None

    def __post_init__(self) -> None:
        check(self.endpoint in ENDPOINTS, "endpoint", f"one of {ENDPOINTS}", self.endpoint)
        if isinstance(self.prompt, str):
            object.__setattr__(self, "prompt", (self.prompt,))
        else:
            object.__setattr__(self, "prompt", tuple(self.prompt))
        object.__setattr__(self, "messages", tuple(_frozen_map(m) for m in self.messages))
        if self.stop is not None:
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        object.__setattr__(self, "extra", _frozen_map(self.extra))
        if self.endpoint in ("completions", "hidden_stats"):
            check(len(self.prompt) > 0, "prompt", f"at least one prompt for the {self.endpoint} endpoint", self.prompt)
            check(all(isinstance(p, str) for p in self.prompt), "prompt", "strings", self.prompt)
        elif self.endpoint == "chat":
            check(len(self.messages) > 0, "messages", "a non-empty conversation for the chat endpoint", self.messages)
        else:
            inputs = self.extra.get("inputs")
            check(isinstance(inputs, Mapping) and len(inputs.get("shape") or ()) >= 2, "extra['inputs']",
                  "a tensor {shape: [rows, ...], dtype, data} for the classify endpoint", inputs)
            check(self.extra.get("output") in CLASSIFY_OUTPUTS, "extra['output']", f"one of {CLASSIFY_OUTPUTS}",
                  self.extra.get("output"))
        check(self.max_tokens >= 0, "max_tokens", ">= 0", self.max_tokens)
        check(self.n >= 1, "n", ">= 1", self.n)
        check(self.temperature >= 0, "temperature", ">= 0", self.temperature)
        check(self.logprobs is None or self.logprobs >= 0, "logprobs", "None or >= 0", self.logprobs)
        check(self.top_logprobs is None or self.top_logprobs >= 0, "top_logprobs", "None or >= 0", self.top_logprobs)

    @property
    def sequences(self) -> int:
        """Sequences this query asks the model for (prompts x n; rows for a classification)."""
        if self.endpoint == "classify":
            return int(self.extra["inputs"]["shape"][0])
        return (len(self.prompt) if self.endpoint != "chat" else 1) * self.n

    @property
    def sampling(self) -> bool:
        """True when the answer is random (temperature above zero)."""
        return self.temperature > 0 and (self.max_tokens > 0)

    def with_model(self, model: str) -> Query:
        """This query with ``model`` filled in (a shallow copy: the fields were validated once)."""
        other = object.__new__(Query)
        fields = {k: v for k, v in self.__dict__.items() if k != "_json"}
        fields["model"] = model
        other.__dict__.update(fields)
        return other

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form; the cache hashes its canonical encoding. Computed once per query
        (the cache needs it twice); treat the returned dict as read-only."""
        cached = self.__dict__.get("_json")
        if cached is None:
            cached = {name: _thaw(getattr(self, name)) for name in _QUERY_FIELDS}
            object.__setattr__(self, "_json", cached)
        return cached

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Query:
        """Inverse of :meth:`to_json`."""
        kw = dict(data)
        for name in ("prompt", "messages"):
            kw[name] = tuple(kw.get(name) or ())
        if kw.get("stop") is not None:
            kw["stop"] = tuple(kw["stop"])
        return cls(**kw)

    def describe(self) -> str:
        """A short, secret-free description for error messages."""
        if self.endpoint == "classify":
            return (f"classify query for model {self.model!r} with {self.sequences} input(s) of shape "
                    f"{list(self.extra['inputs']['shape'][1:])}, output {self.extra.get('output')!r}")
        if self.endpoint != "chat":
            first = self.prompt[0]
            head = first[:60] + ("..." if len(first) > 60 else "")
            return (f"{self.endpoint} query for model {self.model!r} with {len(self.prompt)} prompt(s), "
                    f"first {head!r}, extra fields {sorted(self.extra)}")
        return f"chat query for model {self.model!r} with {len(self.messages)} message(s), extra fields {sorted(self.extra)}"


_QUERY_FIELDS = tuple(f.name for f in dataclasses.fields(Query))


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Token counts as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.total_tokens:
            object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)


@dataclass(frozen=True, kw_only=True)
class TokenLogprobs:
    """Per-token log-probabilities of one choice (generated tokens, plus the prompt's with echo).

    ``top_logprobs[i]`` maps the most likely tokens at position i to their log-probabilities.
    """

    tokens: tuple[str, ...] = ()
    token_logprobs: tuple[float | None, ...] = ()
    top_logprobs: tuple[Mapping[str, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "token_logprobs", tuple(self.token_logprobs))
        object.__setattr__(self, "top_logprobs", tuple(_frozen_map(t) for t in self.top_logprobs))


@dataclass(frozen=True, kw_only=True)
class Choice:
    """One answer sequence. ``extra`` holds engine-specific fields (e.g. ``label_logprobs``)."""

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: TokenLogprobs | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", _frozen_map(self.extra))


@dataclass(frozen=True, kw_only=True)
class Response:
    """A provider's answer to one :class:`Query`."""

    choices: tuple[Choice, ...]
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    cache_hit: bool = False
    latency_s: float = 0.0
    attempts: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))

    def replace(self, **changes: Any) -> Response:
        """A copy with ``changes`` (cheaper than ``dataclasses.replace`` on the hot path)."""
        other = object.__new__(Response)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    @property
    def text(self) -> str:
        """Text of the first choice."""
        return self.choices[0].text if self.choices else ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (what the cache stores)."""
        return {
            "choices": [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                         "logprobs": None if c.logprobs is None else {
                             "tokens": list(c.logprobs.tokens), "token_logprobs": list(c.logprobs.token_logprobs),
                             "top_logprobs": [dict(t) for t in c.logprobs.top_logprobs]},
                         "extra": _thaw(c.extra)} for c in self.choices],
            "model": self.model,
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens,
                      "total_tokens": self.usage.total_tokens},
            "cost_usd": self.cost_usd, "cache_hit": self.cache_hit, "latency_s": self.latency_s,
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Response:
        """Inverse of :meth:`to_json`."""
        choices = []
        for c in data.get("choices", ()):
            lp = c.get("logprobs")
            choices.append(Choice(
                index=c.get("index", 0), text=c.get("text", ""), finish_reason=c.get("finish_reason"),
                logprobs=TokenLogprobs(**lp) if lp is not None else None, extra=c.get("extra") or {},
            ))
        return cls(
            choices=tuple(choices), model=data.get("model", ""), usage=Usage(**(data.get("usage") or {})),
            cost_usd=float(data.get("cost_usd", 0.0)), cache_hit=bool(data.get("cache_hit", False)),
            latency_s=float(data.get("latency_s", 0.0)), attempts=int(data.get("attempts", 1)),
        )


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a provider can do; methods check these before sending anything.

    ``max_top_logprobs`` is the legacy Completions endpoint's limit, ``chat_max_top_logprobs``
    the Chat endpoint's (OpenAI: 5 and 20). ``echo_max_tokens`` is what to send as
    ``max_tokens`` with ``echo`` to read a prompt's own tokens: 0 where the server then scores
    the prompt only, 1 where it reads 0 as "no limit" (llama.cpp) and one token must be
    generated and set aside. ``echo_logprobs``: the echoed prompt tokens' log-probabilities
    are log p(token | the tokens before it), so a label word can be scored exactly by echoing
    prompt + word (llama-cpp-python 0.3 gives each token the log-probability under the *next*
    position's distribution instead: false there). ``prompt_embeds`` is vLLM's
    ``--enable-prompt-embeds`` input.
    """

    completions: bool = True
    chat: bool = True
    logprobs: bool = True
    max_top_logprobs: int = 5
    chat_logprobs: bool = True
    chat_max_top_logprobs: int = 5
    echo: bool = False
    echo_max_tokens: int = 0
    echo_logprobs: bool = False
    max_batch: int = 1
    soft_prompt: bool = False
    deep_prompt: bool = False
    label_words: bool = False
    hidden_stats: bool = False
    prompt_embeds: bool = False
    next_token_logprobs: bool = False
    #: classifier models: "" (none), or the most revealing answer allowed ("top1" < "probabilities" < "logits")
    classify: str = ""

    def classify_allows(self, output: str) -> bool:
        """True when a classification may answer with ``output`` (a less revealing form is always allowed)."""
        if self.classify not in CLASSIFY_OUTPUTS or output not in CLASSIFY_OUTPUTS:
            return False
        return CLASSIFY_OUTPUTS.index(output) <= CLASSIFY_OUTPUTS.index(self.classify)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Capabilities:
        """Build from a profile table or server metadata, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def has(self, name: str) -> bool:
        """True when the capability ``name`` is present (truthy)."""
        return bool(getattr(self, name, False))


def as_prompts(prompts: str | Sequence[str]) -> tuple[str, ...]:
    """A tuple of prompts from one prompt or a sequence."""
    return (prompts,) if isinstance(prompts, str) else tuple(prompts)
