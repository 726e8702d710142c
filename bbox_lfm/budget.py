"""A budget that can never be exceeded, also with many threads sending at once.

Four words, four figures (plus dollars):

* **calls** -- the method's unit, as the papers and the README count it: one prompt scored over
  a batch (the training batch during a search), i.e. one :meth:`Client.score` or
  :meth:`Client.generate`, however many requests the provider needs for it. A call is counted
  when it is answered, from the cache or not, so a rerun that replays takes the same steps;
  ``--budget`` is in calls for every provider. A call over the limit is refused before anything
  is sent (:func:`charge_calls`).
* **requests** -- HTTP requests that went upstream (cache hits are not requests).
* **sequences** -- prompts x n of those requests.
* **tokens**, **dollars** -- as the provider reported them.

Requests and sequences are known before sending and are reserved
exactly. Tokens and dollars are not known until the answer comes, so an upper bound is
reserved (UTF-8 bytes of the prompts, a token being at least one byte, plus the soft-prompt
length, plus ``max_tokens`` per sequence) and settled to the reported usage afterwards. A query
whose reservation does not fit raises :class:`~bbox_lfm.errors.BudgetExhausted` and is not sent.
Cache hits cost nothing; they are counted, with the money they saved. Retries (attempts beyond
the first, see :class:`~bbox_lfm.layers.retry.RetryLayer`) cost no call: they are counted apart.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from .errors import BudgetExhausted, check
from .profiles import Price
from .types import Query, Response

__all__ = ["UNITS", "Budget", "Reservation", "charge_calls", "estimate_tokens"]

UNITS = ("calls", "requests", "sequences", "tokens", "dollars")
_REQUEST_UNITS = ("requests", "sequences", "tokens", "dollars")
_CHAT_OVERHEAD_TOKENS = 16  # chat templates wrap each message in a few special tokens


def estimate_tokens(query: Query) -> int:
    """An upper bound on the prompt plus completion tokens that ``query`` can use."""
    if query.endpoint != "chat":
        texts = list(query.prompt)
        prompt = sum(len(t.encode("utf-8")) + 2 for t in texts)
    else:
        texts = [str(m.get("content", "")) for m in query.messages]
        prompt = sum(len(t.encode("utf-8")) + _CHAT_OVERHEAD_TOKENS for t in texts)
    n_soft = 0
    for key in ("soft_prompt", "deep_prompt"):
        spec = query.extra.get(key)
        if isinstance(spec, dict) and spec.get("shape"):
            n_soft = max(n_soft, int(spec["shape"][-2]))
    prompt += n_soft * max(1, len(query.prompt))
    labels = query.extra.get("label_words") or ()
    label_tokens = sum(len(str(w).encode("utf-8")) for w in labels) * max(1, len(query.prompt))
    return prompt + label_tokens + query.max_tokens * query.sequences


@dataclass(frozen=True)
class Reservation:
    """What one in-flight query has reserved."""

    tokens: int
    cost_usd: float
    sequences: int


class Budget:
    """Limits on calls, requests, sequences, tokens and dollars (``None`` = unlimited),
    thread-safe. ``cost_usd`` is the older name of ``dollars``.

    ``price`` prices the token reservation; the client sets it from the provider profile.
    """

    def __init__(self, *, calls: int | None = None, requests: int | None = None, sequences: int | None = None,
                 tokens: int | None = None, dollars: float | None = None, cost_usd: float | None = None,
                 price: Price | None = None):
        check(dollars is None or cost_usd is None, "dollars / cost_usd", "at most one of them (the same limit)",
              {"dollars": dollars, "cost_usd": cost_usd})
        dollars = cost_usd if dollars is None else dollars
        limits = {"calls": calls, "requests": requests, "sequences": sequences, "tokens": tokens, "dollars": dollars}
        for name, value in limits.items():
            check(value is None or value >= 0, name, "None or a number >= 0", value)
        self.limits: dict[str, float | None] = dict(limits)
        self.price = price or Price()
        self._lock = threading.Lock()
        self._spent = dict.fromkeys(UNITS, 0.0)
        self._reserved = dict.fromkeys(UNITS, 0.0)
        self.cache_hits = 0
        self.saved_usd = 0.0
        self.retries = 0

    def reserve(self, query: Query) -> Reservation:
        """Reserve what ``query`` may cost, or raise :class:`BudgetExhausted` (nothing reserved)."""
        tokens = estimate_tokens(query)
        need = {"requests": 1.0, "sequences": float(query.sequences), "tokens": float(tokens),
                "dollars": self.price.cost(tokens, 0) + self.price.cost(0, query.max_tokens * query.sequences)}
        with self._lock:
            for unit in _REQUEST_UNITS:
                limit = self.limits[unit]
                if limit is None:
                    continue
                used = self._spent[unit] + self._reserved[unit]
                if used + need[unit] > limit + 1e-12:
                    raise BudgetExhausted(unit, limit, used, need[unit], self._report_locked())
            # requests and sequences are exact and spent at once; tokens and dollars are bounds
            self._spent["requests"] += need["requests"]
            self._spent["sequences"] += need["sequences"]
            self._reserved["tokens"] += need["tokens"]
            self._reserved["dollars"] += need["dollars"]
        return Reservation(tokens=tokens, cost_usd=need["dollars"], sequences=query.sequences)

    def charge_call(self, n: int = 1) -> None:
        """Count ``n`` method calls, or raise :class:`BudgetExhausted` (nothing counted)."""
        with self._lock:
            limit = self.limits["calls"]
            if limit is not None and self._spent["calls"] + n > limit + 1e-12:
                raise BudgetExhausted("calls", limit, self._spent["calls"], n, self._report_locked())
            self._spent["calls"] += n

    def refund_call(self, n: int = 1) -> None:
        """Give back ``n`` calls that got no answer."""
        with self._lock:
            self._spent["calls"] -= n

    def settle(self, r: Reservation, response: Response) -> None:
        """Replace the reservation's bounds by what the answer actually used."""
        with self._lock:
            self._reserved["tokens"] -= r.tokens
            self._reserved["dollars"] -= r.cost_usd
            self._spent["tokens"] += response.usage.total_tokens
            self._spent["dollars"] += response.cost_usd
            self.retries += max(0, response.attempts - 1)

    def release(self, r: Reservation, *, sent: bool = True, attempts: int = 1) -> None:
        """Give back the token and dollar bounds of a query that got no answer.

        The request and its sequences stay spent when the query went upstream (``sent``); a
        query refused further down (by an enclosing budget) is refunded in full. ``attempts``
        beyond the first are counted as retries.
        """
        with self._lock:
            self.retries += max(0, attempts - 1)
            self._reserved["tokens"] -= r.tokens
            self._reserved["dollars"] -= r.cost_usd
            if not sent:
                self._spent["requests"] -= 1
                self._spent["sequences"] -= r.sequences

    def record_hit(self, response: Response) -> None:
        """Count a cache hit and the money it saved."""
        with self._lock:
            self.cache_hits += 1
            self.saved_usd += response.cost_usd

    def spent(self, unit: str) -> float:
        """What has been spent of ``unit`` (``cost_usd`` is read as ``dollars``)."""
        with self._lock:
            return self._spent["dollars" if unit == "cost_usd" else unit]

    def _report_locked(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for unit in UNITS:
            spent = self._spent[unit]
            out[unit] = {"spent": round(spent, 8) if unit == "dollars" else int(spent), "limit": self.limits[unit]}
        out["cache_hits"] = self.cache_hits
        out["saved_usd"] = round(self.saved_usd, 8)
        out["retries"] = self.retries
        return out

    def report(self) -> dict[str, Any]:
        """Spent and limit per unit, cache hits and dollars saved, as plain JSON."""
        with self._lock:
            return self._report_locked()

    def summary(self) -> dict[str, Any]:
        """The flat figures the results format stores (``budget_spent``): calls, requests,
        sequences, tokens, dollars, cache_hits (requests answered from the cache) and retries."""
        with self._lock:
            return {"calls": int(self._spent["calls"]), "requests": int(self._spent["requests"]),
                    "sequences": int(self._spent["sequences"]), "tokens": int(self._spent["tokens"]),
                    "dollars": round(self._spent["dollars"], 8), "cache_hits": self.cache_hits,
                    "retries": self.retries}

    def format(self) -> str:
        """One line per unit, for the end of CLI runs (calls are the method's, requests HTTP's)."""
        rep = self.report()
        lines = []
        for unit in UNITS:
            lim = rep[unit]["limit"]
            lines.append(f"{unit:>10}: {rep[unit]['spent']}" + (f" / {lim}" if lim is not None else ""))
        lines.append(f"{'cache hits':>10}: {rep['cache_hits']} (saved ${rep['saved_usd']:.4f})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Budget({json.dumps(self.report())})"


def charge_calls(budgets: tuple[Budget, ...] | list[Budget], n: int = 1) -> None:
    """Count ``n`` calls in every one of ``budgets`` (a client's budget and those enclosing
    it), or in none: the first that refuses raises :class:`BudgetExhausted` and the ones
    already charged are refunded."""
    done: list[Budget] = []
    try:
        for b in budgets:
            b.charge_call(n)
            done.append(b)
    except BudgetExhausted:
        for b in done:
            b.refund_call(n)
        raise
