"""Text to rows: the tokenizer behind a lock and an LRU cache, and the soft-prompt slots.

Request threads tokenize concurrently, so every tokenizer call takes the lock; the caches make
repeated templates, label words and token texts free. A `Sequence` is one row of a forward
pass; a `SoftSpan` says where its soft prompt sits and what goes there.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidRequest

if TYPE_CHECKING:
    import torch

__all__ = ["PromptTensors", "Sequence", "SoftSpan", "Tokenization", "soft_span"]


@dataclass(frozen=True)
class PromptTensors:
    """A validated soft/deep prompt of n positions, shared by all prompts of one request."""

    n: int
    values: np.ndarray  # (n, D) float32, added to (or, without base_ids, replacing) embeddings
    base_ids: tuple[int, ...] | None
    placeholder: str | None
    deep: np.ndarray | None  # (L, n, D) float32, added to hidden states entering each layer


@dataclass(frozen=True)
class SoftSpan:
    """Where a sequence's n soft positions sit, and what goes there, as model tensors."""

    start: int
    values: torch.Tensor  # (n, D), model dtype and device
    replace: bool  # no base_ids: the embeddings there are `values` alone
    deep: torch.Tensor | None  # (L, n, D)
    key: bytes = b""  # digest of start, values and deep values: equal spans have equal keys


@dataclass(frozen=True)
class Sequence:
    """One row of a forward pass: token ids and how many trailing positions' log-probs to keep."""

    ids: tuple[int, ...]
    keep: int
    soft: SoftSpan | None = None


def soft_span(prompt: PromptTensors, start: int, *, device: Any, dtype: Any) -> SoftSpan:
    """Model tensors for a sequence whose slots start at ``start``."""
    import torch

    values = torch.from_numpy(prompt.values).to(device, dtype)
    digest = hashlib.blake2b(f"{start}:{prompt.base_ids is None}:".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(prompt.values).tobytes())
    deep = None
    if prompt.deep is not None:
        deep = torch.from_numpy(prompt.deep).to(device, dtype)
        digest.update(np.ascontiguousarray(prompt.deep).tobytes())
    return SoftSpan(start=start, values=values, replace=prompt.base_ids is None, deep=deep, key=digest.digest())


class Tokenization:
    """A Hugging Face tokenizer made safe for request threads, with the ids the server needs."""

    def __init__(self, tokenizer: Any, *, eos_token_id: int | list[int] | None, cache_size: int) -> None:
        self.tokenizer = tokenizer
        eos = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids: frozenset[int] = frozenset(eos if isinstance(eos, list) else [eos])
        pad = tokenizer.pad_token_id
        self.pad_id: int = int(pad if pad is not None else next(iter(self.eos_ids), 0))
        self._lock = threading.Lock()
        self._encode_cached = functools.lru_cache(maxsize=cache_size)(self._encode)
        self._token_text_cached = functools.lru_cache(maxsize=cache_size)(self._token_text)
        # Whatever the tokenizer puts in front of any text (a BOS token, or nothing).
        self.special_prefix: tuple[int, ...] = self._encode("", True)

    def _encode(self, text: str, specials: bool) -> tuple[int, ...]:
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=specials)["input_ids"]
        return tuple(int(i) for i in ids)

    def encode(self, text: str, *, specials: bool) -> tuple[int, ...]:
        """Token ids of ``text`` (LRU-cached); ``specials`` adds the tokenizer's BOS if any."""
        return self._encode_cached(text, specials)

    def _token_text(self, token_id: int) -> str:
        with self._lock:
            return str(self.tokenizer.decode([token_id]))

    def token_text(self, token_id: int) -> str:
        """The text of one token, as OpenAI's logprobs report it."""
        return self._token_text_cached(token_id)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        with self._lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def build(
        self,
        text: str,
        *,
        specials: bool,
        prompt: PromptTensors | None,
        index: int,
    ) -> tuple[tuple[int, ...], int | None]:
        """Ids of ``text`` with the soft prompt's n slots inserted, and the slots' start index.

        Slots go at the placeholder when one is given, else right after the special prefix.
        The slot ids are ``base_ids`` (so their embeddings can be added to) or the pad id.
        """
        if prompt is None:
            return self.encode(text, specials=specials), None
        slots = prompt.base_ids if prompt.base_ids is not None else (self.pad_id,) * prompt.n
        if prompt.placeholder is None:
            head = self.special_prefix if specials else ()
            tail = self.encode(text, specials=False)
        else:
            count = text.count(prompt.placeholder)
            if count != 1:
                raise InvalidRequest(
                    f"soft_prompt.placeholder {prompt.placeholder!r} must occur exactly once in "
                    f"each prompt; prompt {index} contains it {count} times",
                    param="soft_prompt.placeholder",
                )
            before, after = text.split(prompt.placeholder)
            head = self.encode(before, specials=specials)
            tail = self.encode(after, specials=False)
        return head + slots + tail, len(head)
