"""The model side of the server: one `Engine` owns a causal LM and runs every forward pass.

Only the batcher's worker thread calls the forward methods (`logprobs`, `generate`,
`hidden_stats`), so the per-call hook state below needs no lock. Tokenization is called from
request threads and is cached and locked.
"""

from __future__ import annotations

import functools
import threading
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
        layers = _find_layers(self.model, self.num_layers)
        for index, layer in enumerate(layers):
            layer.register_forward_pre_hook(self._make_hook(index), with_kwargs=True)

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
        deep = None
        if prompt.deep is not None:
            deep = torch.from_numpy(prompt.deep).to(self.device, self.dtype)
        return SoftSpan(start=start, values=values, replace=prompt.base_ids is None, deep=deep)

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

    def logprobs(self, seqs: list[Sequence]) -> list[torch.Tensor]:
        """Next-token log-probs (float32, CPU) at the last ``keep`` positions of each sequence.

        The LM head runs only on the kept positions (``logits_to_keep``), not the whole sequence.
        """
        import torch

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
    ) -> list[Generated]:
        """Decode up to ``max_tokens`` per row (greedy at temperature 0), with a KV cache.

        Reported log-probs are those of the model's distribution before temperature and top-p.
        Rows end at an EOS token or when their text contains a stop string.
        """
        import torch

        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
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
                    chosen = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
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
                    cache=out.cache,
                    use_cache=True,
                )
        return outs
