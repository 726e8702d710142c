"""What each route does: validate a request, build `Sequence` rows, run them, shape the answer.

Everything here runs in request threads; model work goes through the `Batcher`, so concurrent
requests share forward passes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import next_token
from .engine import Engine, Generated, PromptTensors, Sequence, SoftSpan
from .errors import InvalidRequest
from .protocol import ChatRequest, CompletionRequest, HiddenStatsRequest
from .tensors import prompt_tensors

if TYPE_CHECKING:
    import torch

    from .batcher import Batcher
    from .config import ServeConfig

__all__ = ["Service"]

_HIDDEN_STATS_NOTE = "this endpoint leaks hidden-state statistics; BBTv2 needs them"


@dataclass(frozen=True)
class _Prompt:
    """One prompt as rows: its ids (with soft slots) and the model tensors for those slots."""

    text: str
    seq: Sequence  # keep=0: callers set how many positions they need


@dataclass(frozen=True)
class _Scored:
    """What the scoring pass gave for one prompt."""

    echo: torch.Tensor | None  # (len(ids), V) log-probs, row j predicts token j + 1
    labels: list[float] | None


class Service:
    """The server's behaviour, independent of the web framework."""

    def __init__(self, engine: Engine, batcher: Batcher[Any], config: ServeConfig) -> None:
        self.engine = engine
        self.batcher = batcher
        self.config = config
        self.created = int(time.time())

    # -- models ----------------------------------------------------------------------------

    def model_card(self) -> dict[str, Any]:
        """The OpenAI model object, with bbox-lfm metadata and capabilities."""
        e = self.engine
        return {
            "id": e.model_id,
            "object": "model",
            "created": self.created,
            "owned_by": "bbox-lfm",
            "metadata": {
                "hidden_size": e.hidden_size,
                "num_layers": e.num_layers,
                "vocab_size": e.vocab_size,
                "embedding_std": e.embedding_std,
                "context_length": e.context_length,
                "dtype": str(e.dtype).removeprefix("torch."),
                "device": str(e.device),
                "capabilities": {
                    "completions": True,
                    "chat": e.tokenizer.chat_template is not None,
                    "logprobs": True,
                    "max_top_logprobs": self.config.max_logprobs,
                    "echo": True,
                    "soft_prompt": True,
                    "deep_prompt": True,
                    "label_words": True,
                    "hidden_stats": True,
                    "next_token_logprobs": True,
                },
            },
        }

    def check_model(self, model: str) -> None:
        """404 in OpenAI's shape unless ``model`` is the served model."""
        if model != self.engine.model_id:
            raise InvalidRequest(
                f"The model '{model}' does not exist; this server serves '{self.engine.model_id}'",
                param="model",
                status=404,
                code="model_not_found",
            )

    # -- shared request handling -------------------------------------------------------------

    def _check_request(self, req: CompletionRequest | ChatRequest, top_k: int | None, param: str) -> None:
        """What the pydantic models cannot check: the served model, streaming, and the
        configured maximum of ``top_k`` alternatives (named ``param`` in the request)."""
        self.check_model(req.model)
        if req.stream:
            raise InvalidRequest("stream is not supported by this server", param="stream", status=400)
        if top_k is not None and top_k > self.config.max_logprobs:
            raise InvalidRequest(f"{param} must be in 0..{self.config.max_logprobs}; got {top_k}", param=param)

    def _envelope(self, kind: str, choices: list[dict[str, Any]], prompt_tokens: int,
                  completion_tokens: int) -> dict[str, Any]:
        """The response object around ``choices``: ``kind`` is "text_completion" or "chat.completion"."""
        prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.engine.model_id,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _prompts(
        self,
        texts: list[str],
        req: CompletionRequest | ChatRequest,
        *,
        specials: bool,
        max_tokens: int,
    ) -> tuple[list[_Prompt], PromptTensors | None]:
        e = self.engine
        tensors = self._tensors(req.soft_prompt, req.deep_prompt)
        prompts = []
        spans: dict[int, SoftSpan] = {}
        for index, text in enumerate(texts):
            ids, start = e.build(text, specials=specials, prompt=tensors, index=index)
            if not ids:
                raise InvalidRequest(f"prompt {index} is empty (no tokens)", param="prompt")
            if len(ids) + max_tokens > e.context_length:
                raise InvalidRequest(
                    f"prompt {index} has {len(ids)} tokens and max_tokens is {max_tokens}; "
                    f"together they must fit the context length of {e.context_length}",
                    param="prompt",
                    code="context_length_exceeded",
                )
            prompts.append(_Prompt(text, Sequence(ids, 0, self._span(spans, tensors, start))))
        return prompts, tensors

    def _tensors(self, soft: Any, deep: Any) -> PromptTensors | None:
        """A request's soft and deep prompts decoded and checked against the model's shapes."""
        e = self.engine
        tensors = prompt_tensors(soft, deep, hidden_size=e.hidden_size, num_layers=e.num_layers,
                                 vocab_size=e.vocab_size)
        if tensors is not None and tensors.n >= e.context_length:
            # the soft positions alone leave no room for text: the tensor is at fault, not the prompt
            name = "soft_prompt" if soft is not None else "deep_prompt"
            raise InvalidRequest(f"{name} must have fewer positions than the context length of {e.context_length};"
                                 f" got {tensors.n}", param=f"{name}.shape", code="context_length_exceeded")
        return tensors

    def _span(self, spans: dict[int, SoftSpan], tensors: PromptTensors | None, start: int | None) -> SoftSpan | None:
        """The request's soft span at ``start``, made once per request (``spans``) so its rows share
        one span, and with it one prefix key."""
        if tensors is None or start is None:
            return None
        if start not in spans:
            spans[start] = self.engine.soft_span(tensors, start)
        return spans[start]

    def _label_ids(self, words: list[str] | None) -> list[tuple[int, ...]] | None:
        if words is None:
            return None
        if not words:
            raise InvalidRequest("label_words must list at least one word", param="label_words")
        ids = [self.engine.encode(w, specials=False) for w in words]
        for index, word_ids in enumerate(ids):
            if not word_ids:
                raise InvalidRequest(f"label_words[{index}] has no tokens", param=f"label_words.{index}")
        return ids

    def _score(
        self,
        prompts: list[_Prompt],
        *,
        echo: bool,
        labels: list[tuple[int, ...]] | None,
    ) -> list[_Scored]:
        """One batched pass for echo log-probs and exact label-word log-probs.

        A label word of m tokens is scored on the prompt's ids followed by its first m - 1
        tokens, keeping the last m positions; single-token words need only the prompt's last
        position, which its main row keeps anyway.
        """
        rows: list[Sequence] = []
        for p in prompts:
            keep = len(p.seq.ids) if echo else (1 if labels else 0)
            rows.append(Sequence(p.seq.ids, keep, p.seq.soft))
        extra: dict[tuple[int, int], int] = {}
        for pi, p in enumerate(prompts):
            for wi, word in enumerate(labels or []):
                if len(word) > 1:
                    extra[pi, wi] = len(rows)
                    rows.append(Sequence(p.seq.ids + word[:-1], len(word), p.seq.soft))
        needed = [r for r in rows if r.keep > 0]
        if not needed:
            return [_Scored(None, None) for _ in prompts]
        computed = iter(self.batcher.score(needed))
        results = [next(computed) if r.keep > 0 else None for r in rows]
        scored = []
        for pi in range(len(prompts)):
            main = results[pi]
            label_logprobs = None
            if labels:
                assert main is not None
                label_logprobs = []
                for wi, word in enumerate(labels):
                    if len(word) == 1:
                        label_logprobs.append(float(main[-1, word[0]]))
                    else:
                        logp = results[extra[pi, wi]]
                        assert logp is not None
                        label_logprobs.append(float(sum(float(logp[j, t]) for j, t in enumerate(word))))
            scored.append(_Scored(main if echo else None, label_logprobs))
        return scored

    def _generate(
        self,
        prompts: list[_Prompt],
        req: CompletionRequest | ChatRequest,
        *,
        max_tokens: int,
        top_k: int,
    ) -> list[Generated]:
        """n samples per prompt, rows ordered prompt-major (choice index = prompt * n + sample)."""
        if max_tokens == 0:
            return [Generated(finish_reason="length") for _ in range(len(prompts) * req.n)]
        rows = [Sequence(p.seq.ids, 1, p.seq.soft) for p in prompts for _ in range(req.n)]
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        settings: dict[str, Any] = {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p,
                                    "stop": stop, "top_k": top_k}
        # concurrent requests with the same settings decode together (each keeps its own seed)
        key = tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in settings.items())
        result: list[Generated] = self.batcher.merge(
            key, (rows, req.seed), lambda items: self.engine.generate_many(items, **settings), size=len(rows)
        )
        return result

    def _text(self, gen: Generated, stop: str | list[str] | None) -> tuple[str, int]:
        """Generated text cut before the first stop string, and how many tokens it keeps."""
        text = self.engine.decode(gen.token_ids)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut < 0:
            return text, len(gen.token_ids)
        text = text[:cut]
        kept = 0
        while kept < len(gen.token_ids) and len(self.engine.decode(gen.token_ids[:kept])) < cut:
            kept += 1
        return text, kept

    # -- completions -------------------------------------------------------------------------

    def completions(self, req: CompletionRequest) -> dict[str, Any]:
        """``POST /v1/completions``."""
        self._check_request(req, req.logprobs, "logprobs")
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not texts:
            raise InvalidRequest("prompt must not be an empty list", param="prompt")
        labels = self._label_ids(req.label_words)
        prompts, _ = self._prompts(texts, req, specials=True, max_tokens=max_tokens)
        want_echo = req.echo and req.logprobs is not None
        scored = self._score(prompts, echo=want_echo, labels=labels)
        dists = None if req.next_token_logprobs is None else next_token.answer(
            self, [p.seq for p in prompts], req.next_token_logprobs)
        top_k = req.logprobs or 0
        generated = self._generate(prompts, req, max_tokens=max_tokens, top_k=top_k)
        choices = []
        completion_tokens = 0
        for index, gen in enumerate(generated):
            prompt, score = prompts[index // req.n], scored[index // req.n]
            text, kept = self._text(gen, req.stop)
            completion_tokens += kept
            choice: dict[str, Any] = {
                "index": index,
                "text": (prompt.text + text) if req.echo else text,
                "logprobs": None,
                "finish_reason": gen.finish_reason,
            }
            if req.logprobs is not None:
                choice["logprobs"] = self._legacy_logprobs(prompt, score, gen, kept, top_k, req.echo)
            if score.labels is not None:
                choice["label_logprobs"] = score.labels
            if dists is not None:
                choice[next_token.PARAM] = dists[index // req.n]
            choices.append(choice)
        return self._envelope("text_completion", choices, sum(len(p.seq.ids) for p in prompts), completion_tokens)

    def _top_dict(self, logp: torch.Tensor, k: int) -> dict[str, float]:
        values, indices = logp.topk(k) if k else (logp[:0], logp[:0].long())
        return {self.engine.token_text(int(i)): float(v) for i, v in zip(indices, values)}

    def _legacy_logprobs(
        self,
        prompt: _Prompt,
        score: _Scored,
        gen: Generated,
        kept: int,
        top_k: int,
        echo: bool,
    ) -> dict[str, Any]:
        e = self.engine
        tokens: list[str] = []
        token_logprobs: list[float | None] = []
        top_logprobs: list[dict[str, float] | None] = []
        if echo:
            assert score.echo is not None
            for j, token_id in enumerate(prompt.seq.ids):
                tokens.append(e.token_text(token_id))
                if j == 0:
                    token_logprobs.append(None)
                    top_logprobs.append(None)
                else:
                    token_logprobs.append(float(score.echo[j - 1, token_id]))
                    top_logprobs.append(self._top_dict(score.echo[j - 1], top_k))
        for j in range(kept):
            tokens.append(e.token_text(gen.token_ids[j]))
            token_logprobs.append(gen.logprobs[j])
            top_logprobs.append({e.token_text(i): v for i, v in gen.top[j]} if gen.top else {})
        offset = 0 if echo else len(prompt.text)
        text_offset = []
        for token in tokens:
            text_offset.append(offset)
            offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": text_offset,
        }

    # -- chat --------------------------------------------------------------------------------

    def _render(self, req: ChatRequest) -> str:
        tokenizer = self.engine.tokenizer
        if tokenizer.chat_template is None:
            raise InvalidRequest(
                f"model '{self.engine.model_id}' has no chat template; use /v1/completions",
                param="messages",
                status=400,
            )
        messages = []
        for index, message in enumerate(req.messages):
            content = message.content
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") != "text" or not isinstance(part.get("text"), str):
                        raise InvalidRequest(
                            f"messages[{index}].content parts must be text parts",
                            param=f"messages.{index}.content",
                        )
                    parts.append(part["text"])
                content = "".join(parts)
            messages.append({"role": message.role, "content": content or ""})
        try:
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception as exc:  # template errors (e.g. role order) are the caller's doing
            raise InvalidRequest(
                f"messages cannot be rendered with the chat template: {exc}", param="messages"
            ) from exc

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        """``POST /v1/chat/completions``."""
        self._check_request(req, req.top_logprobs, "top_logprobs")
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        max_tokens = 16 if limit is None else limit
        top_k = req.top_logprobs or 0
        text = self._render(req)
        labels = self._label_ids(req.label_words)
        # The template writes its special tokens as text; the tokenizer must not add more.
        prompts, _ = self._prompts([text], req, specials=False, max_tokens=max_tokens)
        scored = self._score(prompts, echo=False, labels=labels)
        generated = self._generate(prompts, req, max_tokens=max_tokens, top_k=top_k)
        choices = []
        completion_tokens = 0
        e = self.engine
        for index, gen in enumerate(generated):
            content, kept = self._text(gen, req.stop)
            completion_tokens += kept
            choice: dict[str, Any] = {
                "index": index,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": gen.finish_reason,
            }
            if req.logprobs:
                entries = []
                for j in range(kept):
                    token = e.token_text(gen.token_ids[j])
                    entries.append(
                        {
                            "token": token,
                            "logprob": gen.logprobs[j],
                            "bytes": list(token.encode("utf-8")),
                            "top_logprobs": [
                                {
                                    "token": e.token_text(i),
                                    "logprob": v,
                                    "bytes": list(e.token_text(i).encode("utf-8")),
                                }
                                for i, v in (gen.top[j] if gen.top else [])
                            ],
                        }
                    )
                choice["logprobs"] = {"content": entries}
            if scored[0].labels is not None:
                choice["label_logprobs"] = scored[0].labels
            choices.append(choice)
        return self._envelope("chat.completion", choices, len(prompts[0].seq.ids), completion_tokens)

    # -- hidden statistics -------------------------------------------------------------------

    def hidden_stats(self, req: HiddenStatsRequest) -> dict[str, Any]:
        """``POST /v1/bbox/hidden_stats``: the per-layer std BBTv2's projection needs."""
        self.check_model(req.model)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts:
            raise InvalidRequest("input must not be an empty list", param="input")
        e = self.engine
        tensors = self._tensors(req.soft_prompt, None)
        rows = []
        spans: dict[int, SoftSpan] = {}
        for index, text in enumerate(texts):
            ids, start = e.build(text, specials=True, prompt=tensors, index=index)
            if not ids or len(ids) > e.context_length:
                raise InvalidRequest(
                    f"input {index} must have 1..{e.context_length} tokens; got {len(ids)}",
                    param="input",
                )
            rows.append(Sequence(ids, 1, self._span(spans, tensors, start)))
        layer_std, n_tokens = self.batcher.call(lambda: e.hidden_stats(rows, clip=req.clip))
        return {
            "object": "hidden_stats",
            "model": e.model_id,
            "layer_std": layer_std,
            "n_tokens": n_tokens,
            "note": _HIDDEN_STATS_NOTE,
        }
