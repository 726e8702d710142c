"""BBT's soft prompts on vLLM: bbox-lfm's ``soft_prompt`` queries as vLLM ``prompt_embeds`` requests.

vLLM started with ``--enable-prompt-embeds`` takes, in a Completions request, ``prompt_embeds``:
a base64 string (or a list of them, one sequence each) of a ``torch.save``'d
``[num_tokens, hidden_size]`` tensor, in place of the text prompt. It has no soft-prompt slot
and no label-word scoring, so :class:`PromptEmbedsAdapter`, wrapped around the HTTP adapter,
does both on the client side:

* each prompt becomes its full embedding sequence, as bbox-lfm's own server builds it: the
  tokenizer's special prefix, then the n soft-prompt rows (``E[base_ids] + values``, or
  ``values`` alone without ``base_ids``), then the text's tokens; with a ``placeholder``, the
  rows go where it stands. ``E`` and the tokenizer are the served model's, read locally
  (:class:`EmbeddingTable`, e.g. from the Hugging Face folder vLLM serves);
* ``label_words`` scoring becomes one generated token with ``top_k`` top log-probabilities
  (vLLM's ``--max-logprobs``, 20 by default); a label word's score is its first token's,
  and a word outside the top k gets the floor that :mod:`bbox_lfm.scoring` documents
  (``label_misses`` in the choice says how many).

Queries without a ``soft_prompt`` pass through unchanged. The client wraps its adapter in this
one when the profile has ``prompt_embeds`` (``--provider vllm-embeds``) and an embedding table
is named (``Client(embeddings=...)`` or ``$BBOX_LFM_EMBEDDINGS``); it then reports the
``soft_prompt`` and ``label_words`` capabilities, so BBT runs unchanged. Per-layer (deep)
prompts are refused: no engine accepts them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CapabilityError, check
from ..tensors import decode
from ..types import Choice, Query, Response

__all__ = ["EmbeddingTable", "PromptEmbedsAdapter", "from_prompt_embeds", "to_prompt_embeds", "wrap_prompt_embeds"]


def to_prompt_embeds(x: np.ndarray) -> str:
    """vLLM's wire form of one sequence: base64 of ``torch.save(tensor [tokens, hidden])``."""
    import torch

    check(np.asarray(x).ndim == 2, "prompt embeddings", "a [num_tokens, hidden_size] array", np.shape(x))
    buf = io.BytesIO()
    torch.save(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def from_prompt_embeds(data: str) -> np.ndarray:
    """The inverse of :func:`to_prompt_embeds`, read the way vLLM reads it (``weights_only``)."""
    import torch

    t = torch.load(io.BytesIO(base64.b64decode(data)), weights_only=True, map_location="cpu")
    return t.float().numpy()


class EmbeddingTable:
    """A model's tokenizer (``encode(text, add_special_tokens) -> ids``) and its input-embedding
    matrix ``[vocab, hidden]``: what the client needs to build prompt embeddings itself."""

    def __init__(self, encode: Callable[[str, bool], Sequence[int]], matrix: np.ndarray):
        self._encode = encode
        self.matrix = np.asarray(matrix, dtype=np.float32)
        check(self.matrix.ndim == 2, "matrix", "a [vocab, hidden] array", self.matrix.shape)
        self.special_prefix = tuple(int(i) for i in encode("", True))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> EmbeddingTable:
        """Read the tokenizer and the input embeddings of a Hugging Face model folder (the one
        vLLM serves) or of a GGUF file."""
        import transformers

        p = Path(path)
        kw: dict[str, Any] = {"gguf_file": p.name} if p.suffix == ".gguf" else {}
        folder = str(p.parent if p.suffix == ".gguf" else p)
        tok = transformers.AutoTokenizer.from_pretrained(folder, **kw)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, **kw)
        embeddings: Any = model.get_input_embeddings()
        matrix = embeddings.weight.detach().float().numpy().copy()
        del model
        return cls(lambda text, specials: tok(text, add_special_tokens=specials)["input_ids"], matrix)

    @property
    def hidden_size(self) -> int:
        """Columns of the matrix."""
        return int(self.matrix.shape[1])

    @property
    def embedding_std(self) -> float:
        """Standard deviation of the matrix's entries (BBT's s_e)."""
        return float(self.matrix.std())

    def sequence(self, text: str, soft: dict[str, Any]) -> np.ndarray:
        """The embedding rows of ``text`` with the soft prompt ``soft`` (bbox-lfm's wire form)."""
        values = decode(soft)
        base = soft.get("base_ids")
        rows = values + self.matrix[np.asarray(base, dtype=np.int64)] if base is not None else values
        placeholder = soft.get("placeholder")
        if placeholder is None:
            head = list(self.special_prefix)
            tail = list(self._encode(text, False))
        else:
            check(text.count(placeholder) == 1, "soft_prompt.placeholder", "exactly once in each prompt", text)
            before, after = text.split(placeholder)
            head = list(self._encode(before, True))
            tail = list(self._encode(after, False))
        return np.concatenate([self.matrix[head], rows, self.matrix[tail]]).astype(np.float32)


class PromptEmbedsAdapter:
    """Translate soft-prompt queries for vLLM (see the module docstring); ``inner`` sends."""

    def __init__(self, inner: Any, table: EmbeddingTable, *, top_k: int = 20):
        self.inner = inner
        self.table = table
        self.top_k = top_k

    def request(self, query: Query) -> Query:
        """The vLLM query for a soft-prompt query: one embedding sequence per prompt."""
        if "deep_prompt" in query.extra:
            raise CapabilityError("deep_prompt", "vllm-embeds", needed_by="per-layer prompts",
                                  hint="vLLM's prompt_embeds replace the input embeddings only")
        check(query.endpoint == "completions", "endpoint", "'completions' for prompt embeddings", query.endpoint)
        soft = dict(query.extra["soft_prompt"])
        embeds = [to_prompt_embeds(self.table.sequence(t, soft)) for t in query.prompt]
        extra = {k: v for k, v in query.extra.items() if k not in ("soft_prompt", "label_words")}
        extra["prompt_embeds"] = embeds
        scoring = "label_words" in query.extra
        return Query(prompt=("",), model=query.model, max_tokens=1 if scoring else query.max_tokens,
                     temperature=query.temperature, top_p=query.top_p, n=query.n, stop=query.stop, seed=query.seed,
                     logprobs=self.top_k if scoring else query.logprobs, extra=extra)

    def send(self, query: Query) -> Response:
        """Pass text queries through; translate soft-prompt ones and their answers."""
        if "soft_prompt" not in query.extra:
            return self.inner.send(query)
        resp = self.inner.send(self.request(query))
        words = query.extra.get("label_words")
        if not words:
            return resp
        from ..scoring import _from_top

        choices = []
        for c in resp.choices:
            top = c.logprobs.top_logprobs[0] if c.logprobs is not None and c.logprobs.top_logprobs else {}
            row, misses = _from_top(top, list(words))
            choices.append(Choice(index=c.index, text=c.text, finish_reason=c.finish_reason, logprobs=c.logprobs,
                                  extra={**c.extra, "label_logprobs": row, "label_misses": misses}))
        return resp.replace(choices=tuple(choices))

    def models(self) -> list[dict[str, Any]]:
        """The server's list, each entry with the table's facts as bbox-lfm metadata (BBT reads
        ``hidden_size`` and ``embedding_std``)."""
        lister = getattr(self.inner, "models", None)
        out = []
        for m in (lister() if lister else []):
            meta = {**dict(m.get("metadata") or {}), "hidden_size": self.table.hidden_size,
                    "embedding_std": self.table.embedding_std}
            out.append({**m, "metadata": meta})
        return out

    def close(self) -> None:
        """Close the inner adapter."""
        closer = getattr(self.inner, "close", None)
        if closer:
            closer()


def wrap_prompt_embeds(adapter: Any, profile: Any, embeddings: Any) -> tuple[PromptEmbedsAdapter, Any]:
    """``adapter`` wrapped for prompt embeddings, and ``profile`` with the capabilities that the
    wrapping gives (``soft_prompt``, ``label_words``; top-k as ``max_top_logprobs``)."""
    import dataclasses

    table = embeddings if isinstance(embeddings, EmbeddingTable) else EmbeddingTable.from_pretrained(embeddings)
    caps = dataclasses.replace(profile.capabilities, soft_prompt=True, label_words=True)
    wrapped = PromptEmbedsAdapter(adapter, table, top_k=max(1, caps.max_top_logprobs))
    return wrapped, dataclasses.replace(profile, capabilities=caps)
