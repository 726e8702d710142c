"""A tiny randomly initialised causal LM with a word-level tokenizer, written to a directory:
a policy backbone for fast RLPrompt tests, built in-process (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path


def tiny_lm_dir(path: Path, *, n_words: int = 20, hidden: int = 16, seed: int = 0) -> Path:
    """Save a 1-layer Llama (hidden 16) and a whitespace word-level tokenizer over ``zebra``,
    ``w0`` .. ``w{n_words - 2}``, ``<|endoftext|>`` (id 0, the policy's source token) and
    ``<unk>`` under ``path``."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").is_file():
        return path
    words = ["zebra", *(f"w{i}" for i in range(n_words - 1))]
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, initializer_range=1.0,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
