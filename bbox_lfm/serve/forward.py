"""Forward passes: left-padded rows with their soft and deep prompts in place, log-probs at the
kept positions only, shared prefixes run once, and per-layer hidden-state statistics.

Only the batcher's worker thread calls these methods, so the per-call hook state (the deep
prompt to add, the hidden states to capture) needs no lock.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from .prefix import PrefixCache, shared_prefix
from .tokenization import Sequence

if TYPE_CHECKING:
    import torch

__all__ = ["Forward", "cache_argument", "clipped_std", "output_cache"]

# Rows x kept positions x vocabulary of one forward's logits; echo rows are chunked under it
# so a batch of long echo requests cannot allocate gigabytes of logits at once.
MAX_LOGIT_POSITIONS = 2048


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


def find_layers(model: Any, num_layers: int) -> Any:
    """The decoder's ModuleList of blocks (``model.model.layers`` for Llama-like models)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(f"cannot find a list of {num_layers} decoder layers in {type(model).__name__}")


def clipped_std(x: torch.Tensor, clip: bool) -> float:
    """Std of all values; with ``clip``, first clip 5 times to mean +- 3 std as BBTv2 does."""
    x = x.double().flatten()
    if clip:
        for _ in range(5):
            mu, sd = x.mean(), x.std(unbiased=False)
            x = x.clamp(float(mu - 3 * sd), float(mu + 3 * sd))
    return float(x.std(unbiased=False))


class Forward:
    """Runs `Sequence` rows through a causal LM whose decoder layers it hooks for deep prompts."""

    def __init__(self, model: Any, *, device: Any, dtype: Any, pad_id: int, num_layers: int) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.pad_id = pad_id
        self.cache_arg = cache_argument(model.forward)
        self.embeddings = model.get_input_embeddings()
        self.prefixes = PrefixCache()
        # Per-forward hook state, set and cleared by the worker thread around each call.
        self._deep: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._capture: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        for index, layer in enumerate(find_layers(model, num_layers)):
            layer.register_forward_pre_hook(self._make_hook(index), with_kwargs=True)

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

    def prefill(self, seqs: list[Sequence], *, use_cache: bool, keep: int) -> Any:
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

    def logprobs(self, seqs: list[Sequence]) -> list[torch.Tensor]:
        """Next-token log-probs (float32, CPU) at the last ``keep`` positions of each sequence.

        The LM head runs only on the kept positions (``logits_to_keep``), not the whole sequence.
        Rows that share a long prefix (see `shared_prefix`) run it once.
        """
        import torch

        shared = shared_prefix(seqs)
        if shared and max(s.keep for s in seqs) * len(seqs) <= MAX_LOGIT_POSITIONS:
            return self.logprobs_shared(seqs, shared)
        results: list[torch.Tensor] = []
        start = 0
        while start < len(seqs):
            stop = start + 1
            keep = seqs[start].keep
            while stop < len(seqs):
                wider = max(keep, seqs[stop].keep)
                if wider * (stop + 1 - start) > MAX_LOGIT_POSITIONS:
                    break
                keep, stop = wider, stop + 1
            chunk = seqs[start:stop]
            out, _, _ = self.prefill(chunk, use_cache=False, keep=keep)
            with torch.inference_mode():
                logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
            results += [logp[row, keep - seq.keep :] for row, seq in enumerate(chunk)]
            start = stop
        return results

    def _prefix_kv(self, seq: Sequence, n: int) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``(m, per-layer keys and values)`` of ``seq``'s first m <= ``n`` positions (one row),
        from the prefix cache when it holds a prefix of them, else computed and kept."""
        cached = self.prefixes.longest(seq, n)
        if cached is not None:
            return cached
        out, _, _ = self.prefill([Sequence(seq.ids[:n], 1, seq.soft)], use_cache=True, keep=1)
        kv = [(layer.keys, layer.values) for layer in output_cache(out).layers]
        self.prefixes.put(seq, n, kv)
        return n, kv

    def logprobs_shared(self, seqs: list[Sequence], n: int) -> list[torch.Tensor]:
        """`logprobs` for rows whose first ``n`` positions are the same: the prefix runs once (or
        comes from the prefix cache), then the left-padded suffixes run against its keys/values."""
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
                             logits_to_keep=keep, **{self.cache_arg: cache})
            logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
        self.prefixes.stats["shared_passes"] += 1
        self.prefixes.stats["prefix_positions_saved"] += n * (rows - 1)
        return [logp[row, keep - seq.keep :] for row, seq in enumerate(seqs)]

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
        return [clipped_std(h, clip) for h in captured], int(mask.sum())

    def check_prefix_reuse(self, probe: tuple[int, ...], tails: list[tuple[int, ...]]) -> None:
        """Refuse to serve if a pass that reuses a shared prefix's keys/values disagrees with a
        plain pass on the rows ``probe + tail``. Such a pass once dropped the prefix without any
        error (a transformers release took the cache under another keyword), which scored soft
        prompts, chat system prompts and demonstrations as absent."""
        import torch

        rows = [Sequence(probe + tail, 1) for tail in tails]
        n = shared_prefix(rows)
        if not n:
            return
        shared = self.logprobs_shared(rows, n)
        plain = [self.logprobs([row])[0] for row in rows]
        self.prefixes.clear()
        # mean over the vocabulary: half-precision rounding moves single rare tokens, a lost prefix
        # moves the whole distribution
        gap = max(float((a - b).abs().mean()) for a, b in zip(shared, plain))
        tolerance = 1e-3 if self.dtype == torch.float32 else 0.05
        if gap > tolerance:
            raise RuntimeError(
                f"the shared-prefix pass differs from a plain pass by {gap:.3g} in mean log-probability "
                f"(tolerance {tolerance}): this transformers version does not take the prefix's keys/values "
                f"under {self.cache_arg!r}; please report it with the version")
