"""Black-box Discrete Prompt Learning (BDPL; Diao et al., TMLR 2023).

A discrete prompt of n tokens is learned through an API that only returns label-word scores.
Each prompt position i holds a categorical distribution p_i over N candidate strings
(:mod:`bbox_lfm.vocab`: PMI n-grams of the training text, or a user list), initialised
uniform. One step:

1. sample I prompts s_1..s_I, s_k[i] ~ Cat(p_i);
2. score each on the whole training batch (one call each, all I sent concurrently) and take
   its loss L_k (cross-entropy over the label-word scores by default);
3. variance-reduced score-function gradient w.r.t. the probability matrix,
   g = 1/(I-1) * sum_k (L_k - mean L) * grad_p log p(s_k),  grad_p log p(s_k)[i, j] = [j = s_k[i]] / p_ij;
4. clip ||g|| at 3, one AdamW step (lr 1e-4, weight decay 0.1), project each row of p back
   onto the probability simplex.

Every ``eval_every`` calls the most likely prompt (argmax of each row) is scored on the dev
split; the one with the best dev metric is kept (a copy) and used for prediction.

**Calls** are counted as the paper counts them: one call = one pass over the training batch
(one ``client.score``), and ``budget`` limits calls on every provider. The local server takes
the whole batch in one request; a provider that takes one prompt per request (Chat
Completions, llama.cpp) needs one request per training example: ``budget_spent`` gives those
``requests`` apart. The search's own call counter (cache hits included) decides when to stop,
so a rerun that replays from the cache takes exactly the same steps.

**Start and calibration.** The prompt fills the template's ``{prompt}`` slot (or goes in front),
so a run starting from a user's template (:mod:`bbox_lfm.tasks.start`) learns the words to put
there; the harness compares the result with the template alone. ``calibrate=True`` applies
contextual calibration (:mod:`bbox_lfm.tasks.calibration`) to every score: the three
content-free prompts, with the same discrete prompt, go in the same request as the training
batch (on a one-prompt-a-request provider, three more requests a call).

**Scoring** goes through :meth:`bbox_lfm.Client.score`: exact label-word scores where the
provider has them (bbox-lfm's server), else the top-k log-probabilities (at most 20 on hosted
chat APIs) with the floor documented in :mod:`bbox_lfm.scoring`. Floored (missing) label
words are counted and reported (``misses_``).

**Bugs of the official code (shizhediao/Black-Box-Prompt-Learning) fixed here:**

* Margin loss with the wrong sign: ``MarginLoss`` returns ``relu(s_y - max_other + m) - m``,
  which is smallest when the true label scores *lowest*. Here the hinge loss is
  ``mean max(0, m - (s_y - max_{c != y} s_c))``.
* A flag that can never be false: ``--ce_loss`` is declared ``type=bool``, and
  ``bool("False")`` is True, so the margin loss could never be chosen. Here ``loss`` is a
  choice of ``"ce"`` or ``"hinge"``.
* The "best" prompt aliased to the final one: ``best_prompts_probs = prompts_probs`` keeps a
  reference to the live tensor, so the test used the final distribution. Here the best-dev
  prompt and distribution are copies.
* An epoch cap far below the budget: the loop stops after ``num_train_epochs`` = 30 epochs,
  one step each at 16 shots (600 of the 8,000 calls). Here the search runs until the budget
  is spent.

The official gradient puts -1/p_ij at every entry that was *not* sampled as well; because
sum_k (L_k - mean L) = 0, that sum equals exactly twice the true score-function gradient used
here (Adam removes the factor, up to the clipping).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, ConfigError, check
from ..tasks.calibration import apply_calibration
from ..tasks.evaluate import content_free_prompts, score_prompts
from ..tasks.metrics import metrics_from_predictions
from ..vocab import candidate_vocabulary, load_candidates
from .base import Method, register

__all__ = ["BDPL", "AdamW", "CategoricalPolicy", "project_simplex"]

LOSSES = ("ce", "hinge")


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of ``v`` onto the probability simplex (sorting-based,
    Duchi et al. 2008): w = max(v - theta, 0) with theta chosen so that each row sums to 1."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    u = -np.sort(-v, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    j = np.arange(1, v.shape[1] + 1)
    # rho = the largest j with u_j - (sum_{r<=j} u_r - 1) / j > 0
    rho = np.count_nonzero(u - css / j > 0, axis=1)
    theta = css[np.arange(v.shape[0]), rho - 1] / rho
    return np.maximum(v - theta[:, None], 0.0)


class AdamW:
    """AdamW (Loshchilov & Hutter) as ``torch.optim.AdamW`` computes it, on one numpy array:
    decoupled weight decay x <- x (1 - lr wd), then the bias-corrected Adam step."""

    beta1: ClassVar[float] = 0.9
    beta2: ClassVar[float] = 0.999
    eps: ClassVar[float] = 1e-8

    def __init__(self, shape: tuple[int, ...], *, lr: float, weight_decay: float):
        self.lr = lr
        self.weight_decay = weight_decay
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def step(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The parameters after one step from ``x`` along gradient ``g``."""
        self.t += 1
        x = x * (1.0 - self.lr * self.weight_decay)                    # x <- x (1 - lr wd)
        self.m = self.beta1 * self.m + (1 - self.beta1) * g             # m <- b1 m + (1 - b1) g
        self.v = self.beta2 * self.v + (1 - self.beta2) * g * g         # v <- b2 v + (1 - b2) g^2
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        return x - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)        # x <- x - lr m^ / (sqrt(v^) + eps)

    def state(self) -> dict[str, Any]:
        """Moments and step count as JSON."""
        return {"m": self.m.tolist(), "v": self.v.tolist(), "t": self.t}


class CategoricalPolicy:
    """n independent categorical distributions over N candidates (the rows of ``p``), trained
    by the variance-reduced score-function estimator; ask/tell like the other optimizers."""

    def __init__(self, n: int, N: int, *, lr: float, weight_decay: float, clip_norm: float):
        self.p = np.full((n, N), 1.0 / N)                               # uniform initialisation
        self.clip_norm = clip_norm
        self.opt = AdamW(self.p.shape, lr=lr, weight_decay=weight_decay)

    def ask(self, rng: np.random.Generator, I: int) -> np.ndarray:
        """I prompts as candidate indices, shape [I, n]: s_k[i] ~ Cat(p_i) (inverse CDF)."""
        cdf = np.cumsum(self.p, axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random((I, self.p.shape[0]))
        s = np.stack([np.searchsorted(cdf[i], u[:, i], side="right") for i in range(self.p.shape[0])], axis=1)
        return np.minimum(s, self.p.shape[1] - 1)

    def gradient(self, S: np.ndarray, L: Sequence[float]) -> np.ndarray:
        """g = 1/(I-1) sum_k (L_k - mean L) grad_p log p(s_k), with grad_p log p(s_k)[i, j] = [j = s_k[i]] / p_ij."""
        losses = np.asarray(L, dtype=np.float64)
        I, n = S.shape
        w = (losses - losses.mean()) / (I - 1)
        g = np.zeros_like(self.p)
        rows = np.arange(n)
        for k in range(I):
            g[rows, S[k]] += w[k] / self.p[rows, S[k]]
        return g

    def tell(self, S: np.ndarray, L: Sequence[float]) -> None:
        """One update from the losses ``L`` of the prompts ``S`` returned by :meth:`ask`."""
        g = self.gradient(S, L)
        norm = float(np.linalg.norm(g))
        if norm > self.clip_norm:                                       # g <- g * c / ||g||
            g = g * (self.clip_norm / (norm + 1e-6))
        self.p = project_simplex(self.opt.step(self.p, g))              # p <- Proj_simplex(AdamW(p, g))

    def mode(self) -> np.ndarray:
        """The most likely prompt: argmax of each row."""
        return np.asarray(self.p.argmax(axis=1))


def label_loss(S: np.ndarray, y: np.ndarray, loss: str, margin: float) -> float:
    """Mean loss over examples from label-word scores ``S`` [n_examples, K] and labels ``y``.

    ``ce``: -log softmax(S)[y]. ``hinge``: max(0, margin - (S[y] - max_{c != y} S[c])).
    """
    rows = np.arange(len(y))
    if loss == "ce":
        m = S.max(axis=1, keepdims=True)
        log_z = (m + np.log(np.exp(S - m).sum(axis=1, keepdims=True)))[:, 0]
        return float(np.mean(log_z - S[rows, y]))
    others = S.copy()
    others[rows, y] = -np.inf
    return float(np.mean(np.maximum(0.0, margin - (S[rows, y] - others.max(axis=1)))))


@register
class BDPL(Method):
    """Black-box Discrete Prompt Learning. Hyperparameters (defaults = the paper's):

    prompt_length: n, tokens (candidate strings) in the prompt.
    n_candidates: N, candidates per position (fewer when the text or the list has fewer).
    sample_size: I, prompts sampled per step (one call each).
    lr, weight_decay: AdamW's, on the probability matrix.
    clip_norm: the gradient's norm is clipped to this.
    budget: search calls (passes over the training batch), dev scoring not counted.
    eval_every: score the most likely prompt on dev every this many calls (and at the end);
      the default, one step, is the official code's once per epoch at 16 shots.
    seed: the few-shot split (``task.few_shot(seed)``) and the sampling generator.
    candidates: a list of strings or a text file (one per line) instead of the PMI vocabulary.
    loss: ``ce`` (cross-entropy over label-word scores) or ``hinge`` (margin ``margin``).
    strategy, endpoint, top_k: how label words are scored (see :mod:`bbox_lfm.scoring`):
      ``strategy="topk", endpoint="chat", top_k=20`` is what a hosted chat API allows.
    calibrate: contextual calibration of every score (search, dev checks, predictions).
    """

    leaves_scores: ClassVar[bool] = True

    name: ClassVar[str] = "bdpl"
    needs: ClassVar[tuple[str, ...]] = ("logprobs",)
    tiny_config: ClassVar[dict[str, Any]] = {"budget": 8, "sample_size": 4, "n_candidates": 10, "prompt_length": 2,
                                             "eval_every": 4}

    def __init__(self, *, prompt_length: int = 10, n_candidates: int = 200, sample_size: int = 20,
                 lr: float = 1e-4, weight_decay: float = 0.1, clip_norm: float = 3.0, budget: int = 8000,
                 eval_every: int = 20, seed: int = 42, candidates: str | Sequence[str] | None = None,
                 loss: str = "ce", margin: float = 1.0, strategy: str = "auto", endpoint: str = "completions",
                 top_k: int | None = None, calibrate: bool = False):
        check(isinstance(calibrate, bool), "calibrate", "True or False", calibrate)
        self.calibrate = calibrate
        check(isinstance(prompt_length, int) and prompt_length >= 1, "prompt_length", "an integer >= 1", prompt_length)
        check(isinstance(n_candidates, int) and n_candidates >= 2, "n_candidates", "an integer >= 2", n_candidates)
        check(isinstance(sample_size, int) and sample_size >= 2, "sample_size",
              "an integer >= 2 (the baseline needs two samples)", sample_size)
        check(lr > 0, "lr", "> 0", lr)
        check(weight_decay >= 0, "weight_decay", ">= 0", weight_decay)
        check(clip_norm > 0, "clip_norm", "> 0", clip_norm)
        check(isinstance(budget, int) and budget >= 0, "budget", "an integer >= 0", budget)
        check(isinstance(eval_every, int) and eval_every >= 1, "eval_every", "an integer >= 1", eval_every)
        check(isinstance(seed, int), "seed", "an integer", seed)
        check(loss in LOSSES, "loss", f"one of {LOSSES}", loss)
        check(margin >= 0, "margin", ">= 0", margin)
        check(strategy in ("auto", "exact", "topk"), "strategy", "one of ('auto', 'exact', 'topk')", strategy)
        check(endpoint in ("completions", "chat"), "endpoint", "'completions' or 'chat'", endpoint)
        check(top_k is None or (isinstance(top_k, int) and top_k >= 1), "top_k", "None or an integer >= 1", top_k)
        self.prompt_length = prompt_length
        self.n_candidates = n_candidates
        self.sample_size = sample_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.budget = budget
        self.eval_every = eval_every
        self.seed = seed
        self.candidates = None if candidates is None else (
            str(candidates) if isinstance(candidates, (str, Path)) else list(candidates))
        if self.candidates is not None:
            load_candidates(self.candidates)  # fail now, not after the server has started
        self.loss = loss
        self.margin = margin
        self.strategy = strategy
        self.endpoint = endpoint
        self.top_k = top_k

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {k: getattr(self, k) for k in (
            "prompt_length", "n_candidates", "sample_size", "lr", "weight_decay", "clip_norm", "budget",
            "eval_every", "seed", "candidates", "loss", "margin", "strategy", "endpoint", "top_k", "calibrate")}

    def projected_calls(self, task: Any = None) -> int:
        """Search calls (passes over the training batch) :meth:`fit` will make: steps of I
        samples, the last one smaller, none with fewer than two samples."""
        calls = 0
        while self.budget - calls >= 2:
            calls += min(self.sample_size, self.budget - calls)
        return calls

    # -- the search -------------------------------------------------------------------------

    def fit(self, client: Any, task: Any) -> BDPL:
        """Learn the prompt on ``task.few_shot(seed)``'s train split, select on its dev split."""
        client.require(*self.needs, needed_by="BDPL")
        split = task.few_shot(seed=self.seed)
        self.task_ = task
        self.task_source_ = getattr(task, "source", "") or task.name
        self.template_, self.label_words_ = task.template, tuple(task.label_words)
        self.candidates_ = self._vocabulary(split.train)
        N = len(self.candidates_)
        check(N >= 2, "the candidate vocabulary", "at least 2 strings (the training text is too short)",
              self.candidates_)

        rng = np.random.default_rng(self.seed)
        policy = CategoricalPolicy(self.prompt_length, N, lr=self.lr, weight_decay=self.weight_decay,
                                   clip_norm=self.clip_norm)
        search = client.with_budget(Budget(calls=self.budget))  # calls: passes over the batch, any provider
        scorer = client.with_budget(Budget())
        self.curve_: list[dict[str, Any]] = []
        self.history_: list[dict[str, Any]] = []
        self.search_misses_ = 0
        self.dev_misses_ = 0
        self.stopped_by_ = "budget"
        self.best_metric_ = -math.inf
        self.best_indices_ = policy.mode().tolist()
        self.best_probs_ = policy.p.copy()
        # without a dev split the prompt of lowest training loss is kept, as BBT keeps its
        # best-loss candidate
        best_loss, best_loss_indices = math.inf, None
        calls = 0
        last_eval = 0

        while self.budget - calls >= 2:
            I = min(self.sample_size, self.budget - calls)
            S = policy.ask(rng, I)                                      # s_k ~ prod_i Cat(p_i), k = 1..I
            try:
                L = self._losses(search, client.max_concurrency, S, split.train)
            except BudgetExhausted:
                self.stopped_by_ = "BudgetExhausted"
                break
            calls += I
            k = int(np.argmin(L))
            if L[k] < best_loss:
                best_loss, best_loss_indices = L[k], S[k].tolist()
            policy.tell(S, L)                                           # p <- Proj(AdamW(p, clip(g)))
            self.history_.append({"calls": calls, "loss_mean": float(np.mean(L)), "loss_min": float(np.min(L))})
            if calls - last_eval >= self.eval_every:
                last_eval = calls
                if not self._select(scorer, policy, split.dev, task, calls):
                    break
        if calls > last_eval:
            self._select(scorer, policy, split.dev, task, calls)

        if not split.dev and best_loss_indices is not None:
            self.best_indices_ = best_loss_indices
        self.probs_ = policy.p.copy()
        self.calls_ = calls
        self.best_prompt_ = self._prompt(self.best_indices_)
        self.misses_ = self.search_misses_ + self.dev_misses_
        self.budget_spent_ = search.budget.summary()
        self.eval_spent_ = scorer.budget.summary()
        self.extra_ = {"misses": self.misses_, "search_misses": self.search_misses_, "dev_misses": self.dev_misses_,
                       "calls": calls, "steps": len(self.history_), "n_candidates": N,
                       "best_indices": self.best_indices_, "stopped_by": self.stopped_by_}
        return self

    def _select(self, scorer: Any, policy: CategoricalPolicy, dev: Sequence[Any], task: Any, calls: int) -> bool:
        """Score the most likely prompt on dev and keep a copy of it if it is the best so far;
        False when the budget ran out."""
        try:
            m = self._dev_eval(scorer, policy.mode(), dev, len(task.labels), calls)
        except BudgetExhausted:
            self.stopped_by_ = "BudgetExhausted"
            return False
        # ">=": on a tie the later, longer-trained prompt wins, as in the official code
        if m is not None and m >= self.best_metric_:
            self.best_metric_ = m
            self.best_indices_ = policy.mode().tolist()
            self.best_probs_ = policy.p.copy()                          # a copy, not the live p
        return True

    def _vocabulary(self, train: Sequence[Any]) -> list[str]:
        if self.candidates is not None:
            return load_candidates(self.candidates)[:self.n_candidates]
        texts = [t for ex in train for t in (ex.text, ex.text_pair) if t]
        return candidate_vocabulary(texts, self.n_candidates)

    def _prompt(self, indices: Sequence[int] | np.ndarray) -> str:
        return " ".join(self.candidates_[j] for j in indices)

    def _score(self, client: Any, prompt: str, examples: Sequence[Any],
               max_concurrency: int | None = None) -> tuple[np.ndarray, int]:
        """``(scores [n, K], misses)`` of ``prompt`` on ``examples`` in one ``client.score``
        (with the content-free prompts, and calibrated, when ``calibrate``)."""
        texts = [self.task_.format(ex, prompt=prompt) for ex in examples]
        cf = content_free_prompts(self.task_, prompt) if self.calibrate else []
        sc = client.score(texts + cf, self.task_.label_words, strategy=self.strategy, endpoint=self.endpoint,
                          top_k=self.top_k, max_concurrency=max_concurrency)
        S = sc.logprobs[:len(texts)]
        if cf:                                                          # log(W p), W = diag(p_cf)^-1
            S = apply_calibration(S, sc.logprobs[len(texts):])
        return S, sc.misses

    def _losses(self, search: Any, concurrency: int, S: np.ndarray, train: Sequence[Any]) -> list[float]:
        """L_k for each sampled prompt: one call each, sent concurrently."""
        y = np.array([ex.label for ex in train])
        workers = max(1, min(len(S), concurrency))
        inner = max(1, concurrency // workers)
        scores = search.fan_out(lambda s: self._score(search, self._prompt(s), train, inner), S,
                                max_concurrency=workers, name="bdpl")
        self.search_misses_ += sum(misses for _, misses in scores)
        return [label_loss(S, y, self.loss, self.margin) for S, _ in scores]

    def _dev_eval(self, scorer: Any, indices: np.ndarray, dev: Sequence[Any], n_labels: int, calls: int) -> float | None:
        """Score the prompt ``indices`` on dev; add a curve point; return the selection metric."""
        if not dev:
            return None
        S, misses = self._score(scorer, self._prompt(indices), dev)
        self.dev_misses_ += misses
        m = metrics_from_predictions([ex.label for ex in dev], S.argmax(axis=1), n_labels)
        self.curve_.append({"calls": calls, "dev_accuracy": m.accuracy, "dev_f1": m.f1,
                            "loss_mean": self.history_[-1]["loss_mean"] if self.history_ else None})
        return m.get(getattr(self.task_, "metric", "accuracy"))

    # -- using the result -------------------------------------------------------------------

    def predict(self, client: Any, examples: Sequence[Any]) -> np.ndarray:
        """Predicted label index for each example, with the best-dev prompt and this method's
        scoring strategy and endpoint; ``predict_misses_`` adds up the floored label words."""
        if not hasattr(self, "best_prompt_"):
            raise ConfigError("predict must be called after fit (or load); got an unfitted BDPL")
        if not hasattr(self, "task_"):
            from ..tasks.start import reload_task

            self.task_ = reload_task(self.task_source_, self.template_, self.label_words_)
        if not examples:
            return np.zeros(0, dtype=int)
        texts = [self.task_.format(ex, prompt=self.best_prompt_) for ex in examples]
        cf = content_free_prompts(self.task_, self.best_prompt_) if self.calibrate else None
        logprobs, misses = score_prompts(client, texts, self.task_.label_words, progress=False,
                                         strategy=self.strategy, endpoint=self.endpoint, top_k=self.top_k,
                                         content_free=cf)
        self.predict_misses_ = getattr(self, "predict_misses_", 0) + misses
        self.last_scores_ = np.asarray(logprobs)  # the harness compares prompts on these (choose_ce)
        return np.asarray(logprobs.argmax(axis=1))

    def state(self) -> dict[str, Any]:
        """The learned state as JSON."""
        return {"task": self.task_source_, "template": self.template_, "label_words": list(self.label_words_),
                "candidates": self.candidates_, "probs": self.probs_.tolist(),
                "best_probs": self.best_probs_.tolist(), "best_indices": self.best_indices_,
                "best_prompt": self.best_prompt_, "curve": self.curve_, "history": self.history_,
                "budget_spent": self.budget_spent_, "eval_spent": self.eval_spent_, "extra": self.extra_}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.task_source_ = state["task"]
        self.template_ = state.get("template")
        self.label_words_ = tuple(state.get("label_words") or ())
        self.candidates_ = list(state["candidates"])
        self.probs_ = np.asarray(state["probs"], dtype=np.float64)
        self.best_probs_ = np.asarray(state["best_probs"], dtype=np.float64)
        self.best_indices_ = list(state["best_indices"])
        self.best_prompt_ = state["best_prompt"]
        self.curve_ = list(state["curve"])
        self.history_ = list(state["history"])
        self.budget_spent_ = dict(state["budget_spent"])
        self.eval_spent_ = dict(state["eval_spent"])
        self.extra_ = dict(state["extra"])
        self.misses_ = int(self.extra_.get("misses", 0))
        self.calls_ = int(self.extra_.get("calls", 0))
