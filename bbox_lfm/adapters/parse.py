"""Turn OpenAI-shaped JSON answers into :class:`~bbox_lfm.types.Response` values.

Shared by the real adapter and the mock, so a mock answer goes through the same checks as a
real one. Fields the OpenAI schema does not name are kept in ``Choice.extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MalformedResponseError
from ..types import Choice, Response, TokenLogprobs, Usage

__all__ = ["parse_response"]

_COMPLETION_KEYS = {"index", "text", "finish_reason", "logprobs"}
_CHAT_KEYS = {"index", "message", "finish_reason", "logprobs"}


def _completion_logprobs(lp: Mapping[str, Any]) -> TokenLogprobs:
    top = lp.get("top_logprobs") or ()
    return TokenLogprobs(
        tokens=tuple(lp.get("tokens") or ()),
        token_logprobs=tuple(lp.get("token_logprobs") or ()),
        top_logprobs=tuple(t or {} for t in top),
    )


def _chat_logprobs(lp: Mapping[str, Any]) -> TokenLogprobs:
    content = lp.get("content") or ()
    return TokenLogprobs(
        tokens=tuple(c["token"] for c in content),
        token_logprobs=tuple(c.get("logprob") for c in content),
        top_logprobs=tuple({t["token"]: t["logprob"] for t in (c.get("top_logprobs") or ())} for c in content),
    )


def _hidden_stats(data: Any) -> Response:
    """The local server's hidden statistics, kept whole in one choice's ``extra``."""
    std = data["layer_std"]
    if not isinstance(std, list) or not all(isinstance(s, (int, float)) for s in std):
        raise TypeError(f"layer_std must be a list of numbers; got {type(std).__name__}")
    n_tokens = int(data.get("n_tokens") or 0)
    return Response(choices=(Choice(index=0, extra={"layer_std": std, "n_tokens": n_tokens}),),
                    model=str(data.get("model", "")), usage=Usage(prompt_tokens=n_tokens))


def parse_response(data: Any, endpoint: str) -> Response:
    """Parse the JSON body of a Completions, Chat Completions, hidden-statistics or classification answer."""
    if endpoint == "classify":
        return _classification(data)
    try:
        if endpoint == "hidden_stats":
            return _hidden_stats(data)
        raw_choices = data["choices"]
        choices = []
        for i, c in enumerate(raw_choices):
            lp = c.get("logprobs")
            if endpoint == "chat":
                text = (c.get("message") or {}).get("content") or ""
                logprobs = _chat_logprobs(lp) if lp else None
                known = _CHAT_KEYS
            else:
                text = c.get("text") or ""
                logprobs = _completion_logprobs(lp) if lp else None
                known = _COMPLETION_KEYS
            choices.append(Choice(
                index=int(c.get("index", i)), text=text, finish_reason=c.get("finish_reason"),
                logprobs=logprobs, extra={k: v for k, v in c.items() if k not in known},
            ))
        u = data.get("usage") or {}
        usage = Usage(prompt_tokens=int(u.get("prompt_tokens") or 0),
                      completion_tokens=int(u.get("completion_tokens") or 0),
                      total_tokens=int(u.get("total_tokens") or 0))
        choices.sort(key=lambda c: c.index)
        return Response(choices=tuple(choices), model=str(data.get("model", "")), usage=usage)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(
            f"the {endpoint} answer does not have the documented shape ({type(exc).__name__}: {exc})"
        ) from exc


def _classification(data: Any) -> Response:
    """A ``/v1/bbox/classify`` answer: one choice whose ``extra`` holds ``output``, ``classes``
    and ``outputs`` (the float32 tensor the server wrote; :meth:`Client.classify` decodes it)."""
    try:
        outputs = data["outputs"]
        if not isinstance(outputs, Mapping) or not isinstance(outputs.get("data"), str):
            raise TypeError("outputs must be a tensor {shape, dtype, data}")
        extra = {"output": str(data["output"]), "classes": list(data.get("classes") or ()), "outputs": dict(outputs)}
        u = data.get("usage") or {}
        usage = Usage(prompt_tokens=int(u.get("prompt_tokens") or 0), completion_tokens=0,
                      total_tokens=int(u.get("total_tokens") or 0))
        return Response(choices=(Choice(index=0, extra=extra),), model=str(data.get("model", "")), usage=usage)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(
            f"the classify answer does not have the documented shape ({type(exc).__name__}: {exc})") from exc
