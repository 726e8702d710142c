"""A budget that can never be exceeded, also with many threads sending at once.

Calls (requests) and sequences (prompts x n) are known before sending and are reserved
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

__all__ = ["Budget", "Reservation", "estimate_tokens"]

UNITS = ("calls", "sequences", "tokens", "cost_usd")
_CHAT_OVERHEAD_TOKENS = 16  # chat templates wrap each message in a few special tokens


def estimate_tokens(query: Query) -> int:
    """An upper bound on the prompt plus completion tokens that ``query`` can use."""
    if query.endpoint == "completions":
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
    """Limits on calls, sequences, tokens and dollars (``None`` = unlimited), thread-safe.

    ``price`` prices the token reservation; the client sets it from the provider profile.
    """

    def __init__(self, *, calls: int | None = None, sequences: int | None = None,
                 tokens: int | None = None, cost_usd: float | None = None, price: Price | None = None):
        for name, value in (("calls", calls), ("sequences", sequences), ("tokens", tokens), ("cost_usd", cost_usd)):
            check(value is None or value >= 0, name, "None or a number >= 0", value)
        self.limits: dict[str, float | None] = {"calls": calls, "sequences": sequences, "tokens": tokens,
                                                "cost_usd": cost_usd}
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
        need = {"calls": 1.0, "sequences": float(query.sequences), "tokens": float(tokens),
                "cost_usd": self.price.cost(tokens, 0) + self.price.cost(0, query.max_tokens * query.sequences)}
        with self._lock:
            for unit in UNITS:
                limit = self.limits[unit]
                if limit is None:
                    continue
                used = self._spent[unit] + self._reserved[unit]
                if used + need[unit] > limit + 1e-12:
                    raise BudgetExhausted(unit, limit, used, need[unit], self._report_locked())
            # calls and sequences are exact and spent at once; tokens and dollars are bounds
            self._spent["calls"] += need["calls"]
            self._spent["sequences"] += need["sequences"]
            self._reserved["tokens"] += need["tokens"]
            self._reserved["cost_usd"] += need["cost_usd"]
        return Reservation(tokens=tokens, cost_usd=need["cost_usd"], sequences=query.sequences)

    def settle(self, r: Reservation, response: Response) -> None:
        """Replace the reservation's bounds by what the answer actually used."""
        with self._lock:
            self._reserved["tokens"] -= r.tokens
            self._reserved["cost_usd"] -= r.cost_usd
            self._spent["tokens"] += response.usage.total_tokens
            self._spent["cost_usd"] += response.cost_usd
            self.retries += max(0, response.attempts - 1)

    def release(self, r: Reservation, *, sent: bool = True, attempts: int = 1) -> None:
        """Give back the token and dollar bounds of a query that got no answer.

        The call and its sequences stay spent when the query went upstream (``sent``); a query
        refused further down (by an enclosing budget) is refunded in full. ``attempts`` beyond
        the first are counted as retries.
        """
        with self._lock:
            self.retries += max(0, attempts - 1)
            self._reserved["tokens"] -= r.tokens
            self._reserved["cost_usd"] -= r.cost_usd
            if not sent:
                self._spent["calls"] -= 1
                self._spent["sequences"] -= r.sequences

    def record_hit(self, response: Response) -> None:
        """Count a cache hit and the money it saved."""
        with self._lock:
            self.cache_hits += 1
            self.saved_usd += response.cost_usd

    def spent(self, unit: str) -> float:
        """What has been spent of ``unit``."""
        with self._lock:
            return self._spent[unit]

    def _report_locked(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for unit in UNITS:
            spent = self._spent[unit]
            out[unit] = {"spent": round(spent, 8) if unit == "cost_usd" else int(spent), "limit": self.limits[unit]}
        out["cache_hits"] = self.cache_hits
        out["saved_usd"] = round(self.saved_usd, 8)
        out["retries"] = self.retries
        return out

    def report(self) -> dict[str, Any]:
        """Spent and limit per unit, cache hits and dollars saved, as plain JSON."""
        with self._lock:
            return self._report_locked()

    def summary(self) -> dict[str, Any]:
        """The flat figures the results format stores: calls, sequences, tokens, cost_usd, cache_hits,
        retries."""
        with self._lock:
            return {"calls": int(self._spent["calls"]), "sequences": int(self._spent["sequences"]),
                    "tokens": int(self._spent["tokens"]), "cost_usd": round(self._spent["cost_usd"], 8),
                    "cache_hits": self.cache_hits, "retries": self.retries}

    def format(self) -> str:
        """One line per unit, for the end of CLI runs."""
        rep = self.report()
        lines = []
        for unit in UNITS:
            lim = rep[unit]["limit"]
            lines.append(f"{unit:>10}: {rep[unit]['spent']}" + (f" / {lim}" if lim is not None else ""))
        lines.append(f"{'cache hits':>10}: {rep['cache_hits']} (saved ${rep['saved_usd']:.4f})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Budget({json.dumps(self.report())})"
