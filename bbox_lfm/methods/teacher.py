"""The teacher of black-box distillation: the queried model as a labeller for a task.

Its answer for an input x is a distribution over the task's K labels:

* soft labels, where the provider gives log-probabilities: t(x) = log p(w_k | template(x)) for the
  label words w_k (exact scores, or the top-k floor documented in :mod:`bbox_lfm.scoring`);
* hard labels, where it does not: the label word the teacher writes first (greedy, a few
  tokens), one-hot; an answer naming no label word is a NaN row (dropped by the caller).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import check
from ..types import Query

__all__ = ["ONE_LABEL_SHARE", "SIGNALS", "OneLabelTeacherWarning", "Teacher", "as_input", "label_shares"]

SIGNALS = ("auto", "soft", "hard")
#: a teacher giving one label to at least this share of the transfer set draws a warning
ONE_LABEL_SHARE = 0.95


class OneLabelTeacherWarning(UserWarning):
    """The teacher gave nearly every transfer text the same label."""


def as_input(ex: Any) -> Any:
    """What a teacher or student takes for an `Example`: its text, or (text, text_pair)."""
    return ex.text if getattr(ex, "text_pair", None) is None else (ex.text, ex.text_pair)


def label_shares(logprobs: np.ndarray, n_labels: int) -> np.ndarray:
    """The share of each label among the teacher's answers (rows of ``logprobs``)."""
    counts = np.bincount(logprobs.argmax(axis=1), minlength=n_labels)
    return counts / max(len(logprobs), 1)


class Teacher:
    """The queried model as a labeller for a task: template + label words (+ a learned prompt).

    ``label(client, inputs)`` returns log-probabilities [n, K] (soft) or one-hot log-probs with
    -inf (hard), a NaN row where a hard answer named no label word. Every input goes as its own
    request, so each text is one cache entry whatever batch it was selected in: reruns and other
    selection strategies reuse earlier answers (the local server batches concurrent requests
    into shared forward passes anyway).
    """

    def __init__(self, task: Any, *, prompt: str = "", extra: Mapping[str, Any] | None = None,
                 signal: str = "auto", endpoint: str = "completions", hard_max_tokens: int = 3):
        check(signal in SIGNALS, "teacher_signal", f"one of {SIGNALS}", signal)
        check(endpoint in ("completions", "chat"), "teacher_endpoint", "'completions' or 'chat'", endpoint)
        self.task = task
        self.prompt = prompt
        self.extra = dict(extra or {})
        self.signal = signal
        self.endpoint = endpoint
        self.hard_max_tokens = hard_max_tokens

    def resolve(self, client: Any) -> str:
        """``soft`` where the provider gives label-word scores or logprobs, else ``hard``."""
        if self.signal != "auto":
            return self.signal
        caps = client.capabilities
        return "soft" if (caps.label_words or caps.logprobs) else "hard"

    def prompts(self, inputs: Sequence[Any]) -> list[str]:
        """The filled template for each input (text, or (text, text_pair))."""
        from ..tasks import Example

        return [self.task.format(Example(text=x, label=0) if isinstance(x, str)
                                 else Example(text=x[0], label=0, text_pair=x[1]), self.prompt) for x in inputs]

    def parse(self, text: str) -> int | None:
        """The label whose word the generated ``text`` names first (case-insensitive), or None."""
        low = text.strip().casefold()
        words = [w.strip().casefold() for w in self.task.label_words]
        for k, w in enumerate(words):
            if low.startswith(w):
                return k
        found = [(m.start(), k) for k, w in enumerate(words) for m in [re.search(rf"\b{re.escape(w)}\b", low)] if m]
        return min(found)[1] if found else None

    def _one(self, client: Any, prompt: str, signal: str) -> tuple[np.ndarray, int, float]:
        """(log-probs, misses, the provider's answer time) for one prompt."""
        K = len(self.task.label_words)
        if signal == "soft":
            s = client.score([prompt], self.task.label_words, extra=self.extra, endpoint=self.endpoint,
                             max_concurrency=1)
            return s.logprobs[0], s.misses, sum(r.latency_s for r in s.responses)
        if self.endpoint == "chat":
            q = Query(endpoint="chat", messages=({"role": "user", "content": prompt},),
                      max_tokens=self.hard_max_tokens, extra=self.extra)
        else:
            q = Query(prompt=(prompt,), max_tokens=self.hard_max_tokens, extra=self.extra)
        answer = client.send(q)
        k = self.parse(answer.text)
        row = np.full(K, np.nan) if k is None else np.where(np.arange(K) == k, 0.0, -np.inf)
        return row, 0, answer.latency_s

    def label(self, client: Any, inputs: Sequence[Any], *, progress: bool = False,
              desc: str = "teacher") -> tuple[np.ndarray, int]:
        """``(logprobs [n, K], misses)``, one teacher sequence per input, concurrently."""
        logprobs, misses, _ = self.label_timed(client, inputs, progress=progress, desc=desc)
        return logprobs, misses

    def label_timed(self, client: Any, inputs: Sequence[Any], *, progress: bool = False, desc: str = "teacher",
                    max_concurrency: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
        """:meth:`label`, plus the provider's answer time for each input in seconds (a cached
        answer keeps the time it took when it was fetched); ``max_concurrency=1`` sends one
        request at a time, so each time is the teacher's latency alone."""
        from tqdm.auto import tqdm

        prompts = self.prompts(inputs)
        if not prompts:
            return np.zeros((0, len(self.task.label_words))), 0, np.zeros(0)
        signal = self.resolve(client)
        with tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress, leave=False) as bar:
            rows = client.fan_out(lambda p: self._one(client, p, signal), prompts, name="teacher",
                                  max_concurrency=max_concurrency, on_done=lambda: bar.update(1))
        return (np.stack([r for r, _, _ in rows]), sum(m for _, m, _ in rows),
                np.array([t for _, _, t in rows], dtype=np.float64))
