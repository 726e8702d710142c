"""Black-Box Tuning (BBT; Sun et al., ICML 2022): continuous prompt search in a random subspace.

The model is reached only through the service's ``soft_prompt`` extension (n x D values added to
the input embeddings at n prompt slots) and its exact ``label_words`` scores. In the paper's
notation:

1. a random projection A in R^{(n D) x d}, entries ~ N(0, (alpha * s_e / (sqrt(d) * sigma))^2),
   s_e = std of the word-embedding matrix (``embedding_std`` in the server's model metadata),
   so every prompt entry starts at std ~ alpha * s_e; only the seed of A is stored;
2. the prompt p = p0 + A z, z in R^d, reshaped to n x D; p0 = the embeddings of the n fixed
   vocabulary tokens 1000..1000+n-1 as in the official code (the server adds them through
   ``base_ids``), or p0 = 0 with ``init="zeros"``;
3. CMA-ES (pycma, x0 = 0, sigma0 = sigma, popsize lambda) asks lambda candidates z_1..z_lambda;
   each is scored on the whole k-shot training batch (one request = one call), all lambda sent
   concurrently so the server batches them; the loss L(z_k) (cross-entropy over the label-word
   scores, hinge with margin 2, or negative accuracy) is told back;
4. every ``eval_every`` calls (and at the end) the candidate with the lowest training loss so
   far is scored on the few-shot dev split; the best dev accuracy (F1 for tasks whose metric
   is F1) selects the final prompt.

The soft prompt goes into the task's template as it is: right after BOS, i.e. in front of the
whole template (``Review: {text}\nSentiment:`` becomes BOS, p, ``Review: ...``), or at the task's
``soft_prompt_placeholder``. Starting from a user's template is starting from that task
(:mod:`bbox_lfm.tasks.start`); the harness compares the result with the template alone.

``calibrate=True`` applies contextual calibration (:mod:`bbox_lfm.tasks.calibration`) to every
score, in the search too: the three content-free prompts ride in the same request as the
training batch, behind the same soft prompt, so a call stays one request (three more sequences).

**Calls** are the paper's: one call = one pass over the training batch. The search stops when
the next whole generation would exceed ``budget`` (so ``maxiter = budget // popsize``, as in
the official code); the count includes cache hits, so a rerun replays exactly the same steps,
while ``budget_spent_`` reports what actually went upstream. Dev scoring runs under its own,
unlimited budget (``eval_spent_``), as the paper does not count it.

**Deviation, documented:** the official code scores on dev whichever candidate happens to be
the 100th, 200th... call; here the lowest-training-loss candidate so far is scored, so the dev
checks follow the search's progress rather than one random sample of the population.

**Offline replay:** ``model_info`` is not a query, so the client's cache layer does not keep
it; :func:`provider_fact` memoises it in the client's cache store (BBTv2's ``hidden_stats`` is a
query and cached as one), so ``--cache-mode replay`` works with no server at all.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..budget import Budget
from ..cachekey import canonical_json
from ..errors import BudgetExhausted, CacheMiss, ConfigError, check
from ..optim import make_optimizer
from ..tasks.calibration import apply_calibration
from ..tasks.evaluate import content_free_prompts
from ..tensors import encode
from .base import Method, register

__all__ = ["BBT", "INIT_TOKEN_START", "LOSSES", "label_loss", "projection", "provider_fact"]

LOSSES = ("ce", "hinge", "neg_accuracy")
INITS = ("vocab", "zeros")
#: p0 = embeddings of token ids INIT_TOKEN_START .. INIT_TOKEN_START + n - 1 (the official code's)
INIT_TOKEN_START = 1000


def label_loss(S: np.ndarray, y: np.ndarray, loss: str, margin: float = 2.0) -> float:
    """Mean loss over the training batch from label-word scores ``S`` [N, K] and labels ``y``.

    ``ce``: -log softmax(S)[y]. ``hinge``: sum_{c != y} max(0, S[c] - S[y] + margin), the
    official ``hinge_loss``. ``neg_accuracy``: -mean[argmax S = y]. Log-probabilities and
    logits differ by one constant per example, so all three equal the official code's values.
    """
    S = np.asarray(S, dtype=np.float64)
    y = np.asarray(y)
    rows = np.arange(len(y))
    if loss == "ce":
        m = S.max(axis=1, keepdims=True)
        log_z = (m + np.log(np.exp(S - m).sum(axis=1, keepdims=True)))[:, 0]
        return float(np.mean(log_z - S[rows, y]))
    if loss == "hinge":
        h = np.maximum(0.0, S - S[rows, y][:, None] + margin)
        h[rows, y] = 0.0
        return float(np.mean(h.sum(axis=1)))
    return -float(np.mean(S.argmax(axis=1) == y))


def projection(seed: int, shape: tuple[int, int], std: float) -> np.ndarray:
    """A in R^{shape}, entries ~ N(0, std^2), float32, drawn from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(shape, dtype=np.float32)
    A *= np.float32(std)
    return A


def provider_fact(client: Any, name: str, fetch: Callable[[], Any], **args: Any) -> Any:
    """``fetch()``, memoised in the client's cache store under (provider, model, name, args).

    Facts that are not queries (model metadata, hidden-state statistics) are kept like answers:
    ``replay`` mode reads them and raises :class:`CacheMiss` when one was never recorded,
    ``record`` refetches, ``off`` always fetches.
    """
    store = getattr(client, "store", None)
    mode = getattr(client, "cache_mode", "off")
    if store is None or mode == "off":
        return fetch()
    payload = canonical_json({"base_url": client.cache_namespace, "model": client.model, "fact": name, "args": args})
    key = "fact:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()
    if mode != "record":
        entry = store.get(key)
        if entry is not None:
            return entry["fact"]
        if mode == "replay":
            raise CacheMiss(key, f"provider fact {name!r} of model {client.model!r}")
    value = fetch()
    store.put(key, {"fact": value, "base_url": client.cache_namespace, "created_at": time.time(), "cost_usd": 0.0})
    return value


def model_facts(client: Any, *keys: str) -> dict[str, Any]:
    """The server's model metadata (``client.model_info()``), memoised; ``keys`` must be there."""
    info = provider_fact(client, "model_info", client.model_info)
    missing = [k for k in keys if k not in info]
    if missing:
        raise ConfigError(f"the model metadata from GET /models must have {list(keys)}; missing {missing} "
                          f"(is {client.base_url} a bbox-lfm server?)")
    return dict(info)


class _Search:
    """What BBT and BBTv2 share: concurrent scoring of a population, best-so-far tracking, the
    periodic dev checks and best-dev selection. ``prompt_extra(Z)`` turns a full solution into
    the request fields; ``Z`` is whatever the method searches (z, or one z per layer)."""

    def __init__(self, method: Any, client: Any, task: Any, split: Any, progress: bool | None):
        from tqdm.auto import tqdm

        self.m = method
        self.task = task
        self.train_prompts = [task.format(ex) for ex in split.train]
        self.cf_prompts = content_free_prompts(task) if method.calibrate else []
        self.y = np.array([ex.label for ex in split.train])
        self.dev = list(split.dev)
        self.search = client.with_budget(Budget(calls=method.budget))  # one score() of the batch = one call
        self.scorer = client.with_budget(Budget())
        self.concurrency = client.max_concurrency
        self.calls = 0
        self.last_eval = 0
        self.best_loss = math.inf
        self.best_Z: Any = None
        self.best_dev = -math.inf
        self.selected_Z: Any = None
        self.curve: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.stopped_by = "budget"
        self.bar = tqdm(total=method.budget, desc=f"{method.name} {task.name}", unit="call",
                        disable=None if progress is None else not progress, leave=False)

    def fits(self, popsize: int) -> bool:
        """Whether one more whole generation fits the budget (paper calls, hits included)."""
        return self.calls + popsize <= self.m.budget

    def losses(self, Zs: Sequence[Any]) -> list[float] | None:
        """L(Z_k) for each candidate, one call each, sent concurrently; None if the budget ran out
        (the candidates that were answered still count and may become the best)."""
        def one(Z: Any) -> float:
            sc = self.search.score(self.train_prompts + self.cf_prompts, self.task.label_words,
                                   extra=self.m.prompt_extra(Z), strategy="exact", max_concurrency=1)
            S = sc.logprobs[:len(self.y)]
            if self.cf_prompts:                                            # log(W p), W = diag(p_cf)^-1
                S = apply_calibration(S, sc.logprobs[len(self.y):])
            return label_loss(S, self.y, self.m.loss, self.m.margin)

        outcomes = self.search.fan_out(one, Zs, max_concurrency=self.concurrency, settle=True, name="bbt")
        answered = [(Z, loss) for Z, (loss, e) in zip(Zs, outcomes) if e is None]
        for _, e in outcomes:
            if e is not None and not isinstance(e, BudgetExhausted):
                raise e
        for Z, loss in answered:
            self.calls += 1
            if loss < self.best_loss:
                self.best_loss, self.best_Z = loss, Z
        self.bar.update(len(answered))
        if len(answered) < len(Zs):
            self.stopped_by = "BudgetExhausted"
            return None
        L = [loss for _, loss in answered]
        self.history.append({"calls": self.calls, "loss_min": min(L), "loss_mean": float(np.mean(L)),
                             "best_loss": self.best_loss})
        self.bar.set_postfix(best_loss=f"{self.best_loss:.4f}",
                             dev=f"{self.curve[-1]['dev_accuracy']:.3f}" if self.curve else "-")
        return L

    def maybe_eval(self, Z: Any, *, final: bool = False) -> None:
        """Score ``Z`` on dev every ``eval_every`` calls (and at the end); keep the best."""
        due = self.calls // self.m.eval_every > self.last_eval // self.m.eval_every
        if not (due or (final and self.calls > self.last_eval)) or Z is None or not self.dev:
            return
        self.last_eval = self.calls
        from ..tasks import evaluate

        try:
            met = evaluate(self.scorer, self.task, self.dev, extra=self.m.prompt_extra(Z), progress=False,
                           calibrate=self.m.calibrate)
        except BudgetExhausted:  # an enclosing budget ran out: keep what was selected so far
            self.stopped_by = "BudgetExhausted"
            return
        self.curve.append({"calls": self.calls, "dev_accuracy": met.accuracy, "dev_f1": met.f1,
                           "train_loss": self.best_loss})
        value = met.f1 if getattr(self.task, "metric", "accuracy") == "f1" else met.accuracy
        if value > self.best_dev:  # strict, as the official code: on a tie the earlier prompt stays
            self.best_dev, self.selected_Z = value, Z
        self.bar.set_postfix(best_loss=f"{self.best_loss:.4f}", dev=f"{met.accuracy:.3f}")

    def finish(self, fallback: Any) -> Any:
        """The selected solution (best dev; best training loss without dev data; ``fallback``
        if nothing was scored), with the method's bookkeeping filled in."""
        self.bar.close()
        m = self.m
        m.curve_ = self.curve
        m.history_ = self.history
        m.calls_ = self.calls
        m.best_train_loss_ = None if math.isinf(self.best_loss) else self.best_loss
        m.best_dev_ = None if math.isinf(self.best_dev) else self.best_dev
        m.stopped_by_ = self.stopped_by
        m.budget_spent_ = self.search.budget.summary()
        m.eval_spent_ = self.scorer.budget.summary()
        if self.selected_Z is not None:
            return self.selected_Z
        return self.best_Z if self.best_Z is not None else fallback


def hyper_checks(*, intrinsic_dim: int, n_prompt_tokens: int, popsize: int, sigma: float, alpha: float,
                 loss: str, margin: float, budget: int, eval_every: int, optimizer: str, init: str,
                 seed: int, calibrate: bool = False) -> None:
    """Validate the hyperparameters BBT and BBTv2 share (one message shape)."""
    check(isinstance(intrinsic_dim, int) and intrinsic_dim >= 1, "intrinsic_dim", "an integer >= 1", intrinsic_dim)
    check(isinstance(n_prompt_tokens, int) and n_prompt_tokens >= 1, "n_prompt_tokens", "an integer >= 1",
          n_prompt_tokens)
    check(isinstance(popsize, int) and popsize >= 2, "popsize", "an integer >= 2", popsize)
    check(sigma > 0, "sigma", "> 0", sigma)
    check(alpha > 0, "alpha", "> 0", alpha)
    check(loss in LOSSES, "loss", f"one of {LOSSES}", loss)
    check(margin >= 0, "margin", ">= 0", margin)
    check(isinstance(budget, int) and budget >= 0, "budget", "an integer >= 0", budget)
    check(isinstance(eval_every, int) and eval_every >= 1, "eval_every", "an integer >= 1", eval_every)
    check(optimizer == "cma" or optimizer.startswith("ng:"), "optimizer", "'cma' or 'ng:<nevergrad name>'",
          optimizer)
    check(init in INITS, "init", f"one of {INITS}", init)
    check(isinstance(seed, int) and seed >= 1, "seed", "an integer >= 1 (pycma takes 0 as 'random')", seed)
    check(isinstance(calibrate, bool), "calibrate", "True or False", calibrate)


@register
class BBT(Method):
    """Black-Box Tuning. Hyperparameters (defaults = the paper's):

    intrinsic_dim: d, the dimension of the searched subspace.
    n_prompt_tokens: n, soft-prompt positions (each D = hidden size wide).
    popsize: lambda, CMA-ES candidates per generation (calls per generation).
    sigma: CMA-ES's initial step size; alpha: scale of A's std (alpha * s_e / (sqrt(d) sigma)).
    loss: ``ce``, ``hinge`` (margin ``margin``, for sentence pairs) or ``neg_accuracy``.
    budget: search calls (passes over the training batch); dev scoring not counted.
    eval_every: score the best-training-loss candidate on dev every this many calls.
    optimizer: ``cma`` or ``ng:<Name>`` for a nevergrad optimizer with the same population.
    init: ``vocab`` (p0 = embeddings of tokens 1000..1000+n-1) or ``zeros`` (p0 = 0).
    seed: the few-shot split, CMA-ES's sampling and the seed of A.
    calibrate: contextual calibration of every score (search, dev checks, predictions).
    """

    leaves_scores: ClassVar[bool] = True

    name: ClassVar[str] = "bbt"
    needs: ClassVar[tuple[str, ...]] = ("soft_prompt", "label_words")
    tiny_config: ClassVar[dict[str, Any]] = {"budget": 8, "popsize": 4, "intrinsic_dim": 4, "n_prompt_tokens": 2,
                                             "eval_every": 4}
    #: the request-body field that carries the learned prompt
    prompt_field: ClassVar[str] = "soft_prompt"

    # learned state, filled in by fit()
    calls_: int
    stopped_by_: str
    best_train_loss_: float | None
    best_dev_: float | None
    extra_: dict[str, Any]

    def __init__(self, *, intrinsic_dim: int = 500, n_prompt_tokens: int = 50, popsize: int = 20,
                 sigma: float = 1.0, alpha: float = 1.0, loss: str = "ce", margin: float = 2.0,
                 budget: int = 8000, eval_every: int = 100, optimizer: str = "cma", init: str = "vocab",
                 seed: int = 42, calibrate: bool = False):
        hyper_checks(intrinsic_dim=intrinsic_dim, n_prompt_tokens=n_prompt_tokens, popsize=popsize, sigma=sigma,
                     alpha=alpha, loss=loss, margin=margin, budget=budget, eval_every=eval_every,
                     optimizer=optimizer, init=init, seed=seed, calibrate=calibrate)
        self.calibrate = calibrate
        self.intrinsic_dim = intrinsic_dim
        self.n_prompt_tokens = n_prompt_tokens
        self.popsize = popsize
        self.sigma = sigma
        self.alpha = alpha
        self.loss = loss
        self.margin = margin
        self.budget = budget
        self.eval_every = eval_every
        self.optimizer = optimizer
        self.init = init
        self.seed = seed

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {k: getattr(self, k) for k in (
            "intrinsic_dim", "n_prompt_tokens", "popsize", "sigma", "alpha", "loss", "margin", "budget",
            "eval_every", "optimizer", "init", "seed", "calibrate")}

    def projected_calls(self, task: Any = None) -> int:
        """Search calls :meth:`fit` will make: whole generations only, ``budget // popsize`` of them."""
        return (self.budget // self.popsize) * self.popsize

    # -- the search -------------------------------------------------------------------------

    def fit(self, client: Any, task: Any, *, split: Any = None, progress: bool | None = None) -> BBT:
        """Search z on ``split`` (default ``task.few_shot(seed)``): train batch for the loss, dev
        for selection. ``progress``: a tqdm bar (None: only on a terminal)."""
        client.require(*self.needs, needed_by="BBT")
        split = split if split is not None else task.few_shot(seed=self.seed)
        info = model_facts(client, "hidden_size", "embedding_std")
        self.task_ = task
        self.task_source_ = getattr(task, "source", "") or task.name
        self.template_, self.label_words_ = task.template, tuple(task.label_words)
        n, d, D = self.n_prompt_tokens, self.intrinsic_dim, int(info["hidden_size"])
        self.hidden_size_ = D
        self.A_seed_ = self.seed
        s_e = float(info["embedding_std"])
        std = self.alpha * s_e / (math.sqrt(d) * self.sigma)              # A_ij ~ N(0, (alpha s_e / (sqrt(d) sigma))^2)
        self._A = projection(self.A_seed_, (n * D, d), std)

        opt = make_optimizer(self.optimizer, d, self.sigma, self.popsize, self.seed,
                             maxiter=max(1, self.budget // self.popsize))  # x0 = 0, sigma0 = sigma
        run = _Search(self, client, task, split, progress)
        while run.fits(self.popsize) and not opt.stop():
            zs = opt.ask()                                                 # z_k ~ N(m, sigma^2 C), k = 1..lambda
            L = run.losses(zs)                                             # L(p0 + A z_k) on the training batch
            if L is None:
                break
            opt.tell(zs, L)                                                # CMA-ES update of m, sigma, C
            run.maybe_eval(run.best_Z)
        stops = [k for k in opt.stop() if k != "maxiter"]  # maxiter = the budget's generations
        if stops and run.stopped_by == "budget":
            run.stopped_by = "optimizer: " + ", ".join(stops)  # e.g. tolfun: every loss the same
        run.maybe_eval(run.best_Z, final=True)
        self.z_ = np.asarray(run.finish(np.zeros(d)), dtype=np.float64)
        self.best_prompt_ = self.prompt_extra(self.z_)["soft_prompt"]
        self.extra_ = {"calls": self.calls_, "stopped_by": self.stopped_by_, "best_train_loss": self.best_train_loss_,
                       "best_dev": self.best_dev_, "A_std": std, "embedding_std": s_e, "hidden_size": D}
        del self._A
        return self

    def prompt_extra(self, z: np.ndarray) -> dict[str, Any]:
        """The request fields for the prompt p0 + A z: ``{"soft_prompt": {shape [n, D], ...}}``
        (during :meth:`fit`, which holds A; afterwards the selected prompt is ``best_prompt_``)."""
        n = self.n_prompt_tokens
        Az = self._A @ np.asarray(z, dtype=np.float32)                     # A z, reshaped to n x D
        fields = {"base_ids": list(range(INIT_TOKEN_START, INIT_TOKEN_START + n))} if self.init == "vocab" else {}
        return {"soft_prompt": encode(Az.reshape(n, -1), **fields)}

    # -- using the result -------------------------------------------------------------------

    def predict(self, client: Any, examples: Sequence[Any]) -> np.ndarray:
        """Predicted label index for each example, with the selected (soft or deep) prompt."""
        if not hasattr(self, "best_prompt_"):
            raise ConfigError(f"predict must be called after fit (or load); got an unfitted {type(self).__name__}")
        if not hasattr(self, "task_"):
            from ..tasks.start import reload_task

            self.task_ = reload_task(self.task_source_, self.template_, self.label_words_)
        if not examples:
            return np.zeros(0, dtype=int)
        from ..tasks import score_prompts

        prompts = [self.task_.format(ex) for ex in examples]
        logprobs, _ = score_prompts(client, prompts, self.task_.label_words,
                                    extra={self.prompt_field: self.best_prompt_}, progress=False,
                                    content_free=content_free_prompts(self.task_) if self.calibrate else None)
        self.last_scores_ = np.asarray(logprobs)  # the harness compares prompts on these (choose_ce)
        return np.asarray(logprobs.argmax(axis=1))

    def state(self) -> dict[str, Any]:
        """z, the seed of A, the prompt tensor and the search's record, as JSON."""
        return {"task": self.task_source_, "template": self.template_, "label_words": list(self.label_words_),
                "z": self.z_.tolist(), "A_seed": self.A_seed_,
                "hidden_size": self.hidden_size_, "best_prompt": self.best_prompt_, "curve": self.curve_,
                "history": self.history_, "budget_spent": self.budget_spent_, "eval_spent": self.eval_spent_,
                "extra": self.extra_}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.task_source_ = state["task"]
        self.template_ = state.get("template")
        self.label_words_ = tuple(state.get("label_words") or ())
        self.z_ = np.asarray(state["z"], dtype=np.float64)
        self.A_seed_ = int(state["A_seed"])
        self.hidden_size_ = int(state["hidden_size"])
        self.best_prompt_ = dict(state["best_prompt"])
        self.curve_ = list(state["curve"])
        self.history_ = list(state["history"])
        self.budget_spent_ = dict(state["budget_spent"])
        self.eval_spent_ = dict(state["eval_spent"])
        self.extra_ = dict(state["extra"])
        self.calls_ = int(self.extra_.get("calls", 0))
