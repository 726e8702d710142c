"""Decoding: greedy or sampled continuations with a keys/values cache, several requests at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .forward import Forward, output_cache
from .tokenization import Sequence, Tokenization

__all__ = ["Generated", "generate", "generate_many"]


@dataclass
class Generated:
    """One generated continuation with per-token log-probs and optional top-k alternatives."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = "length"


def generate(
    forward: Forward,
    tokens: Tokenization,
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
        generator = torch.Generator(device=forward.device)
        if run_seed is None:
            generator.seed()
        else:
            generator.manual_seed(run_seed)
        generators.append(generator)
    # the deep prompt acts on the prompt positions only, i.e. on the prefill
    out, mask, positions = forward.prefill(seqs, use_cache=True, keep=1)
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
                if token in tokens.eos_ids or (stop and any(s in tokens.decode(gen.token_ids) for s in stop)):
                    done[row] = True
                    gen.finish_reason = "stop"
            if all(done) or step == max_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones((len(seqs), 1))], dim=-1)
            positions = positions[:, -1:] + 1
            out = forward.model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{forward.cache_arg: output_cache(out)},
            )
    return outs


def generate_many(
    forward: Forward, tokens: Tokenization, items: list[tuple[list[Sequence], int | None]], **settings: Any
) -> list[list[Generated]]:
    """`generate` for several requests' rows at once (the same settings; each its own seed):
    one decoding pass for all, one result list per request."""
    rows = [row for seqs, _ in items for row in seqs]
    out = generate(forward, tokens, rows, seed=None, groups=[(len(seqs), seed) for seqs, seed in items], **settings)
    results, at = [], 0
    for seqs, _ in items:
        results.append(out[at : at + len(seqs)])
        at += len(seqs)
    return results
