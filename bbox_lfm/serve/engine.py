"""The model side of the server: one `Engine` owns a causal LM and runs every forward pass.

Only the batcher's worker thread calls the forward methods (`logprobs`, `generate`,
`hidden_stats`), so the per-call hook state below needs no lock. Tokenization is called from
request threads and is cached and locked.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidRequest

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel

__all__ = ["Engine", "Generated", "PromptTensors", "Sequence", "SoftSpan"]

# Rows x kept positions x vocabulary of one forward's logits; echo rows are chunked under it
# so a batch of long echo requests cannot allocate gigabytes of logits at once.
_MAX_LOGIT_POSITIONS = 2048
# Rows sharing at least this many leading positions (same ids, same soft prompt) have their common
# prefix run once and its keys/values reused: the demonstrations of in-context learning, a soft
# prompt and a template's head cost one pass instead of one per row.
_MIN_SHARED_PREFIX = 24
# Rows x prefix positions of a shared-prefix pass: the prefix's keys/values are copied per row.
_MAX_SHARED_POSITIONS = 8192
# How many computed prefixes (keys/values for one row) are kept for later batches and requests.
_PREFIX_CACHE_SIZE = 4


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


@dataclass
class Generated:
    """One generated continuation with per-token log-probs and optional top-k alternatives."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = "length"


def cache_argument(forward: Any) -> str:
    """The keyword under which ``forward`` takes past keys and values: ``cache`` in newer
    transformers, ``past_key_values`` before the rename. The wrong name is not an error there:
    ``**kwargs`` swallows it and the pass silently runs without the cached prefix."""
    params = inspect.signature(forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise TypeError(f"the model's forward takes neither 'cache' nor 'past_key_values': {list(params)}")


def output_cache(out: Any) -> Any:
    """The keys/values a forward pass with ``use_cache=True`` returned (either transformers' name)."""
    return out.cache if hasattr(out, "cache") else out.past_key_values


def _find_layers(model: Any, num_layers: int) -> Any:
    """The decoder's ModuleList of blocks (``model.model.layers`` for Llama-like models)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(f"cannot find a list of {num_layers} decoder layers in {type(model).__name__}")


def _clipped_std(x: torch.Tensor, clip: bool) -> float:
    """Std of all values; with ``clip``, first clip 5 times to mean +- 3 std as BBTv2 does."""
    x = x.double().flatten()
    if clip:
        for _ in range(5):
            mu, sd = x.mean(), x.std(unbiased=False)
            x = x.clamp(float(mu - 3 * sd), float(mu + 3 * sd))
    return float(x.std(unbiased=False))


class Engine:
    """Tokenizes prompts into `Sequence` rows and runs them through the model."""

    def __init__(self, loaded: LoadedModel, *, tokenizer_cache_size: int = 65536) -> None:

        self.model_id = loaded.model_id
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self._cache_arg = cache_argument(self.model.forward)
        self.device = loaded.device
        self.dtype = loaded.dtype
        config = self.model.config
        self.hidden_size: int = int(config.hidden_size)
        self.num_layers: int = int(config.num_hidden_layers)
        self.embeddings = self.model.get_input_embeddings()
        self.vocab_size: int = int(self.embeddings.weight.shape[0])
        self.context_length: int = int(
            getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        )
        self.embedding_std = float(self.embeddings.weight.detach().float().std())
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids: frozenset[int] = frozenset(eos if isinstance(eos, list) else [eos])
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = int(pad if pad is not None else next(iter(self.eos_ids), 0))
        self._tok_lock = threading.Lock()
        self._encode_cached = functools.lru_cache(maxsize=tokenizer_cache_size)(self._encode)
        self._token_text_cached = functools.lru_cache(maxsize=tokenizer_cache_size)(self._token_text)
        # Whatever the tokenizer puts in front of any text (a BOS token, or nothing).
        self.special_prefix: tuple[int, ...] = self._encode("", True)
        # Per-forward hook state, set and cleared by the worker thread around each call.
        self._deep: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._capture: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        # (soft key, prefix ids) -> per-layer (keys, values) of one row; worker thread only
        self._prefixes: OrderedDict[tuple[bytes, tuple[int, ...]], list[tuple[torch.Tensor, torch.Tensor]]] = (
            OrderedDict()
        )
        self.prefix_stats = {"shared_passes": 0, "prefix_hits": 0, "prefix_positions_saved": 0}
        layers = _find_layers(self.model, self.num_layers)
        for index, layer in enumerate(layers):
            layer.register_forward_pre_hook(self._make_hook(index), with_kwargs=True)
        self.check_prefix_reuse()

    def check_prefix_reuse(self) -> None:
        """Refuse to serve if a pass that reuses a shared prefix's keys/values disagrees with a
        plain pass on two probe rows. Such a pass once dropped the prefix without any error (a
        transformers release took the cache under another keyword), which scored soft prompts,
        chat system prompts and demonstrations as absent. Three small forward passes at start-up."""
        import torch

        probe = self.encode("A short probe shared by both rows, long enough to be reused. " * 3, specials=True)
        rows = [Sequence(probe + self.encode(tail, specials=False), 1) for tail in (" It was", " Then came the end")]
        n = self.shared_prefix(rows)
        if not n:
            return
        shared = self._logprobs_shared(rows, n)
        plain = [self.logprobs([row])[0] for row in rows]
        self._prefixes.clear()
        self.prefix_stats = dict.fromkeys(self.prefix_stats, 0)
        # mean over the vocabulary: half-precision rounding moves single rare tokens, a lost prefix
        # moves the whole distribution
        gap = max(float((a - b).abs().mean()) for a, b in zip(shared, plain))
        tolerance = 1e-3 if self.dtype == torch.float32 else 0.05
        if gap > tolerance:
            raise RuntimeError(
                f"the shared-prefix pass differs from a plain pass by {gap:.3g} in mean log-probability "
                f"(tolerance {tolerance}): this transformers version does not take the prefix's keys/values "
                f"under {self._cache_arg!r}; please report it with the version")

    # -- tokenization (request threads) --------------------------------------------------

    def _encode(self, text: str, specials: bool) -> tuple[int, ...]:
        with self._tok_lock:
            ids = self.tokenizer(text, add_special_tokens=specials)["input_ids"]
        return tuple(int(i) for i in ids)

    def encode(self, text: str, *, specials: bool) -> tuple[int, ...]:
        """Token ids of ``text`` (LRU-cached); ``specials`` adds the tokenizer's BOS if any."""
        return self._encode_cached(text, specials)

    def _token_text(self, token_id: int) -> str:
        with self._tok_lock:
            return str(self.tokenizer.decode([token_id]))

    def token_text(self, token_id: int) -> str:
        """The text of one token, as OpenAI's logprobs report it."""
        return self._token_text_cached(token_id)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        with self._tok_lock:
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

    def soft_span(self, prompt: PromptTensors, start: int) -> SoftSpan:
        """Model tensors for a sequence whose slots start at ``start``."""
        import torch

        values = torch.from_numpy(prompt.values).to(self.device, self.dtype)
        digest = hashlib.blake2b(f"{start}:{prompt.base_ids is None}:".encode(), digest_size=16)
        digest.update(np.ascontiguousarray(prompt.values).tobytes())
        deep = None
        if prompt.deep is not None:
            deep = torch.from_numpy(prompt.deep).to(self.device, self.dtype)
            digest.update(np.ascontiguousarray(prompt.deep).tobytes())
        return SoftSpan(start=start, values=values, replace=prompt.base_ids is None, deep=deep,
                        key=digest.digest())

    # -- forward passes (worker thread only) ---------------------------------------------

    def _make_hook(self, index: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if self._deep is None and self._capture is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if self._deep is not None:
                rows, cols, values = self._deep
                hidden = hidden.index_put((rows, cols), values[index], accumulate=True)
            if self._capture is not None:
                mask, stats = self._capture
                stats.append(hidden[mask])
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook

    def _inputs(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[Any, ...] | None]:
        """Left-padded embeddings, attention mask, position ids and deep-prompt scatter indices."""
        import torch

        width = max(len(s.ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq.ids) :] = torch.tensor(seq.ids, dtype=torch.long)
            mask[row, width - len(seq.ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = self.embeddings(ids)
        deep_rows: list[int] = []
        deep_cols: list[int] = []
        deep_values: list[torch.Tensor] = []
        for row, seq in enumerate(seqs):
            if seq.soft is None:
                continue
            start = width - len(seq.ids) + seq.soft.start
            stop = start + seq.soft.values.shape[0]
            if seq.soft.replace:
                embeds[row, start:stop] = seq.soft.values
            else:
                embeds[row, start:stop] += seq.soft.values
            if seq.soft.deep is not None:
                deep_rows += [row] * (stop - start)
                deep_cols += range(start, stop)
                deep_values.append(seq.soft.deep)
        deep = None
        if deep_values:
            deep = (
                torch.tensor(deep_rows, device=self.device),
                torch.tensor(deep_cols, device=self.device),
                torch.cat(deep_values, dim=1),
            )
        # Left padding shifts real tokens right; positions must still count from 0 per row.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return embeds, mask, positions, deep

    @staticmethod
    def _soft_key(seq: Sequence) -> bytes:
        return b"" if seq.soft is None else seq.soft.key

    @staticmethod
    def shared_prefix(seqs: list[Sequence]) -> int:
        """How many leading positions all ``seqs`` can share (0 when fewer than the minimum).

        The rows must have the same soft prompt, lying wholly inside the prefix, and every kept
        position must lie after it.
        """
        if len(seqs) < 2:
            return 0
        first = seqs[0]
        key = Engine._soft_key(first)
        limit = min(len(s.ids) - s.keep for s in seqs)
        if any(Engine._soft_key(s) != key for s in seqs[1:]):
            return 0
        n = 0
        for position in range(limit):
            token = first.ids[position]
            if any(s.ids[position] != token for s in seqs[1:]):
                break
            n = position + 1
        if first.soft is not None and first.soft.start + first.soft.values.shape[0] > n:
            return 0
        return n if n >= _MIN_SHARED_PREFIX else 0

    def plan(self, seqs: list[Sequence], max_batch: int) -> list[list[int]]:
        """Cut a merged batch into forward passes: rows sharing a long prefix (same soft prompt,
        same leading ids) go together, sorted by length; the rest by length, ``max_batch`` a pass."""
        order = sorted(range(len(seqs)), key=lambda i: (self._soft_key(seqs[i]), seqs[i].ids))
        passes: list[list[int]] = []
        rest: list[int] = []
        start = 0
        while start < len(order):
            stop = start + 1
            head = seqs[order[start]].ids[:_MIN_SHARED_PREFIX]
            key = self._soft_key(seqs[order[start]])
            while (stop < len(order) and seqs[order[stop]].ids[:_MIN_SHARED_PREFIX] == head
                   and self._soft_key(seqs[order[stop]]) == key):
                stop += 1
            group = order[start:stop]
            shared = self.shared_prefix([seqs[i] for i in group]) if len(head) == _MIN_SHARED_PREFIX else 0
            if shared:
                group.sort(key=lambda i: len(seqs[i].ids))
                rows = max(2, min(max_batch, _MAX_SHARED_POSITIONS // shared))
                passes += [group[i : i + rows] for i in range(0, len(group), rows)]
            else:
                rest += group
            start = stop
        rest.sort(key=lambda i: len(seqs[i].ids))
        passes += [rest[i : i + max_batch] for i in range(0, len(rest), max_batch)]
        return passes

    def logprobs(self, seqs: list[Sequence]) -> list[torch.Tensor]:
        """Next-token log-probs (float32, CPU) at the last ``keep`` positions of each sequence.

        The LM head runs only on the kept positions (``logits_to_keep``), not the whole sequence.
        Rows that share a long prefix (see :meth:`shared_prefix`) run it once.
        """
        import torch

        shared = self.shared_prefix(seqs)
        if shared and max(s.keep for s in seqs) * len(seqs) <= _MAX_LOGIT_POSITIONS:
            return self._logprobs_shared(seqs, shared)
        results: list[torch.Tensor] = []
        start = 0
        while start < len(seqs):
            stop = start + 1
            keep = seqs[start].keep
            while stop < len(seqs):
                wider = max(keep, seqs[stop].keep)
                if wider * (stop + 1 - start) > _MAX_LOGIT_POSITIONS:
                    break
                keep, stop = wider, stop + 1
            chunk = seqs[start:stop]
            out, _, _ = self._prefill(chunk, use_cache=False, keep=keep)
            with torch.inference_mode():
                logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
            results += [logp[row, keep - seq.keep :] for row, seq in enumerate(chunk)]
            start = stop
        return results

    def _prefix_kv(self, seq: Sequence, n: int) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``(m, per-layer keys and values)`` of ``seq``'s first m <= ``n`` positions (one row).

        A cached prefix is reused when it starts ``seq`` (same soft prompt), even if shorter than
        ``n``: one pass of a merged batch may share a few more tokens than the batch as a whole,
        and recomputing the whole prefix for it would cost more than running those few per row.
        """
        soft = self._soft_key(seq)
        head = seq.ids[:n]
        best = max((key for key in self._prefixes if key[0] == soft and head[:len(key[1])] == key[1]),
                   key=lambda key: len(key[1]), default=None)
        if best is not None:
            self._prefixes.move_to_end(best)
            self.prefix_stats["prefix_hits"] += 1
            return len(best[1]), self._prefixes[best]
        out, _, _ = self._prefill([Sequence(head, 1, seq.soft)], use_cache=True, keep=1)
        kv = [(layer.keys, layer.values) for layer in output_cache(out).layers]
        self._prefixes[soft, head] = kv
        while len(self._prefixes) > _PREFIX_CACHE_SIZE:
            self._prefixes.popitem(last=False)
        return n, kv

    def _logprobs_shared(self, seqs: list[Sequence], n: int) -> list[torch.Tensor]:
        """`logprobs` for rows whose first ``n`` positions are the same: the prefix runs once (or
        comes from the prefix LRU), then the left-padded suffixes run against its keys/values."""
        import torch
        from transformers import DynamicCache

        n, kv = self._prefix_kv(seqs[0], n)
        rows = len(seqs)
        cache = DynamicCache(config=self.model.config)
        for index, (keys, values) in enumerate(kv):
            cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), index)
        width = max(len(s.ids) for s in seqs) - n
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((rows, width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            tail = seq.ids[n:]
            ids[row, width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
            suffix_mask[row, width - len(tail) :] = 1
        ids, suffix_mask = ids.to(self.device), suffix_mask.to(self.device)
        mask = torch.cat([suffix_mask.new_ones((rows, n)), suffix_mask], dim=-1)
        positions = n + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(s.keep for s in seqs)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=keep, **{self._cache_arg: cache})
            logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
        self.prefix_stats["shared_passes"] += 1
        self.prefix_stats["prefix_positions_saved"] += n * (rows - 1)
        return [logp[row, keep - seq.keep :] for row, seq in enumerate(seqs)]

    def _prefill(self, seqs: list[Sequence], *, use_cache: bool, keep: int) -> Any:
        """One forward pass over ``seqs`` with their soft and deep prompts in place; returns the
        model output with the attention mask and position ids (generation continues from them)."""
        import torch

        embeds, mask, positions, deep = self._inputs(seqs)
        self._deep = deep
        try:
            with torch.inference_mode():
                out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                 use_cache=use_cache, logits_to_keep=keep)
        finally:
            self._deep = None
        return out, mask, positions

    def hidden_stats(self, seqs: list[Sequence], *, clip: bool) -> tuple[list[float], int]:
        """Std of the hidden states entering each layer over all real positions, and their count."""
        import torch

        embeds, mask, positions, deep = self._inputs(seqs)
        captured: list[torch.Tensor] = []
        self._deep, self._capture = deep, (mask.bool(), captured)
        try:
            with torch.inference_mode():
                self.model(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=1,
                )
        finally:
            self._deep, self._capture = None, None
        return [_clipped_std(h, clip) for h in captured], int(mask.sum())

    def generate(
        self,
        seqs: list[Sequence],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str],
        top_k: int,
        groups: list[tuple[int, int | None]] | None = None,
    ) -> list[Generated]:
        """Decode up to ``max_tokens`` per row (greedy at temperature 0), with a KV cache.

        Reported log-probs are those of the model's distribution before temperature and top-p.
        Rows end at an EOS token or when their text contains a stop string. ``groups`` splits
        the rows, in order, into (count, seed) runs that sample from their own generator, so
        requests decoded together draw what each would draw alone (default: one run, ``seed``).
        """
        import torch

        runs = groups if groups is not None else [(len(seqs), seed)]
        if sum(n for n, _ in runs) != len(seqs):
            raise ValueError(f"groups cover {sum(n for n, _ in runs)} rows; there are {len(seqs)}")
        generators = []
        for _, run_seed in runs:
            generator = torch.Generator(device=self.device)
            if run_seed is None:
                generator.seed()
            else:
                generator.manual_seed(run_seed)
            generators.append(generator)
        # the deep prompt acts on the prompt positions only, i.e. on the prefill
        out, mask, positions = self._prefill(seqs, use_cache=True, keep=1)
        outs = [Generated() for _ in seqs]
        done = [False] * len(seqs)
        with torch.inference_mode():
            for step in range(max_tokens):
                logits = out.logits[:, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                if temperature == 0:
                    chosen = logits.argmax(dim=-1)
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    if top_p < 1:
                        sorted_p, order = probs.sort(dim=-1, descending=True)
                        # Drop tokens once the mass before them already reaches top_p.
                        sorted_p[(sorted_p.cumsum(-1) - sorted_p) >= top_p] = 0
                        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
                    parts, at = [], 0
                    for (count, _), generator in zip(runs, generators):
                        parts.append(torch.multinomial(probs[at:at + count], 1, generator=generator))
                        at += count
                    chosen = torch.cat(parts).squeeze(-1)
                chosen_logp = logp.gather(-1, chosen[:, None]).squeeze(-1).cpu()
                top = logp.topk(top_k, dim=-1) if top_k else None
                chosen_list = chosen.cpu().tolist()
                for row, gen in enumerate(outs):
                    if done[row]:
                        continue
                    token = int(chosen_list[row])
                    gen.token_ids.append(token)
                    gen.logprobs.append(float(chosen_logp[row]))
                    if top is not None:
                        gen.top.append(list(zip(top.indices[row].tolist(), top.values[row].tolist())))
                    if token in self.eos_ids or (stop and any(s in self.decode(gen.token_ids) for s in stop)):
                        done[row] = True
                        gen.finish_reason = "stop"
                if all(done) or step == max_tokens - 1:
                    break
                mask = torch.cat([mask, mask.new_ones((len(seqs), 1))], dim=-1)
                positions = positions[:, -1:] + 1
                out = self.model(
                    input_ids=chosen[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self._cache_arg: output_cache(out)},
                )
        return outs

    def generate_many(self, items: list[tuple[list[Sequence], int | None]], **settings: Any) -> list[list[Generated]]:
        """`generate` for several requests' rows at once (the same settings; each its own seed):
        one decoding pass for all, one result list per request."""
        rows = [row for seqs, _ in items for row in seqs]
        out = self.generate(rows, seed=None, groups=[(len(seqs), seed) for seqs, seed in items], **settings)
        results, at = [], 0
        for seqs, _ in items:
            results.append(out[at : at + len(seqs)])
            at += len(seqs)
        return results
