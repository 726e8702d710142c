"""What a run will cost, before anything is sent: the run rehearsed against a stand-in provider.

:func:`project_run` runs the harness (:func:`bbox_lfm.methods.harness.run`: search, dev and eval
scoring, the start template's comparison) on a fresh copy of the method, through a client with
the real one's profile, model, prices and batching but a stand-in provider that answers every
query at once, with a cache of its own that starts empty. What reached that stand-in is what the
run sends from an empty cache (answers already in your cache are free):

* ``calls``, ``requests`` and ``sequences`` are exact for methods whose number of steps does not
  depend on the answers (BBT, BDPL, the baselines, distillation's fixed budgets); a method
  that stops early on what it reads (an early-stopping rule, a budget met sooner) sends no more
  than projected;
* ``tokens_max`` and ``dollars_max`` are the upper bound the budget reserves for each query
  (:func:`bbox_lfm.budget.estimate_tokens`: a token is at least one UTF-8 byte), so a dollar
  budget at least ``dollars_max`` never stops the run;
* ``tokens_about`` and ``dollars_about`` count about four characters of English a token (the
  usual rule of thumb for BPE tokenizers) plus a few tokens of chat markup a message: a
  guide, not a bound (a chat template with a long system prompt adds more).

The stand-in answers are flat (every label word equally likely), so the rehearsal learns
nothing; only its queries are kept. Methods that need the provider's hidden statistics (BBTv2's
``hidden_stats``) or query classifiers (BiDf-MKD's ``classify``) cannot be rehearsed and raise
:class:`~bbox_lfm.errors.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .budget import estimate_tokens
from .errors import ConfigError
from .types import Query

__all__ = ["Projection", "project_run"]

_CHARS_PER_TOKEN = 4.0  # English text through a BPE tokenizer: about four characters a token
_CHAT_MARKUP_TOKENS = 4  # role and separators around each chat message


@dataclass(frozen=True)
class Projection:
    """A run's query plan: calls (the method's unit), HTTP requests, sequences, and the tokens
    and dollars it may cost (``_max``: the budget's reservation, a bound; ``_about``: a guide);
    ``repeats``: queries the run asks again, answered free by its cache."""

    calls: int
    requests: int
    repeats: int
    sequences: int
    tokens_max: int
    dollars_max: float
    tokens_about: int
    dollars_about: float
    provider: str
    model: str

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON."""
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.calls} calls, {self.requests} requests ({self.repeats} repeats answered by the cache), "
                f"{self.sequences} sequences to {self.provider} "
                f"({self.model}); about {self.tokens_about:,} tokens, ${self.dollars_about:.4f}; at most "
                f"{self.tokens_max:,} tokens, ${self.dollars_max:.4f}")


def _about_tokens(query: Query) -> tuple[int, int]:
    """(prompt, completion) tokens of ``query`` by the four-characters rule."""
    if query.endpoint == "chat":
        prompt = sum(math.ceil(len(str(m.get("content", ""))) / _CHARS_PER_TOKEN) + _CHAT_MARKUP_TOKENS
                     for m in query.messages)
    else:
        prompt = sum(math.ceil(len(p) / _CHARS_PER_TOKEN) for p in query.prompt)
    return prompt, query.max_tokens * query.sequences


def _stand_in(query: Query) -> dict[str, Any]:
    """A flat answer of the shape ``query`` asks for, its usage by the four-characters rule."""
    if query.endpoint not in ("completions", "chat"):
        raise ConfigError("method must send completions or chat queries to be projected (a stand-in cannot "
                          f"answer hidden statistics or a classifier's outputs); got a {query.endpoint} query")
    prompt, completion = _about_tokens(query)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    top = [{"token": "x", "logprob": -1.0}]
    if query.endpoint == "chat":
        choice = {"message": {"role": "assistant", "content": "x"}, "finish_reason": "length",
                  "logprobs": {"content": [{"token": "x", "logprob": -1.0, "top_logprobs": top}]}}
        return {"choices": [{"index": i, **choice} for i in range(query.n)], "usage": usage}
    words = query.extra.get("label_words")
    choices = []
    for i, p in enumerate(query.prompt):
        if query.echo:  # a prompt's tokens, four characters each
            tokens = [p[j:j + 4] for j in range(0, len(p), 4)] or [""]
            lp = {"tokens": tokens, "token_logprobs": [None] + [-1.0] * (len(tokens) - 1),
                  "top_logprobs": [None] * len(tokens)}
            choices.append({"index": i, "text": p, "logprobs": lp})
        elif words:
            choices.append({"index": i, "text": "", "finish_reason": "length",
                            "label_logprobs": [-math.log(len(words))] * len(words)})
        else:
            lp = {"tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": [{"x": -1.0}]}
            choices.append({"index": i, "text": "x" * max(1, query.max_tokens), "finish_reason": "length",
                            "logprobs": lp})
    return {"choices": choices, "usage": usage}


def project_run(method: Any, client: Any, task: Any, *, seed: int, **run_kw: Any) -> Projection:
    """The cost of ``harness.run(method, client, task, seed=seed, **run_kw)``, sending nothing.

    ``method`` is left untouched (a copy with the same configuration is rehearsed). A provider
    lacking a capability the method needs raises :class:`~bbox_lfm.errors.CapabilityError`
    here, as the run would. See the module docstring for what each figure means.
    """
    from .adapters.mock import MockAdapter
    from .client import Client
    from .methods.harness import run
    from .stores import MemoryStore

    stand_in = MockAdapter(_stand_in)
    # a cache of its own, empty: a query the run repeats (a prompt scored twice) is paid once
    rehearsal = Client(client.base_url, provider=client.profile, model=client.model, cache=MemoryStore(),
                       cache_mode="readwrite", adapter=stand_in, max_concurrency=client.max_concurrency,
                       requests_per_minute=0, tokens_per_minute=0)
    copy = type(method)(**method.get_config())
    result = run(copy, rehearsal, task, seed=seed, progress=False, **run_kw)
    price = client.profile.price(client.model)
    tokens_max = 0
    dollars_max = 0.0
    tokens_about = 0
    dollars_about = 0.0
    for q in stand_in.queries:
        bound = estimate_tokens(q)
        completion = q.max_tokens * q.sequences
        tokens_max += bound
        dollars_max += price.cost(bound, completion)  # as Budget.reserve prices it
        p, c = _about_tokens(q)
        tokens_about += p + c
        dollars_about += price.cost(p, c)
    calls = int(result.budget_spent.get("calls", 0)) + int(result.eval_spent.get("calls", 0))
    return Projection(calls=calls, requests=len(stand_in.queries), repeats=rehearsal.budget.cache_hits, sequences=sum(q.sequences for q in stand_in.queries),
                      tokens_max=tokens_max, dollars_max=round(dollars_max, 8), tokens_about=tokens_about,
                      dollars_about=round(dollars_about, 8), provider=client.profile.name, model=client.model or "")
