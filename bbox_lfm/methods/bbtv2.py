"""BBTv2 (Sun et al., EMNLP 2022): deep black-box tuning, one random subspace per layer.

Through the service's ``deep_prompt`` extension (an L x n x D tensor added to the hidden states
entering each layer at the n prompt positions; layer 0 = the embedding output) and its
``hidden_stats`` route. In the paper's notation:

1. s_l = std of the hidden states entering layer l on the training batch, after clipping 5
   times to mean +- 3 std (the server computes it: ``POST /v1/bbox/hidden_stats``, one request
   through the client like any query, reported as ``extra_["hidden_stats_requests"]``, counted
   in the client's budget but in neither the search's nor the scorer's);
2. one projection A_l in R^{(n D) x d} per layer, entries ~ N(0, (alpha * s_l / (sqrt(d) * sigma))^2),
   drawn from its own seed; the prompt at layer l is A_l z_l (n x D), z_l in R^d;
3. divide and conquer: L independent CMA-ES instances (x0 = 0, sigma0 = sigma, popsize lambda);
   for budget // (lambda L) rounds, each layer l in turn runs one generation: its lambda
   candidates z_l^k are scored with every other layer holding its best-so-far z_j (one call per
   candidate on the whole training batch, sent concurrently), then its best-so-far is updated;
4. every ``eval_every`` calls (and at the end) the held configuration (every layer's best-so-far)
   is scored on dev; the best dev accuracy (F1 for F1 tasks) is kept.

**The one deviation, documented:** with L = 30 layers and lambda = 20 one round costs 600 calls,
so a budget below one round would run nothing at all. Then (and only then) as many per-layer
generations as fit are run, layers 0, 1, 2, ... in order, ``budget // lambda`` of them. With one
round or more, exactly ``rounds * L`` generations run, as in the official code (8,000 calls,
lambda 20, 24 layers: 16 rounds, 7,680 calls).

Initial prompt: the n slots hold the embeddings of tokens 1000..1000+n-1 (``init="vocab"``,
via ``base_ids``) or zeros (``init="zeros"``), as in :mod:`.bbt`; z = 0 adds nothing at any
layer. Defaults follow the official README example: sigma = alpha = 0.2, popsize 20, ce loss.
Only A_l for the layer being searched is held in memory (regenerated from its seed): 30 dense
projections of 14.4M floats would need 1.7 GB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import check
from ..optim import make_optimizer
from ..tensors import encode
from ..types import Query
from .base import register
from .bbt import BBT, INIT_TOKEN_START, _Search, model_facts, projection

__all__ = ["BBTv2", "layer_schedule"]


def layer_schedule(budget: int, popsize: int, num_layers: int) -> list[int]:
    """The layer searched by each generation: ``rounds = budget // (popsize * L)`` passes over
    layers 0..L-1, or, below one round, the first ``budget // popsize`` layers once each."""
    rounds = budget // (popsize * num_layers)
    if rounds >= 1:
        return [l for _ in range(rounds) for l in range(num_layers)]
    return list(range(budget // popsize))


def _layer_seed(seed: int, layer: int) -> int:
    """An independent, positive seed per layer, for A_l and for layer l's CMA-ES."""
    return int(np.random.SeedSequence([seed, layer]).generate_state(1)[0]) % (2**31 - 1) + 1


def hidden_stats(client: Any, texts: Sequence[str], soft_prompt: dict[str, Any] | None) -> list[float]:
    """``layer_std`` from the server's ``POST /v1/bbox/hidden_stats``, sent as a query through
    the client's layers (cached, budgeted, throttled, retried like every other request)."""
    extra: dict[str, Any] = {"clip": True}
    if soft_prompt is not None:
        extra["soft_prompt"] = soft_prompt
    answer = client.send(Query(endpoint="hidden_stats", prompt=tuple(texts), max_tokens=0, extra=extra))
    return [float(s) for s in answer.choices[0].extra["layer_std"]]


@register
class BBTv2(BBT):
    """Deep black-box tuning. Hyperparameters as :class:`BBT` (d, n, lambda, sigma, alpha, loss,
    budget, eval_every, optimizer, init, seed, calibrate), with the README example's
    sigma = alpha = 0.2."""

    name: ClassVar[str] = "bbtv2"
    needs: ClassVar[tuple[str, ...]] = ("deep_prompt", "hidden_stats", "label_words")
    tiny_config: ClassVar[dict[str, Any]] = {"budget": 8, "popsize": 4, "intrinsic_dim": 4, "n_prompt_tokens": 2,
                                             "eval_every": 4}
    prompt_field: ClassVar[str] = "deep_prompt"

    def __init__(self, *, intrinsic_dim: int = 500, n_prompt_tokens: int = 50, popsize: int = 20,
                 sigma: float = 0.2, alpha: float = 0.2, loss: str = "ce", margin: float = 2.0,
                 budget: int = 8000, eval_every: int = 100, optimizer: str = "cma", init: str = "vocab",
                 seed: int = 42, calibrate: bool = False):
        super().__init__(intrinsic_dim=intrinsic_dim, n_prompt_tokens=n_prompt_tokens, popsize=popsize,
                         sigma=sigma, alpha=alpha, loss=loss, margin=margin, budget=budget, eval_every=eval_every,
                         optimizer=optimizer, init=init, seed=seed, calibrate=calibrate)

    def projected_calls(self, task: Any = None, *, client: Any = None) -> int:
        """Search calls :meth:`fit` will make on ``client``'s model (its layer count decides the
        schedule); without a client, an upper bound (whole generations only)."""
        if client is None:
            return (self.budget // self.popsize) * self.popsize
        L = int(model_facts(client, "num_layers")["num_layers"])
        return len(layer_schedule(self.budget, self.popsize, L)) * self.popsize

    # -- the search -------------------------------------------------------------------------

    def fit(self, client: Any, task: Any, *, split: Any = None, progress: bool | None = None) -> BBTv2:
        """Search z_1..z_L on ``split`` (default ``task.few_shot(seed)``)."""
        client.require(*self.needs, needed_by="BBTv2")
        split = split if split is not None else task.few_shot(seed=self.seed)
        info = model_facts(client, "hidden_size", "num_layers")
        self.task_ = task
        self.task_source_ = getattr(task, "source", "") or task.name
        self.template_, self.label_words_ = task.template, tuple(task.label_words)
        n, d, D, L = self.n_prompt_tokens, self.intrinsic_dim, int(info["hidden_size"]), int(info["num_layers"])
        self.hidden_size_, self.num_layers_ = D, L
        self.A_seed_ = self.seed
        self._P = np.zeros((L, n, D), dtype=np.float32)                    # held prompts A_l z_l, all 0 at z = 0

        s = hidden_stats(client, [task.format(ex) for ex in split.train], self._slots(np.zeros((n, D))))
        check(len(s) == L, "hidden_stats layer_std", f"one value per layer ({L})", len(s))
        std = [self.alpha * s_l / (math.sqrt(d) * self.sigma) for s_l in s]  # alpha s_l / (sqrt(d) sigma)
        schedule = layer_schedule(self.budget, self.popsize, L)
        opts = [make_optimizer(self.optimizer, d, self.sigma, self.popsize, _layer_seed(self.seed, l),
                               maxiter=max(1, schedule.count(l))) for l in range(L)]
        z_best = np.zeros((L, d))                                          # best-so-far z_l per layer
        loss_best = np.full(L, math.inf)

        run = _Search(self, client, task, split, progress)
        self._A_layer: tuple[int, np.ndarray] | None = None
        for l in schedule:
            self._A_layer = (l, projection(_layer_seed(self.A_seed_, l), (n * D, d), std[l]))
            zs = opts[l].ask()                                             # z_l^k ~ N(m_l, sigma_l^2 C_l)
            held = z_best.copy()                                           # others hold their best-so-far
            L_k = run.losses([(l, z, held) for z in zs])
            if L_k is None:
                break
            opts[l].tell(zs, L_k)                                          # CMA-ES update of layer l only
            k = int(np.argmin(L_k))
            if L_k[k] < loss_best[l]:                                      # best-so-far of layer l (pycma's xbest)
                loss_best[l], z_best[l] = L_k[k], zs[k]
                self._P[l] = self._project(l, z_best[l])
            run.maybe_eval(("held", z_best.copy()))
        run.maybe_eval(("held", z_best.copy()), final=True)
        chosen = run.finish(("held", z_best.copy()))
        self.z_ = self._as_layers(chosen, z_best)
        self.best_prompt_ = self._deep({l: self.z_[l] for l in range(L)}, std=std)
        self.extra_ = {"calls": self.calls_, "stopped_by": self.stopped_by_, "best_train_loss": self.best_train_loss_,
                       "best_dev": self.best_dev_, "layer_std": s, "A_std": std, "hidden_size": D,
                       "num_layers": L, "generations": len(self.history_), "schedule_rounds":
                       self.budget // (self.popsize * L), "hidden_stats_requests": 1}
        del self._P, self._A_layer
        return self

    def _project(self, l: int, z: np.ndarray) -> np.ndarray:
        layer, A = self._A_layer  # type: ignore[misc]
        assert layer == l
        return (A @ np.asarray(z, dtype=np.float32)).reshape(self.n_prompt_tokens, -1)  # A_l z_l as n x D

    def _as_layers(self, Z: Any, z_best: np.ndarray) -> np.ndarray:
        """A candidate ``(l, z_l, held)`` or the held ``("held", z)`` as one z per layer: the
        candidate with the other layers as they were held when it was scored (not as they are
        held now: that combination was never scored)."""
        if Z[0] == "held":
            return np.asarray(Z[1], dtype=np.float64)
        l, z, held = Z
        out = np.array(held, dtype=np.float64)
        out[l] = z
        return out

    def _slots(self, values: np.ndarray) -> dict[str, Any]:
        fields = {"base_ids": list(range(INIT_TOKEN_START, INIT_TOKEN_START + self.n_prompt_tokens))} \
            if self.init == "vocab" else {}
        return encode(values, **fields)

    def _deep(self, override: dict[int, np.ndarray], std: list[float] | None = None) -> dict[str, Any]:
        """The deep prompt with the held prompts, layers in ``override`` replaced by A_l z_l."""
        P = self._P.copy()
        for l, z in override.items():
            if not np.any(z):
                P[l] = 0.0
            elif self._A_layer is not None and self._A_layer[0] == l:
                P[l] = self._project(l, z)
            else:
                assert std is not None
                A = projection(_layer_seed(self.A_seed_, l), (self.n_prompt_tokens * self.hidden_size_,
                                                               self.intrinsic_dim), std[l])
                P[l] = (A @ np.asarray(z, dtype=np.float32)).reshape(self.n_prompt_tokens, -1)
        return self._slots(P)

    def prompt_extra(self, Z: Any) -> dict[str, Any]:
        """The request fields for a candidate ``(l, z_l, held)`` (the other layers as held now)
        or for the held configuration ``("held", z)``: ``{"deep_prompt": {shape [L, n, D], ...}}``."""
        if Z[0] == "held":
            return {"deep_prompt": self._slots(self._P)}
        return {"deep_prompt": self._deep({Z[0]: Z[1]})}

    # -- using the result -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """One z per layer, the seed of the A_l, the deep prompt tensor and the search's record."""
        out = super().state()
        out["num_layers"] = self.num_layers_
        return out

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        super().set_state(state)
        self.num_layers_ = int(state["num_layers"])
