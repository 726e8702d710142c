"""The model side of the server: one `Engine` owns a causal LM and what the routes ask of it.

The work lies in four modules, each read on its own: `tokenization` (text to rows, soft-prompt
slots), `prefix` (which rows share a prefix; the keys/values kept for it), `forward` (log-probs,
hidden-state statistics) and `generation` (decoding). The engine wires them to one loaded model.
Only the batcher's worker thread calls the forward methods (`logprobs`, `generate`,
`hidden_stats`); tokenization is called from request threads and is cached and locked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import prefix
from .forward import Forward, cache_argument, output_cache
from .generation import Generated, generate, generate_many
from .tokenization import PromptTensors, Sequence, SoftSpan, Tokenization, soft_span

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel

__all__ = [
    "Engine",
    "Generated",
    "PromptTensors",
    "Sequence",
    "SoftSpan",
    "cache_argument",
    "output_cache",
]


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
        self.tokens = Tokenization(self.tokenizer, eos_token_id=config.eos_token_id, cache_size=tokenizer_cache_size)
        self.forward = Forward(self.model, device=self.device, dtype=self.dtype, pad_id=self.tokens.pad_id,
                               num_layers=self.num_layers)
        weight = self.forward.embeddings.weight
        self.vocab_size: int = int(weight.shape[0])
        self.context_length: int = int(
            getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        )
        self.embedding_std = float(weight.detach().float().std())
        self.eos_ids = self.tokens.eos_ids
        self.pad_id = self.tokens.pad_id
        self.special_prefix = self.tokens.special_prefix
        self.check_prefix_reuse()

    @property
    def prefix_stats(self) -> dict[str, int]:
        """Shared-prefix passes run, cached prefixes reused, and positions they saved."""
        return self.forward.prefixes.stats

    def check_prefix_reuse(self) -> None:
        """Refuse to serve if reusing a shared prefix's keys/values changes log-probs (two probe
        rows; three small forward passes at start-up). See `Forward.check_prefix_reuse`."""
        probe = self.encode("A short probe shared by both rows, long enough to be reused. " * 3, specials=True)
        tails = [self.encode(tail, specials=False) for tail in (" It was", " Then came the end")]
        self.forward.check_prefix_reuse(probe, tails)

    # -- tokenization (request threads) --------------------------------------------------

    def encode(self, text: str, *, specials: bool) -> tuple[int, ...]:
        """Token ids of ``text`` (LRU-cached); ``specials`` adds the tokenizer's BOS if any."""
        return self.tokens.encode(text, specials=specials)

    def token_text(self, token_id: int) -> str:
        """The text of one token, as OpenAI's logprobs report it."""
        return self.tokens.token_text(token_id)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        return self.tokens.decode(ids)

    def build(
        self, text: str, *, specials: bool, prompt: PromptTensors | None, index: int
    ) -> tuple[tuple[int, ...], int | None]:
        """Ids of ``text`` with the soft prompt's slots inserted, and their start (`Tokenization.build`)."""
        return self.tokens.build(text, specials=specials, prompt=prompt, index=index)

    def soft_span(self, prompt: PromptTensors, start: int) -> SoftSpan:
        """Model tensors for a sequence whose slots start at ``start``."""
        return soft_span(prompt, start, device=self.device, dtype=self.dtype)

    # -- planning and forward passes (worker thread only) --------------------------------

    shared_prefix = staticmethod(prefix.shared_prefix)
    plan = staticmethod(prefix.plan)

    def logprobs(self, seqs: list[Sequence]) -> list[torch.Tensor]:
        """Next-token log-probs (float32, CPU) at the last ``keep`` positions of each sequence."""
        return self.forward.logprobs(seqs)

    def hidden_stats(self, seqs: list[Sequence], *, clip: bool) -> tuple[list[float], int]:
        """Std of the hidden states entering each layer over all real positions, and their count."""
        return self.forward.hidden_stats(seqs, clip=clip)

    def generate(self, seqs: list[Sequence], **settings: Any) -> list[Generated]:
        """Decode continuations of ``seqs`` (see `generation.generate` for the settings)."""
        return generate(self.forward, self.tokens, seqs, **settings)

    def generate_many(self, items: list[tuple[list[Sequence], int | None]], **settings: Any) -> list[list[Generated]]:
        """Decode several requests' rows in one pass, one result list per request."""
        return generate_many(self.forward, self.tokens, items, **settings)
