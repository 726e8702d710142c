"""Adapter for any OpenAI-compatible endpoint, through the official ``openai`` client.

The SDK's own retries are switched off (``max_retries=0``): the retry layer is the only loop.
Answers are read as raw JSON so that engine-specific fields (``label_logprobs``) survive, and
every SDK or HTTP error is translated into :mod:`bbox_lfm.errors` here, with credentials
redacted from the message.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, NoReturn

from .._secrets import install_log_redaction, redact, scrub_exception
from ..errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    RateLimitError,
    ServerError,
    TruncatedResponseError,
)
from ..profiles import ProviderProfile
from ..types import Query, Response
from .parse import parse_response

__all__ = ["OpenAICompatAdapter", "retry_after_seconds"]


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _status_error(status: int, message: str, retry_after: float | None) -> APIStatusError:
    if status == 429:
        return RateLimitError(message, status_code=status, retry_after=retry_after)
    if status >= 500 or status in (408, 409):
        return ServerError(message, status_code=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthenticationError(message, status_code=status)
    return BadRequestError(message, status_code=status)


class OpenAICompatAdapter:
    """Send queries to ``base_url`` with the ``openai`` client (over httpx)."""

    def __init__(self, *, base_url: str, api_key: str, profile: ProviderProfile,
                 timeout: float = 60.0, http_client: Any = None):
        import openai  # lazy: importing the SDK costs a few hundred milliseconds

        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.profile = profile
        self._api_key = api_key
        install_log_redaction(api_key)
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0,
                                     timeout=timeout, http_client=http_client)

    def _request_body(self, query: Query) -> dict[str, Any]:
        body: dict[str, Any] = {"model": query.model, "max_tokens": query.max_tokens,
                                "temperature": query.temperature, "n": query.n}
        if query.endpoint == "completions":
            body["prompt"] = list(query.prompt) if len(query.prompt) > 1 else query.prompt[0]
            if "prompt_embeds" in query.extra:  # vLLM: the embeddings are the prompt (its docs send None)
                body["prompt"] = None
            if query.logprobs is not None:
                body["logprobs"] = query.logprobs
            if query.echo:
                body["echo"] = True
        else:
            body["messages"] = [dict(m) for m in query.messages]
            if query.logprobs is not None or query.top_logprobs is not None:
                body["logprobs"] = True
            if query.top_logprobs is not None:
                body["top_logprobs"] = query.top_logprobs
        for name in ("top_p", "seed"):
            if getattr(query, name) is not None:
                body[name] = getattr(query, name)
        if query.stop is not None:
            body["stop"] = list(query.stop)
        return body

    def _post(self, query: Query) -> tuple[str, bytes]:
        """Send ``query`` to its route; the path and the raw body of the answer."""
        if query.endpoint == "hidden_stats":
            import httpx  # the SDK's own dependency, already imported with it

            body = {"model": query.model, "input": list(query.prompt), **query.extra}
            raw = self._client.post("/bbox/hidden_stats", cast_to=httpx.Response, body=body)
            return "/bbox/hidden_stats", raw.content
        if query.endpoint == "classify":  # inputs and output travel as the body's own fields
            import httpx

            body = {"model": query.model, **query.to_json()["extra"]}
            raw = self._client.post("/bbox/classify", cast_to=httpx.Response, body=body)
            return "/bbox/classify", raw.content
        api = self._client.completions if query.endpoint == "completions" else self._client.chat.completions
        out = api.with_raw_response.create(**self._request_body(query), extra_body=dict(query.extra) or None)
        return ("/completions" if query.endpoint == "completions" else "/chat/completions"), out.http_response.content

    def send(self, query: Query) -> Response:
        """Send one query; translate every failure into a bbox-lfm error."""
        oa = self._openai
        try:
            path, content = self._post(query)
        except oa.APIError as exc:
            scrub_exception(exc, [self._api_key])  # it is chained below, and a traceback prints it
            self._raise(exc)
        try:
            data = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            # cut off on the way (a proxy, a dropped connection behind a gateway): retried
            raise TruncatedResponseError(
                f"{self.base_url}{path} answered with a body that is not JSON ({len(content)} bytes)") from exc
        resp = parse_response(data, query.endpoint)
        price = self.profile.price(query.model)
        cost = price.cost(resp.usage.prompt_tokens, resp.usage.completion_tokens)
        return Response(choices=resp.choices, model=resp.model, usage=resp.usage, cost_usd=cost)

    def _raise(self, exc: Any) -> NoReturn:
        """Raise the bbox-lfm error for the SDK's ``exc`` (already scrubbed of the key)."""
        oa = self._openai
        if isinstance(exc, oa.APITimeoutError):
            raise APITimeoutError(f"no answer from {self.base_url} in time") from exc
        if isinstance(exc, oa.APIConnectionError):
            raise APIConnectionError(f"could not reach {self.base_url}: {redact(str(exc), [self._api_key])}") from exc
        if isinstance(exc, oa.APIStatusError):
            msg = redact(self._error_message(exc), [self._api_key])
            raise _status_error(exc.status_code, msg, retry_after_seconds(exc.response.headers)) from exc
        raise APIConnectionError(f"{self.base_url} failed: {redact(str(exc), [self._api_key])}") from exc

    @staticmethod
    def _error_message(exc: Any) -> str:
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            err = body.get("error", body)
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
        return str(getattr(exc, "message", exc))

    def models(self) -> list[dict[str, Any]]:
        """The provider's ``GET /models`` list, each entry as plain JSON (metadata kept)."""
        oa = self._openai
        try:
            raw = self._client.models.with_raw_response.list()
            data = json.loads(raw.http_response.content)
        except oa.APIError as exc:
            scrub_exception(exc, [self._api_key])
            self._raise(exc)
        except ValueError as exc:
            raise TruncatedResponseError(f"{self.base_url}/models answered with a body that is not JSON") from exc
        return list(data.get("data", []))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
