"""Ask a running OpenAI-compatible server what it does, instead of assuming it.

:func:`probe` sends a handful of cheap requests (one-token answers to a short prompt) and
returns a :class:`ProbeResult`: the served models, how many top log-probabilities the
Completions and Chat endpoints return, whether ``echo`` works and with which ``max_tokens``,
whether ``max_tokens=0`` scores the prompt or generates without limit, and whether a list of
prompts is taken in one request. :func:`write_probed_profile` turns it into a profile (the named
profile's other values, prices and limits, kept) with a comment saying what answered each value.

Every probe goes straight to the server (no cache, no retries beyond one) and is counted; a
refused request (HTTP 4xx) is an answer ("not supported"), an unreachable server an error.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import APIStatusError, ConfigError, MalformedResponseError
from .profiles import ProviderProfile, probed_profile_path
from .types import Capabilities, Query, Response

__all__ = ["ProbeResult", "probe", "profile_toml", "write_probed_profile"]

PROBE_PROMPT = "The capital of France is"
_TOP_KS = (100, 20, 10, 5, 1)  # asked in turn until one is accepted; 20 is OpenAI's chat ceiling
_BATCH_SIZES = (2, 16)


@dataclass
class ProbeResult:
    """What the server answered: capability values, each with the request that showed it."""

    base_url: str
    model: str
    models: list[str]
    model_named: bool  # False: the one served model was taken
    capabilities: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    max_tokens_zero: str = "unknown"  # "scores", "generates" or "refused"
    requests: int = 0
    refusals: list[str] = field(default_factory=list)  # the servers' messages, for the user to read
    metadata_capabilities: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return dataclasses.asdict(self)


class _Prober:
    def __init__(self, client: Any, model: str):
        self.client = client
        self.model = model
        self.requests = 0
        self.refusals: list[str] = []

    def ask(self, query: Query) -> Response | None:
        """The answer, or None when the server refused the request (4xx)."""
        self.requests += 1
        try:
            return self.client.send(query.with_model(self.model))
        except (APIStatusError, MalformedResponseError) as exc:  # a refusal is an answer here
            self.refusals.append(str(exc)[:200])
            return None


def _models(client: Any) -> list[dict[str, Any]]:
    return [m for m in client.models() if isinstance(m, dict) and m.get("id")]


def _pick_model(listed: list[dict[str, Any]], model: str | None, base_url: str) -> tuple[str, bool]:
    ids = [str(m["id"]) for m in listed]
    if model:
        return model, True
    if len(ids) == 1:
        return ids[0], False
    raise ConfigError(f"--model must be given for {base_url}: it serves {len(ids)} models; got none "
                      f"(served: {ids[:20]})")


def _honoured(k: int, got: int) -> int:
    """The top-k a server honours when asked for ``k`` returned ``got`` tokens: ``k`` when it
    returned more than the next smaller ask would have (llama-cpp-python returns 99 for 100:
    two token ids that read the same share one key), else what it returned (a silent cap)."""
    smaller = max([x for x in _TOP_KS if x < k], default=0)
    return k if got > smaller else got


def _top_count(resp: Response | None) -> int:
    if resp is None or not resp.choices or resp.choices[0].logprobs is None:
        return 0
    top = resp.choices[0].logprobs.top_logprobs
    return len(top[0]) if top else 0


def probe(client: Any, *, model: str | None = None) -> ProbeResult:
    """Probe ``client``'s server (``client`` should have ``cache_mode="off"``)."""
    listed = _models(client)
    chosen, named = _pick_model(listed, model or client.model, client.base_url)
    meta = next((dict(m.get("metadata") or {}) for m in listed if m.get("id") == chosen), {})
    res = ProbeResult(base_url=client.base_url, model=chosen, models=[str(m["id"]) for m in listed],
                      model_named=named, metadata_capabilities=dict(meta.get("capabilities") or {}))
    p = _Prober(client, chosen)
    caps, ev = res.capabilities, res.evidence
    ev["models"] = f"GET /models listed {len(res.models)}"

    # Completions: logprobs, and how many top tokens come back
    caps["completions"] = caps["logprobs"] = False
    caps["max_top_logprobs"] = 0
    for k in _TOP_KS:
        r = p.ask(Query(prompt=(PROBE_PROMPT,), max_tokens=1, logprobs=k))
        if r is None:
            continue
        caps["completions"] = True
        got = _top_count(r)
        caps["logprobs"] = got > 0
        caps["max_top_logprobs"] = _honoured(k, got)
        ev["max_top_logprobs"] = f"completions logprobs={k} returned {got} top tokens"
        break
    else:
        ev["completions"] = f"completions refused logprobs={list(_TOP_KS)}"

    # echo with max_tokens=0: does the server score the prompt, or generate without limit?
    caps["echo"] = False
    caps["echo_max_tokens"] = 0
    if caps["completions"]:
        r0 = p.ask(Query(prompt=(PROBE_PROMPT,), max_tokens=0, echo=True, logprobs=1))
        if r0 is None:
            res.max_tokens_zero = "refused"
        else:
            extra = r0.text.removeprefix(PROBE_PROMPT)
            generated = r0.usage.completion_tokens > 0 or bool(extra)
            res.max_tokens_zero = "generates" if generated else "scores"
        ev["max_tokens_zero"] = (f"echo with max_tokens=0: {res.max_tokens_zero} "
                                 f"({r0.usage.completion_tokens if r0 else '-'} completion tokens)")
        for m in (0, 1):
            if m == 0 and res.max_tokens_zero != "scores":
                continue
            r = r0 if m == 0 else p.ask(Query(prompt=(PROBE_PROMPT,), max_tokens=1, echo=True, logprobs=1))
            lp = r.choices[0].logprobs if r is not None and r.choices else None
            echoed = (r is not None and r.text.startswith(PROBE_PROMPT) and lp is not None
                      and len(lp.tokens) >= 2 + m)
            if echoed and lp is not None:
                caps["echo"] = True
                caps["echo_max_tokens"] = m
                ev["echo"] = f"echo with max_tokens={m} returned the prompt and its {len(lp.tokens) - m} tokens"
                break
        else:
            ev["echo"] = "echo returned no prompt tokens"

    # are the echoed log-probabilities log p(token | tokens before it)? Echo the prompt followed by
    # the most likely next token: its echoed value must be the one the top-k gave it
    caps["echo_logprobs"] = False
    if caps["echo"] and caps["logprobs"]:
        r = p.ask(Query(prompt=(PROBE_PROMPT,), max_tokens=1, logprobs=1))
        first = r.choices[0].logprobs if r is not None and _top_count(r) else None
        top = first.top_logprobs[0] if first is not None else {}
        if top:
            token, value = max(top.items(), key=lambda kv: kv[1])
            m = caps["echo_max_tokens"]
            e = p.ask(Query(prompt=(PROBE_PROMPT + token,), max_tokens=m, echo=True, logprobs=1))
            lp = e.choices[0].logprobs if e is not None and e.choices else None
            if e is not None and lp is not None and len(lp.tokens) > m:
                last = (e.usage.prompt_tokens or len(lp.tokens) - m) - 1  # the prompt's last token
                echoed_lp = lp.token_logprobs[last]
                caps["echo_logprobs"] = echoed_lp is not None and abs(float(echoed_lp) - value) < 0.05
                ev["echo_logprobs"] = (f"{token!r} after the prompt: top-k {value:.3f}, echoed "
                                       f"{'-' if echoed_lp is None else f'{float(echoed_lp):.3f}'}")

    # a list of prompts in one request
    caps["max_batch"] = 1
    if caps["completions"]:
        for n in _BATCH_SIZES:
            prompts = tuple(f"{PROBE_PROMPT} {i}" for i in range(n))
            r = p.ask(Query(prompt=prompts, max_tokens=1))
            if r is None or sorted(c.index for c in r.choices) != list(range(n)):
                ev["max_batch"] = (f"a list of {n} prompts was "
                                   + ("refused" if r is None else f"answered with {len(r.choices)} choice(s)"))
                break
            caps["max_batch"] = n
            ev["max_batch"] = f"a list of {n} prompts got {n} choices (larger lists not tried)"

    # Chat: logprobs and top_logprobs
    caps["chat"] = caps["chat_logprobs"] = False
    caps["chat_max_top_logprobs"] = 0
    for k in _TOP_KS:
        r = p.ask(Query(endpoint="chat", messages=({"role": "user", "content": "Say yes."},), max_tokens=1,
                        logprobs=1, top_logprobs=k))
        if r is None:
            continue
        caps["chat"] = True
        got = _top_count(r)
        caps["chat_logprobs"] = got > 0
        caps["chat_max_top_logprobs"] = _honoured(k, got)
        ev["chat_max_top_logprobs"] = f"chat top_logprobs={k} returned {got}"
        break
    else:
        r = p.ask(Query(endpoint="chat", messages=({"role": "user", "content": "Say yes."},), max_tokens=1))
        caps["chat"] = r is not None
        ev["chat"] = "chat answered without logprobs" if r is not None else "chat refused"

    # engine extensions are only known from the server's own metadata (bbox-lfm publishes them)
    for name in ("soft_prompt", "deep_prompt", "label_words", "hidden_stats"):
        caps[name] = bool(res.metadata_capabilities.get(name, False))
        if res.metadata_capabilities:
            ev[name] = "GET /models metadata"
    res.requests = p.requests
    res.refusals = p.refusals
    return res


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def profile_toml(base: ProviderProfile, result: ProbeResult) -> str:
    """A profile file: ``base``'s values with the probed capabilities, each with its evidence."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [f"# Probed by `bbox-lfm providers probe` ({result.requests} requests) on {when}.",
             f"# Values marked 'probed' are what the server answered; the others are the {base.name!r} profile's.",
             f"name = {_toml_value(base.name)}", f"base_url = {_toml_value(result.base_url)}",
             f"api_key_env = {_toml_value(base.api_key_env)}",
             f"api_key_required = {_toml_value(base.api_key_required)}",
             f"default_model = {_toml_value(base.default_model)}"
             + ("  # none: the one model the server lists is used at run time, and said so"
                if not base.default_model else ""),
             f"source = {_toml_value(f'probed {result.base_url} at {when}')}",
             f"# served models: {result.models[:20]}", f"# max_tokens=0 with echo: {result.max_tokens_zero}",
             "", "[capabilities]"]
    merged = {**dataclasses.asdict(base.capabilities), **result.capabilities}
    for name in (f.name for f in dataclasses.fields(Capabilities)):
        why = result.evidence.get(name)
        probed = name in result.capabilities
        comment = f"  # probed: {why}" if probed and why else ("  # probed" if probed else f"  # from {base.name}")
        lines.append(f"{name} = {_toml_value(merged[name])}{comment}")
    lines += ["", "[limits]", f"requests_per_minute = {_toml_value(base.requests_per_minute)}",
              f"tokens_per_minute = {_toml_value(base.tokens_per_minute)}"]
    for model_name, price in base.prices.items():
        lines += ["", f"[prices.{_toml_value(model_name)}]", f"prompt = {price.prompt!r}",
                  f"completion = {price.completion!r}"]
    return "\n".join(lines) + "\n"


def write_probed_profile(base: ProviderProfile, result: ProbeResult, path: str | Path | None = None) -> Path:
    """Write the probed profile to ``path`` (default: where the client looks for ``base_url``)."""
    target = Path(path) if path is not None else probed_profile_path(result.base_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".toml.tmp")
    tmp.write_text(profile_toml(base, result), encoding="utf-8")
    tmp.replace(target)
    return target
