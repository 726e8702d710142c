"""The client: the one place where queries are sent, counted, cached, retried and throttled.

The query path, outermost first::

    Client -> CacheLayer -> BudgetLayer -> RateLimitLayer -> RetryLayer -> adapter -> provider

A cache hit never reaches the budget; the budget counts what goes upstream once per logical
query, however many attempts the retry layer needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlparse

from .adapters.base import Sender
from .budget import Budget, charge_calls
from .errors import CapabilityError, ConfigError, check
from .fanout import fan_out
from .layers.budget import BudgetLayer
from .layers.cache import CACHE_MODES, CacheLayer
from .layers.ratelimit import RateLimitLayer
from .layers.retry import RetryLayer
from .profiles import ProviderProfile, load_profile, probed_profile
from .stores.base import Store
from .types import Capabilities, Query, Response

if TYPE_CHECKING:
    from .scoring import Scores

__all__ = ["Client"]

_log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


class Client:
    """Send queries to one OpenAI-compatible provider and model through the layer stack.

    Parameters (keyword-only after ``base_url``):
      base_url: the endpoint (``.../v1``); default ``$OPENAI_BASE_URL``, else the profile's.
      api_key: default from the profile's key variable (``OPENAI_API_KEY`` for openai); a
        placeholder is used for providers that need none (local servers).
      model: default model for queries that name none; default the profile's, else the one
        model the server lists (:meth:`resolve_model`).
      provider: a profile name (``openai``, ``vllm``, ``llama-cpp``, ``ollama``, ``bbox-lfm``,
        ``generic``), a path to a TOML profile, or a :class:`ProviderProfile`. Default: ``bbox-lfm``
        for a loopback URL, ``openai`` for api.openai.com, else ``generic``. A profile that
        ``bbox-lfm providers probe`` wrote for this URL gives the capabilities (the named
        profile, if any, the rest: key variable, prices, limits) unless ``probed=False`` or the
        provider is a ``.toml`` path or a :class:`ProviderProfile`.
      budget: limits for everything this client sends (default: unlimited, still counted).
      cache: a store object, a path to an SQLite file, or None for the default cache location.
      cache_mode: ``off``, ``readwrite``, ``replay`` or ``record``.
      max_concurrency: threads for :meth:`send_many` and :meth:`score`.
      adapter: a sender to use instead of the HTTP adapter (a ``MockAdapter`` in tests).
      cache_namespace: what identifies the provider in cache keys (default: the base URL). A
        local server on a random port gets a stable namespace, so its answers replay.
      embeddings: for a profile with ``prompt_embeds`` (vLLM ``--enable-prompt-embeds``), the
        served model's tokenizer and input embeddings (a Hugging Face folder or GGUF path, or an
        ``EmbeddingTable``; default ``$BBOX_LFM_EMBEDDINGS``): soft prompts then travel as
        prompt embeddings (:mod:`bbox_lfm.adapters.prompt_embeds`).
      sleep, clock: injected into retry and rate limiting for deterministic tests.
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, model: str | None = None,
                 provider: str | ProviderProfile | None = None, budget: Budget | None = None,
                 cache: Store | str | os.PathLike[str] | None = None, cache_mode: str | None = None,
                 max_concurrency: int = 16,
                 timeout: float = 120.0, max_attempts: int = 6, adapter: Sender | None = None,
                 cache_namespace: str | None = None, probed: bool = True, embeddings: Any = None,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        cache_mode = cache_mode or os.environ.get("BBOX_LFM_CACHE_MODE", "readwrite")
        check(cache_mode in CACHE_MODES, "cache_mode", f"one of {CACHE_MODES}", cache_mode)
        check(max_concurrency >= 1, "max_concurrency", ">= 1", max_concurrency)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.profile = self._resolve_profile(provider, base_url, probed)
        self.base_url = (base_url or self.profile.base_url).rstrip("/")
        self.model = model or self.profile.default_model or None
        self.model_source = "given" if model else ("profile" if self.model else "")
        self.cache_namespace = cache_namespace or self.base_url
        self.max_concurrency = max_concurrency
        self.cache_mode = cache_mode
        self.budget = budget if budget is not None else Budget()
        self.budget.price = self.profile.price(self.model)
        if adapter is None:
            from .adapters.openai_compat import OpenAICompatAdapter

            adapter = OpenAICompatAdapter(base_url=self.base_url, api_key=self._resolve_key(api_key),
                                          profile=self.profile, timeout=timeout)
        embeddings = embeddings if embeddings is not None else os.environ.get("BBOX_LFM_EMBEDDINGS")
        if self.profile.capabilities.prompt_embeds and embeddings:
            from .adapters.prompt_embeds import wrap_prompt_embeds

            adapter, self.profile = wrap_prompt_embeds(adapter, self.profile, embeddings)
        self.adapter = adapter
        rpm = self.profile.requests_per_minute if requests_per_minute is None else requests_per_minute
        tpm = self.profile.tokens_per_minute if tokens_per_minute is None else tokens_per_minute
        self._retry = RetryLayer(adapter, max_attempts=max_attempts, sleep=sleep)
        self._upstream: Sender = RateLimitLayer(self._retry,
                                                requests_per_minute=rpm, tokens_per_minute=tpm,
                                                clock=clock, sleep=sleep)
        self.store = self._open_store(cache) if cache_mode != "off" else None
        self._owns_store = self.store is not None and (cache is None or isinstance(cache, (str, os.PathLike)))
        self._budgeted: Sender = BudgetLayer(self._upstream, self.budget)
        self._hit_budgets: tuple[Budget, ...] = (self.budget,)  # a hit is counted in every enclosing budget
        self._stack = self._build_stack()
        self._model_info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------

    @staticmethod
    def _resolve_profile(provider: str | ProviderProfile | None, base_url: str | None,
                         probed: bool = True) -> ProviderProfile:
        if isinstance(provider, ProviderProfile):
            return provider
        provider = provider if provider is not None else os.environ.get("BBOX_LFM_PROVIDER") or None
        found = probed_profile(base_url) if probed and not str(provider or "").endswith(".toml") else None
        if provider is not None:
            named = load_profile(provider)
            if found is None:
                return named
            # measured beats documented: the probed capabilities, the named profile's key, prices, limits
            return dataclasses.replace(named, capabilities=found.capabilities, source=found.source,
                                       default_model=named.default_model or found.default_model)
        if found is not None:
            return found
        if base_url is None or "api.openai.com" in base_url:
            return load_profile("openai")
        return load_profile("bbox-lfm" if _is_loopback(base_url) else "generic")

    def _resolve_key(self, api_key: str | None) -> str:
        key = api_key or os.environ.get(self.profile.api_key_env)
        if key:
            return key
        if self.profile.api_key_required and not _is_loopback(self.base_url):
            raise ConfigError(
                f"api_key must be given or set in ${self.profile.api_key_env} for provider "
                f"{self.profile.name!r}; got nothing")
        return PLACEHOLDER_KEY

    @staticmethod
    def _open_store(cache: Store | str | os.PathLike[str] | None) -> Store:
        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            check(isinstance(cache, Store), "cache", "a store (bbox_lfm.stores.Store), a path or None",
                  type(cache).__name__)
            return cache
        from .stores.sqlite import SQLiteStore, default_cache_path

        return SQLiteStore(Path(cache) if cache is not None else default_cache_path())

    def _build_stack(self) -> Sender:
        if self.store is None:
            return self._budgeted
        budgets = self._hit_budgets

        def on_hit(response: Response) -> None:
            for b in budgets:
                b.record_hit(response)

        return CacheLayer(self._budgeted, self.store, mode=self.cache_mode, base_url=self.cache_namespace,
                          on_hit=on_hit)

    def with_budget(self, budget: Budget | None = None) -> Client:
        """A client sharing this one's provider, cache, rate limits and connections, with its own
        ``budget`` (a fresh, unlimited one by default) nested inside this client's: a query must
        fit both, and is counted in both. Methods use it to keep the search budget apart from
        dev and eval scoring."""
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.budget = budget if budget is not None else Budget()
        other.budget.price = self.profile.price(self.model)
        other._budgeted = BudgetLayer(self._budgeted, other.budget)
        other._hit_budgets = (*self._hit_budgets, other.budget)
        other._stack = other._build_stack()
        return other

    def with_cache_mode(self, mode: str) -> Client:
        """A client like this one (same budget) with another cache mode."""
        check(mode in CACHE_MODES, "cache_mode", f"one of {CACHE_MODES}", mode)
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.cache_mode = mode
        if other.store is None and mode != "off":
            raise ConfigError(f"cache_mode must be 'off' for a client without a cache; got {mode!r}")
        other._stack = other._build_stack()
        return other

    @classmethod
    def local(cls, server: Any = None, *, model_id: str | None = None, **kw: Any) -> Client:
        """A client for bbox-lfm's own local server (a ``LocalServer`` or its base URL).

        Cache keys use ``bbox-lfm-local:<model id>`` rather than the URL, so answers recorded
        against one port replay against another (or offline, with no server at all).
        """
        base_url = getattr(server, "base_url", server)
        model_id = model_id or getattr(server, "model_id", None) or load_profile("bbox-lfm").default_model
        kw.setdefault("provider", "bbox-lfm")
        kw.setdefault("model", model_id)
        kw.setdefault("cache_namespace", f"bbox-lfm-local:{model_id}")
        return cls(base_url, **kw)

    # -- sending ------------------------------------------------------------------------------

    def send(self, query: Query) -> Response:
        """Send one query through the whole stack (the client's model fills in a missing one)."""
        if query.model is None:
            query = query.with_model(self.model or self.resolve_model())
        return self._stack.send(query)

    def resolve_model(self) -> str:
        """This client's model; when none was named (nor by the profile), the one model the
        server lists in ``GET /models``, taken once and logged (``model_source`` says so)."""
        with self._info_lock:
            if self.model:
                return self.model
            listed = [str(m["id"]) for m in self.models() if isinstance(m, dict) and m.get("id")]
            if len(listed) != 1:
                raise ConfigError(f"model must be given in the query or to the Client; got None, and "
                                  f"{self.base_url} lists {len(listed)} models {listed[:10]}, not exactly one")
            self.model = listed[0]
            self.model_source = "the one model the server lists"
            self.budget.price = self.profile.price(self.model)
            _log.info("no model named; using %r, the one model %s lists", self.model, self.base_url)
            return self.model

    def send_many(self, queries: Sequence[Query], *, max_concurrency: int | None = None) -> list[Response]:
        """Send ``queries`` concurrently on a thread pool; answers come back in the same order.

        If any query fails, the others still finish (their answers are cached) and the first
        failure in query order is raised.
        """
        return self.fan_out(self.send, queries, max_concurrency=max_concurrency)

    def fan_out(self, fn: Callable[[Any], Any], items: Sequence[Any], *, max_concurrency: int | None = None,
                settle: bool = False, name: str = "bbox-lfm", on_done: Callable[[], None] | None = None) -> list[Any]:
        """``fn(item)`` for every item on a thread pool (at most ``max_concurrency``, default the
        client's), results in order; every item finishes, then the first error is raised (or, with
        ``settle``, every ``(result, error)`` is returned). See :func:`bbox_lfm.fanout.fan_out`."""
        return fan_out(fn, items, max_workers=max_concurrency or self.max_concurrency, settle=settle, name=name,
                       on_done=on_done)

    def score(self, prompts: Sequence[str], label_words: Sequence[str], *,
              extra: Mapping[str, Any] | None = None, strategy: str = "auto", endpoint: str = "completions",
              top_k: int | None = None, max_concurrency: int | None = None) -> Scores:
        """Log-probabilities of each label word right after each prompt (see :mod:`bbox_lfm.scoring`).

        One *call* in every budget (however many requests the provider needs for it)."""
        from .scoring import score

        with self._call():
            return score(self, prompts, label_words, extra=extra, strategy=strategy, endpoint=endpoint,
                         top_k=top_k, max_concurrency=max_concurrency)

    def generate(self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
                 endpoint: str = "completions", sample_id: int | None = None, **kw: Any) -> list[str]:
        """Generated text for each prompt (chat prompts become one user message each); one call."""
        with self._call():
            if endpoint == "chat":
                qs = [Query(endpoint="chat", messages=({"role": "user", "content": p},), max_tokens=max_tokens,
                            temperature=temperature, sample_id=sample_id, **kw) for p in prompts]
                return [r.text for r in self.send_many(qs)]
            batch = max(1, self.capabilities.max_batch)
            qs = [Query(prompt=tuple(prompts[i:i + batch]), max_tokens=max_tokens, temperature=temperature,
                        sample_id=sample_id, **kw) for i in range(0, len(prompts), batch)]
            return [c.text for r in self.send_many(qs) for c in r.choices]

    def one_call(self) -> contextlib.AbstractContextManager[None]:
        """Count what is sent inside as one method call (as :meth:`score` and :meth:`generate` do),
        for a method that sends its own queries (PromptBoosting's distributions)."""
        return self._call()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Count one method call in this client's budget and every enclosing one: refused before
        anything is sent when a calls limit is reached, given back when no answer came."""
        charge_calls(self._hit_budgets)
        try:
            yield
        except BaseException:
            for b in self._hit_budgets:
                b.refund_call()
            raise

    def classify(self, inputs: Any, *, model: str | None = None, output: str = "probabilities") -> Any:
        """Ask a classifier model about every row of ``inputs`` in ONE request: one call in every
        budget, answered from the cache or not.

        Returns a float array: ``[rows, classes]`` probabilities or logits, or ``[rows]`` class
        indices for ``output="top1"``. The provider profile's ``classify`` capability says the
        most revealing output it answers; asking for more raises :class:`CapabilityError` before
        anything is sent.
        """
        from .classify import classify

        with self._call():
            return classify(self, inputs, model=model, output=output)

    # -- provider facts -----------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """The provider's model list (with bbox-lfm metadata where the server gives it)."""
        lister = getattr(self.adapter, "models", None)
        # not a query (no budget, no cache: model_info is memoised), but a request all the same,
        # so a dropped connection or a 503 is retried like one
        return list(self._retry.call(lister)[0]) if lister else []

    def model_info(self) -> dict[str, Any]:
        """Metadata of this client's model from ``GET /models`` (hidden size, layers, embedding
        std, capabilities...); empty when the provider publishes none. Fetched once."""
        with self._info_lock:
            if self._model_info is None:
                info: dict[str, Any] = {}
                for m in self.models():
                    if m.get("id") == self.model or (self.model is None and not info):
                        info = dict(m.get("metadata") or {})
                self._model_info = info
            return self._model_info

    @property
    def capabilities(self) -> Capabilities:
        """What the provider can do, from its profile."""
        return self.profile.capabilities

    def require(self, *capabilities: str, needed_by: str = "", min_top_logprobs: int = 0) -> None:
        """Raise :class:`CapabilityError` unless the provider has every named capability."""
        caps = self.capabilities
        for name in capabilities:
            if not caps.has(name):
                raise CapabilityError(name, self.profile.name, needed_by=needed_by,
                                      hint="bbox-lfm's local server (provider 'bbox-lfm', `bbox-lfm serve`) has it")
        most = max(caps.max_top_logprobs if caps.logprobs else 0, caps.chat_max_top_logprobs if caps.chat_logprobs else 0)
        if min_top_logprobs and most < min_top_logprobs:
            raise CapabilityError(f"top_logprobs >= {min_top_logprobs}", self.profile.name, needed_by=needed_by,
                                  hint=f"it returns at most {most}")

    def budget_report(self) -> dict[str, Any]:
        """Spent and limit per unit, cache hits and dollars saved."""
        return self.budget.report()

    def close(self) -> None:
        """Release connections, and the cache file when this client opened it."""
        closer = getattr(self.adapter, "close", None)
        if closer:
            closer()
        if self._owns_store and self.store is not None:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Client(base_url={self.base_url!r}, provider={self.profile.name!r}, model={self.model!r}, "
                f"cache_mode={self.cache_mode!r})")
