"""BiDf-MKD (Hu et al., ICML 2023): data-free meta-learning from many black-box classifier APIs.

There is no training data, only a zoo of classifier APIs, each an N-way classifier for some task,
answering with probabilities. The method, step by step as the paper (and the official code,
``mainKD.py`` / ``synthesis/contrastive.py``) does it:

1. **Data inversion through the API, zero-order.** For a sampled API, a *fresh* generator
   G(z) (re-initialised each time, z optimised with it) is trained so that the API assigns the
   intended labels y to its samples x = G(z). The API gives no gradient, so for each sample the
   gradient of L(x) = CE(API(x), y) is estimated from q forward differences along directions
   u_j drawn uniformly on the unit sphere of R^d:

       g = (d / q) * sum_j [(L(x + mu u_j) - L(x)) / mu] u_j,      mu = 0.005, q = 100,

   and carried into the generator by the surrogate loss  mean_i <x_i, stop_grad(g_i)>,
   whose gradient with respect to x is g. The q + 1 inputs of every sample of a step travel
   as ONE classification request (one call). The samples with the lowest API loss are kept,
   together with the API's answers on them (the base rows of that request: no extra query).
2. **Bi-level meta knowledge distillation** (MAML-style): the inner loop adapts the meta-model
   theta to the API's answers on the recovered *support* set, theta' = theta - alpha grad
   KL(API || f_theta) (``kd_inner_steps`` steps, second order); the outer loop distils on the
   recovered *query* set, KL(API(x_q) || f_theta'(x_q)), and updates theta (Adam).
3. **Boundary query set** (after ``warmup`` API visits): the query set's inversion adds
   -adv * [argmax f_theta'(x) = argmax API(x)] * KL(API(x) || f_theta'(x)) to L(x), pushing
   samples on which the adapted student agrees with the API towards disagreement.
4. **Task memory replay**: every recovered sample joins a per-class ring buffer (intended digit
   label); after each API visit, ``replay_steps`` meta-updates of plain MAML (cross-entropy,
   ``inner_steps`` inner steps) run on N-way K-shot tasks drawn from the memory.

**The official code's KL bug, fixed:** it calls ``F.kl_div(softmax(student), softmax(teacher))``,
but ``kl_div`` wants log-probabilities as its first argument, so the "KL" it minimises is
sum p_t (log p_t - p_s), not a divergence (it is not even >= 0). Here :func:`kl` is the true
KL(p_api || p_student) = sum p_api (log p_api - log_softmax(student)).

**Deviations, documented.** The best inputs of an inversion are chosen by the API's true loss
on them (the base rows of each request), not by the surrogate loss's value as in the official
code. The boundary term evaluates the student at each perturbed input (the official code reuses
the student's output at the unperturbed input) and uses the true KL where the zero-order branch
of the official code uses an L1 distance. Memory replay runs ``replay_steps`` meta-updates per
visit, where the official code replays until the meta-training accuracy stops improving for
200 meta-batches. The generator is an MLP (the images are 8x8 digits), and the sizes (samples
per class, inversion steps, meta-model width) are scaled to a CPU; the defaults below say which.

**Calls**: one classification request = one call, i.e. one generator step of one inversion
(B (q + 1) rows, B = way x samples per class). ``budget_spent.calls`` counts them, answered from
the cache or not, so a replayed run takes the same steps; ``requests`` counts those that went
upstream and ``sequences`` their rows. An API visit costs 2 x ``inversion_steps`` calls.

**Ablations, one flag each:** ``random_meta_model`` (no meta-training: the meta-model at its
seeded initialisation), ``true_gradient`` (the API opened up: inversion and distillation by
back-propagation through the zoo's own weights, read from ``zoo_dir``; an upper bound that sends
no query), ``boundary=False``, ``memory_replay=False``, and ``oracle_maml`` (MAML on the real
meta-training images of digits 0-5: the oracle; no query).

Meta-testing (:meth:`BiDfMKD.meta_test`): N-way K-shot episodes on the held-out digits 6-9,
each adapting a copy of the meta-model with ``test_inner_steps`` steps of cross-entropy on the
support set and scoring 15 query images per class; mean accuracy and its 95 % interval.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, CapabilityError, ConfigError, check
from ..tensors import decode, encode
from .base import Method, register

__all__ = ["Api", "BiDfMKD", "Episode", "discover_apis", "kl", "meta_test_result", "run_label", "zo_gradient"]


# -- the two pieces the tests check on their own --------------------------------------------


def kl(p_teacher: Any, student_logits: Any) -> Any:
    """KL(p_teacher || softmax(student_logits)), averaged over rows (torch tensors).

    The official code's ``F.kl_div(softmax(s), softmax(t))`` gives kl_div log-*probabilities* the
    wrong way; this is the divergence itself: sum_c p_t (log p_t - log p_s), with 0 log 0 = 0.
    """
    import torch

    p = p_teacher.clamp_min(0)
    log_p = torch.where(p > 0, p.clamp_min(1e-30).log(), torch.zeros_like(p))
    log_s = torch.log_softmax(student_logits, dim=-1)
    return (p * (log_p - log_s)).sum(-1).mean()


def zo_gradient(loss_fn: Any, x: np.ndarray, *, q: int, mu: float, rng: np.random.Generator) -> np.ndarray:
    """The zero-order estimate of grad L at each row of ``x`` ([B, d]).

    ``loss_fn(X)`` maps ``[rows, d]`` to per-row losses; it is called ONCE on the B (q + 1) rows
    ``[x; x + mu u_1; ...; x + mu u_q]`` (u_j uniform on the unit sphere, one set per row), and
    g = (d / q) sum_j [(L(x + mu u_j) - L(x)) / mu] u_j.
    """
    B, d = x.shape
    u = rng.standard_normal((q, B, d))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    rows = np.concatenate([x, (x[None] + mu * u).reshape(q * B, d)])
    losses = np.asarray(loss_fn(rows), dtype=np.float64)
    base, pert = losses[:B], losses[B:].reshape(q, B)
    return (d / q) * np.einsum("qb,qbd->bd", (pert - base[None]) / mu, u)


# -- the APIs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """One classifier API as ``/v1/models`` describes it."""

    id: str
    classes: tuple[int, ...]
    input_shape: tuple[int, ...]


def discover_apis(client: Any) -> list[Api]:
    """The classifier models the provider lists (memoised like an answer, so replay works offline).

    Raises :class:`ConfigError` when there are none or when their input shapes disagree.
    """
    from .bbt import provider_fact

    cards = provider_fact(client, "models", client.models)
    apis = [Api(id=c["id"], classes=tuple(c["metadata"]["classes"]), input_shape=tuple(c["metadata"]["input_shape"]))
            for c in cards if (c.get("metadata") or {}).get("kind") == "classifier"]
    if not apis:
        raise ConfigError(f"the provider at {client.base_url} must list classifier models (metadata.kind = "
                          f"'classifier', e.g. `bbox-lfm serve --zoo DIR`); got {[c.get('id') for c in cards]}")
    shapes = {a.input_shape for a in apis}
    if len(shapes) > 1:
        by_shape = {str(list(s)): [a.id for a in apis if a.input_shape == s] for s in sorted(shapes)}
        raise ConfigError(f"the zoo's APIs must agree on one input shape; got {by_shape}")
    ways = {len(a.classes) for a in apis}
    if len(ways) > 1:
        raise ConfigError(f"the zoo's APIs must all have one number of classes; got {sorted(ways)}")
    return sorted(apis, key=lambda a: a.id)


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task: support images and labels (0..N-1), query images."""

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray


# -- the networks (functional, so MAML can differentiate through the inner loop) ---------------


def _mlp_init(sizes: Sequence[int], gen: Any) -> list[Any]:
    import torch

    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1 / math.sqrt(fan_in)  # torch's Linear default
        params.append(((torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound).requires_grad_())
        params.append(((torch.rand(fan_out, generator=gen) * 2 - 1) * bound).requires_grad_())
    return params


def _mlp(params: Sequence[Any], x: Any) -> Any:
    """Logits of the meta-model; ``x`` is [rows, d] with params [out, in], or [E, rows, d] with a
    leading episode axis on every parameter (many episodes adapted at once)."""
    import torch

    h = x
    n = len(params) // 2
    for i in range(n):
        W, b = params[2 * i], params[2 * i + 1]
        h = h @ W.transpose(-1, -2) + b.unsqueeze(-2)
        if i < n - 1:
            h = torch.relu(h)
    return h


class _Generator:
    """G(z): z in R^nz -> Linear -> BatchNorm -> LeakyReLU -> Linear -> sigmoid, an image in [0, 1]^d.
    Built fresh (seeded) for every inversion, as the official code resets its generator."""

    def __init__(self, nz: int, hidden: int, d: int, gen: Any):
        import torch

        self.net = torch.nn.Sequential(torch.nn.Linear(nz, hidden), torch.nn.BatchNorm1d(hidden),
                                       torch.nn.LeakyReLU(0.2), torch.nn.Linear(hidden, d))
        with torch.no_grad():  # the official reset_model: N(0, 0.02) weights, zero biases
            for m in self.net:
                if isinstance(m, torch.nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
                    m.bias.zero_()
                elif isinstance(m, torch.nn.BatchNorm1d):
                    m.weight.copy_(1 + torch.randn(m.weight.shape, generator=gen) * 0.02)
                    m.bias.zero_()

    def __call__(self, z: Any) -> Any:
        import torch

        return torch.sigmoid(self.net(z))

    def parameters(self) -> Any:
        return self.net.parameters()


# -- the method -------------------------------------------------------------------------------


@register
class BiDfMKD(Method):
    """BiDf-MKD: meta-learn a few-shot learner from a zoo of black-box classifier APIs.

    Hyperparameters (paper / official values in brackets where the defaults are scaled down):
      budget: classification requests (calls) for the whole run.
      seed: API order, generator and direction draws, meta-model initialisation.
      q, mu: zero-order directions and step (100, 0.005, the paper's).
      samples_per_class: recovered samples per class for the support and the query set [30].
      inversion_steps: generator steps per inversion [200]; generator_lr [1e-3]; nz [256].
      adv: weight of the boundary term (1); warmup: API visits before the boundary query set
        starts [4000 meta-batches].
      kd_inner_steps: inner steps on the recovered support set (10); inner_steps: inner steps of
        memory-replay MAML (5); test_inner_steps: at meta-test (10); inner_lr [0.01, tuned for a
        conv net with BatchNorm; 0.1 here for an MLP]; outer_lr (1e-3).
      replay_steps: memory-replay meta-updates per API visit, each over ``episode_batch`` tasks
        (4) of ``way`` classes, ``replay_shot`` support and ``replay_query`` query samples per class.
      memory_per_class: ring buffer size per class.
      hidden: meta-model width (MLP d -> hidden -> hidden -> way).
      oracle_steps: meta-updates of the oracle (MAML on real data).
      way: the meta-model's classes when no API tells (random meta-model, oracle); else the APIs'.
      Ablation flags: random_meta_model, true_gradient (needs zoo_dir), boundary, memory_replay,
        oracle_maml.
    """

    name: ClassVar[str] = "bidf-mkd"
    needs: ClassVar[tuple[str, ...]] = ("classify",)
    #: what ``fit`` learns from: a zoo of classifier APIs, not a text task. The conformance
    #: suite reads this; text tasks get a ConfigError from ``fit``.
    task_kind: ClassVar[str] = "classifier-zoo"
    #: the checks of tests/methods/test_contract.py that run on the text task ``sample``; each has
    #: its counterpart on a served zoo in tests/methods/test_bidf_mkd.py
    contract_exempt: ClassVar[dict[str, str]] = dict.fromkeys(
        ("fit", "curve", "replay", "roundtrip", "budget_exhausted", "results"),
        "bidf-mkd learns from a zoo of classifier APIs, not a text task (task_kind = 'classifier-zoo'); "
        "tests/methods/test_bidf_mkd.py runs this check through a served zoo")
    #: a run of a few calls on a zoo of tiny APIs (tests/methods/test_bidf_mkd.py serves one)
    tiny_config: ClassVar[dict[str, Any]] = {
        "budget": 8, "q": 4, "samples_per_class": 2, "inversion_steps": 2, "kd_inner_steps": 1, "inner_steps": 1,
        "replay_steps": 1, "episode_batch": 1, "replay_shot": 1, "replay_query": 1, "hidden": 8, "nz": 4,
        "generator_hidden": 8, "warmup": 0}

    def __init__(self, *, budget: int = 2000, seed: int = 0, q: int = 100, mu: float = 0.005,
                 samples_per_class: int = 5, inversion_steps: int = 50, generator_lr: float = 0.01, nz: int = 32,
                 generator_hidden: int = 64, adv: float = 1.0, warmup: int = 5, kd_inner_steps: int = 10,
                 inner_steps: int = 5, test_inner_steps: int = 10, inner_lr: float = 0.1, outer_lr: float = 1e-3,
                 replay_steps: int = 20, episode_batch: int = 4, replay_shot: int = 1, replay_query: int = 5,
                 memory_per_class: int = 100, hidden: int = 64, oracle_steps: int = 500,
                 random_meta_model: bool = False, true_gradient: bool = False, boundary: bool = True,
                 memory_replay: bool = True, oracle_maml: bool = False, zoo_dir: str | None = None, way: int = 3):
        for name, value in (("q", q), ("samples_per_class", samples_per_class), ("inversion_steps", inversion_steps),
                            ("nz", nz), ("generator_hidden", generator_hidden), ("kd_inner_steps", kd_inner_steps),
                            ("inner_steps", inner_steps), ("test_inner_steps", test_inner_steps),
                            ("episode_batch", episode_batch), ("replay_shot", replay_shot),
                            ("replay_query", replay_query), ("memory_per_class", memory_per_class),
                            ("hidden", hidden), ("way", way)):
            check(isinstance(value, int) and value >= 1, name, "an integer >= 1", value)
        for name, value in (("budget", budget), ("replay_steps", replay_steps), ("warmup", warmup),
                            ("oracle_steps", oracle_steps)):
            check(isinstance(value, int) and value >= 0, name, "an integer >= 0", value)
        for name, fvalue in (("mu", mu), ("generator_lr", generator_lr), ("inner_lr", inner_lr),
                             ("outer_lr", outer_lr)):
            check(fvalue > 0, name, "> 0", fvalue)
        check(adv >= 0, "adv", ">= 0", adv)
        check(sum([random_meta_model, true_gradient, oracle_maml]) <= 1,
              "random_meta_model / true_gradient / oracle_maml", "at most one of them", 
              {"random_meta_model": random_meta_model, "true_gradient": true_gradient, "oracle_maml": oracle_maml})
        check(not true_gradient or zoo_dir is not None, "zoo_dir", "the zoo folder when true_gradient is set "
              "(the API opened up)", zoo_dir)
        if self._queries(random_meta_model, true_gradient, oracle_maml):
            check(budget >= inversion_steps, "budget", f">= inversion_steps ({inversion_steps} calls, one "
                  "inversion)", budget)
        self.budget, self.seed, self.q, self.mu = budget, seed, q, mu
        self.samples_per_class, self.inversion_steps, self.generator_lr = samples_per_class, inversion_steps, generator_lr
        self.nz, self.generator_hidden, self.adv, self.warmup = nz, generator_hidden, adv, warmup
        self.kd_inner_steps, self.inner_steps, self.test_inner_steps = kd_inner_steps, inner_steps, test_inner_steps
        self.inner_lr, self.outer_lr = inner_lr, outer_lr
        self.replay_steps, self.episode_batch = replay_steps, episode_batch
        self.replay_shot, self.replay_query, self.memory_per_class = replay_shot, replay_query, memory_per_class
        self.hidden, self.oracle_steps = hidden, oracle_steps
        self.random_meta_model, self.true_gradient, self.boundary = random_meta_model, true_gradient, boundary
        self.memory_replay, self.oracle_maml, self.zoo_dir, self.way = memory_replay, oracle_maml, zoo_dir, way

    @staticmethod
    def _queries(random_meta_model: bool, true_gradient: bool, oracle_maml: bool) -> bool:
        return not (random_meta_model or true_gradient or oracle_maml)

    @property
    def variant(self) -> str:
        """Which run this is: ``bidf-mkd`` or the ablation's name."""
        if self.random_meta_model:
            return "random-meta-model"
        if self.oracle_maml:
            return "oracle-maml"
        parts = ["true-gradient" if self.true_gradient else "bidf-mkd"]
        parts += [] if self.boundary else ["no-boundary"]
        parts += [] if self.memory_replay else ["no-memory"]
        return "/".join(parts)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        keys = ("budget", "seed", "q", "mu", "samples_per_class", "inversion_steps", "generator_lr", "nz",
                "generator_hidden", "adv", "warmup", "kd_inner_steps", "inner_steps", "test_inner_steps", "inner_lr",
                "outer_lr", "replay_steps", "episode_batch", "replay_shot", "replay_query", "memory_per_class",
                "hidden", "oracle_steps", "random_meta_model", "true_gradient", "boundary", "memory_replay",
                "oracle_maml", "zoo_dir", "way")
        return {k: getattr(self, k) for k in keys}

    def projected_calls(self, task: Any = None) -> int:
        """Calls the run will send at most: whole API visits (2 inversions each) within the budget."""
        if not self._queries(self.random_meta_model, self.true_gradient, self.oracle_maml):
            return 0
        visit = 2 * self.inversion_steps
        return (self.budget // visit) * visit

    # -- fit --------------------------------------------------------------------------------

    def fit(self, client: Any, task: Any = None, *, progress: bool | None = None) -> BiDfMKD:
        """Meta-train from the classifier APIs that ``client``'s provider lists. ``task`` must be
        None: this method learns from the APIs, and a text task is refused with a ConfigError.
        Stops cleanly (keeping the meta-model of the last whole API visit) on ``BudgetExhausted``."""
        import torch
        from tqdm.auto import tqdm

        torch.set_num_threads(1)  # networks this small run slower on more threads
        self.gen_ = torch.Generator().manual_seed(self.seed)
        self.rng_ = np.random.default_rng(self.seed)
        self.search_ = client.with_budget(Budget(calls=self.budget)) if client is not None else None
        self.curve_: list[dict[str, Any]] = []
        self.extra_: dict[str, Any] = {"variant": self.variant, "calls_meaning": (
            "one classification request = one generator step of one inversion: the q+1 inputs of every sample "
            "of the step in one batch")}
        self.eval_spent_ = Budget().summary()
        self.stopped_by_ = "done"
        self.calls_ = 0
        t0 = time.perf_counter()
        queries = self._queries(self.random_meta_model, self.true_gradient, self.oracle_maml)
        if queries:  # before anything else, so a provider lacking it is told first and nothing is sent
            client.require(*self.needs, needed_by=self.name)
            if not client.capabilities.classify_allows("probabilities"):
                raise CapabilityError("classify='probabilities'", client.profile.name, needed_by=self.name,
                                      hint=f"it answers with {client.capabilities.classify!r} only; the CE loss "
                                           "and the KL need the API's distribution")
        if task is not None:
            raise ConfigError(f"task must be None for {self.name} (it learns from the classifier APIs the provider "
                              f"lists, not from a text task); got {getattr(task, 'name', task)!r}")
        if queries:
            self.apis_ = discover_apis(client)
        elif self.true_gradient:
            from ..zoo import load_zoo

            zoo = load_zoo(self.zoo_dir)  # type: ignore[arg-type]
            self.apis_ = [Api(id=m.id, classes=m.classes, input_shape=zoo.input_shape) for m in zoo.models.values()]
            self.opened_ = zoo
        else:
            from ..zoo import INPUT_SHAPE, META_TRAIN_CLASSES

            self.apis_ = [Api(id="digits", classes=META_TRAIN_CLASSES, input_shape=INPUT_SHAPE)]
        self.input_shape_ = self.apis_[0].input_shape
        self.d_ = int(np.prod(self.input_shape_))
        self.way_ = len(self.apis_[0].classes) if queries or self.true_gradient else self.way
        self.params_ = _mlp_init([self.d_, self.hidden, self.hidden, self.way_], self.gen_)
        if self.random_meta_model:
            self.stopped_by_ = "no meta-training (ablation)"
        elif self.oracle_maml:
            self._fit_oracle(progress)
        else:
            self._fit_bidf(progress, tqdm)
        self.extra_.update({"stopped_by": self.stopped_by_, "apis": len(self.apis_), "fit_s": time.perf_counter() - t0,
                            "calls_counted": self.calls_})
        self.budget_spent_ = self.search_.budget.summary() if self.search_ is not None else Budget().summary()
        self.best_prompt_ = None
        return self

    def _fit_bidf(self, progress: bool | None, tqdm: Any) -> None:
        import torch

        self.opt_ = torch.optim.Adam(self.params_, lr=self.outer_lr)
        self.memory_: dict[int, list[np.ndarray]] = {}
        # the true-gradient bound makes as many visits as a zero-order run of the same budget
        visits = self.budget // (2 * self.inversion_steps)
        with tqdm(total=visits, desc=f"{self.variant}", unit="API", disable=progress is False, leave=False) as bar:
            for visit in range(visits):
                api = self.apis_[int(self.rng_.integers(len(self.apis_)))]
                try:
                    row = self._visit(api, visit)
                except BudgetExhausted:
                    self.stopped_by_ = "budget"
                    break
                self.curve_.append({"calls": self.calls_, "visit": visit + 1, "api": api.id, **row})
                bar.update(1)
                bar.set_postfix(calls=self.calls_, agree=f"{row['dev_accuracy']:.2f}", kd=f"{row['kd_loss']:.3f}")

    def _visit(self, api: Api, visit: int) -> dict[str, Any]:
        """One API: invert a support set, adapt on it, invert a (boundary) query set, distil, replay."""
        import torch

        y = np.tile(np.arange(self.way_), self.samples_per_class)
        # 1. the support set, recovered through the API
        xs, ps, loss_s, start_s = self._invert(api, y, student=None)
        # 2. inner loop: theta' = theta - alpha grad KL(API || f_theta) on the support set
        fast = self._adapt(self.params_, torch.from_numpy(xs), lambda logits: kl(torch.from_numpy(ps), logits),
                           self.kd_inner_steps, create_graph=True)
        # 3. the query set; after warm-up, a boundary query set against the adapted student
        student = [p.detach() for p in fast] if (self.boundary and visit >= self.warmup) else None
        xq, pq, loss_q, start_q = self._invert(api, y, student=student)
        # 4. outer loop: distil on the query set through the adapted weights
        logits_q = _mlp(fast, torch.from_numpy(xq))
        loss_outer = kl(torch.from_numpy(pq), logits_q)
        self.opt_.zero_grad()
        loss_outer.backward()
        self.opt_.step()
        agree = float((logits_q.argmax(1).numpy() == pq.argmax(1)).mean())
        # 5. task memory: the recovered samples, under their intended digit labels
        if self.memory_replay:
            for x, label in ((xs, y), (xq, y)):
                for c in range(self.way_):
                    buf = self.memory_.setdefault(api.classes[c], [])
                    buf.extend(x[label == c])
                    del buf[:-self.memory_per_class]
            for _ in range(self.replay_steps):
                self._replay_step()
        return {"dev_accuracy": agree, "kd_loss": loss_outer.item(), "api_loss_support": loss_s,
                "api_loss_support_start": start_s, "api_loss_query": loss_q, "api_loss_query_start": start_q,
                "boundary": student is not None}

    def _replay_step(self) -> None:
        """One meta-update of MAML (cross-entropy) over ``episode_batch`` tasks from the memory."""
        import torch

        need = self.replay_shot + self.replay_query
        classes = [c for c, buf in self.memory_.items() if len(buf) >= need]
        if len(classes) < self.way_:
            return
        self.opt_.zero_grad()
        for _ in range(self.episode_batch):
            picked = self.rng_.choice(classes, size=self.way_, replace=False)
            xs, ys, xq, yq = [], [], [], []
            for label, c in enumerate(picked):
                buf = self.memory_[int(c)]
                idx = self.rng_.choice(len(buf), size=need, replace=False)
                xs += [buf[i] for i in idx[:self.replay_shot]]
                xq += [buf[i] for i in idx[self.replay_shot:]]
                ys += [label] * self.replay_shot
                yq += [label] * self.replay_query
            y_s, y_q = torch.tensor(ys), torch.tensor(yq)
            fast = self._adapt(self.params_, torch.from_numpy(np.stack(xs)),
                               lambda logits, y_s=y_s: torch.nn.functional.cross_entropy(logits, y_s),
                               self.inner_steps, create_graph=True)
            loss = torch.nn.functional.cross_entropy(_mlp(fast, torch.from_numpy(np.stack(xq))), y_q)
            (loss / self.episode_batch).backward()
        self.opt_.step()

    def _adapt(self, params: list[Any], x: Any, loss_fn: Any, steps: int, *, create_graph: bool) -> list[Any]:
        """``steps`` inner gradient steps of size ``inner_lr`` (MAML's fast weights)."""
        import torch

        fast = list(params)
        for _ in range(steps):
            grads = torch.autograd.grad(loss_fn(_mlp(fast, x)), fast, create_graph=create_graph)
            fast = [w - self.inner_lr * g for w, g in zip(fast, grads, strict=True)]
        return fast

    # -- inversion --------------------------------------------------------------------------

    def _api_probs(self, api: Api, rows: np.ndarray) -> np.ndarray:
        """The API's probabilities on ``rows`` [n, d]: ONE classification request (one call)."""
        assert self.search_ is not None, "only the query-sending variants ask the API"
        self.calls_ += 1
        out = self.search_.classify(rows.reshape(len(rows), *self.input_shape_), model=api.id, output="probabilities")
        return np.asarray(out, dtype=np.float64)

    def _opened(self, api: Api) -> Any:
        from ..zoo import torch_classifier

        cache = self.__dict__.setdefault("_opened_nets", {})
        if api.id not in cache:
            cache[api.id] = torch_classifier(self.opened_.models[api.id])
        return cache[api.id]

    def _point_loss(self, probs: np.ndarray, y: np.ndarray, student_logits: np.ndarray | None,
                    mask: np.ndarray | None) -> np.ndarray:
        """L(x) per row: CE(API(x), y), minus adv * mask * KL(API(x) || student(x)) for the boundary set."""
        p = np.clip(probs, 1e-12, 1.0)
        loss = -np.log(p[np.arange(len(y)), y])
        if student_logits is not None and mask is not None:
            s = student_logits - student_logits.max(1, keepdims=True)
            log_s = s - np.log(np.exp(s).sum(1, keepdims=True))
            div = (p * (np.log(p) - log_s)).sum(1)
            loss = loss - self.adv * mask * div
        return loss

    def _invert(self, api: Api, y: np.ndarray, *,
                student: list[Any] | None) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Train a fresh generator through ``api`` for ``inversion_steps`` steps; return the samples
        with the lowest API cross-entropy, the API's probabilities on them, that loss, and the
        loss of the first step's samples (before any update)."""
        import torch

        B = len(y)
        G = _Generator(self.nz, self.generator_hidden, self.d_, self.gen_)
        z = torch.randn(B, self.nz, generator=self.gen_).requires_grad_()
        opt = torch.optim.Adam([*G.parameters(), z], lr=self.generator_lr, betas=(0.5, 0.999))
        yt = torch.from_numpy(y)
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        start = math.nan
        for _ in range(self.inversion_steps):
            x = G(z)
            xn = x.detach().double().numpy()
            if self.true_gradient:
                logits = self._opened(api)(x)
                loss_rows = torch.nn.functional.cross_entropy(logits, yt, reduction="none")
                probs = torch.softmax(logits.detach().double(), 1).numpy()
                if student is not None:
                    s_logits = _mlp(student, x)
                    mask = (s_logits.argmax(1) == logits.argmax(1)).float()
                    div = (torch.softmax(logits, 1) * (torch.log_softmax(logits, 1) - torch.log_softmax(s_logits, 1))
                           ).sum(1)
                    loss_rows = loss_rows - self.adv * mask * div
                objective = loss_rows.mean()
            else:
                answers: list[np.ndarray] = []
                g = zo_gradient(partial(self._zo_losses, api, y, student, answers), xn, q=self.q, mu=self.mu,
                                rng=self.rng_)
                probs = answers[0]
                # surrogate: d/dx mean_i <x_i, g_i> = g_i / B, the estimate carried into G and z
                objective = (x * torch.from_numpy(g).float()).sum(1).mean()
            ce = float(np.mean(-np.log(np.clip(probs[np.arange(B), y], 1e-12, 1))))
            if best is None:
                start = ce
            if best is None or ce < best[0]:
                best = (ce, xn.astype(np.float32), probs)
            opt.zero_grad()
            objective.backward()
            opt.step()
        assert best is not None
        return best[1], best[2], best[0], start

    def _zo_losses(self, api: Api, y: np.ndarray, student: list[Any] | None, answers: list[np.ndarray],
                   rows: np.ndarray) -> np.ndarray:
        """L at every row of one request (the B base rows first, then q perturbed copies of them);
        the API's answers on the base rows go to ``answers``. The boundary mask is taken at the
        base rows, so every perturbation of a sample differentiates the same term."""
        import torch

        B, reps = len(y), len(rows) // len(y)
        probs = self._api_probs(api, rows)
        answers.append(probs[:B])
        if student is None:
            return self._point_loss(probs, np.tile(y, reps), None, None)
        with torch.no_grad():
            s = _mlp(student, torch.from_numpy(rows.astype(np.float32))).double().numpy()
        mask = (s[:B].argmax(1) == probs[:B].argmax(1)).astype(np.float64)
        return self._point_loss(probs, np.tile(y, reps), s, np.tile(mask, reps))

    # -- the oracle: MAML on the real meta-training images ------------------------------------

    def _fit_oracle(self, progress: bool | None) -> None:
        import torch
        from tqdm.auto import tqdm

        from ..zoo import META_TRAIN_CLASSES, digits

        self.opt_ = torch.optim.Adam(self.params_, lr=self.outer_lr)
        x, y = digits(META_TRAIN_CLASSES)
        self.memory_ = {c: list(x[y == c].reshape(-1, self.d_)) for c in META_TRAIN_CLASSES}
        for step in tqdm(range(self.oracle_steps), desc="oracle-maml", disable=progress is False, leave=False):
            self._replay_step()
            if (step + 1) % 50 == 0:
                self.curve_.append({"calls": 0, "step": step + 1, "dev_accuracy": None})

    # -- meta-test, predict, state ------------------------------------------------------------

    def adapt_predict(self, episodes: Sequence[Episode]) -> np.ndarray:
        """Adapt a copy of the meta-model to each episode's support set (``test_inner_steps`` steps of
        cross-entropy, all episodes at once) and return ``[episodes, query rows]`` predictions."""
        import torch

        E = len(episodes)
        xs = torch.from_numpy(np.stack([e.support_x.reshape(len(e.support_x), -1) for e in episodes]).astype(np.float32))
        ys = torch.from_numpy(np.stack([e.support_y for e in episodes]).astype(np.int64))
        xq = torch.from_numpy(np.stack([e.query_x.reshape(len(e.query_x), -1) for e in episodes]).astype(np.float32))
        fast = [p.detach().unsqueeze(0).expand(E, *p.shape).clone().requires_grad_() for p in self.params_]
        for _ in range(self.test_inner_steps):
            logits = _mlp(fast, xs)
            # the sum over episodes of per-episode mean losses: each episode's gradient is its own
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys.reshape(-1),
                                                     reduction="sum") / ys.shape[1]
            grads = torch.autograd.grad(loss, fast)
            fast = [w - self.inner_lr * g for w, g in zip(fast, grads, strict=True)]
        with torch.no_grad():
            return _mlp(fast, xq).argmax(-1).numpy()

    def predict(self, client: Any, examples: Sequence[Any]) -> np.ndarray:
        """Predicted query labels of each :class:`Episode` in ``examples`` (no query is sent)."""
        return self.adapt_predict(list(examples))

    def meta_test(self, *, way: int = 3, shot: int = 1, episodes: int = 600, query_per_class: int = 15,
                  seed: int = 0, chunk: int = 200) -> dict[str, Any]:
        """Mean accuracy and its 95 % interval (fractions) over ``episodes`` N-way K-shot tasks on
        digits 6-9, ``query_per_class`` query images per class; the episodes depend on ``seed`` alone."""
        from ..zoo import META_TEST_CLASSES, digits

        check(way <= len(META_TEST_CLASSES), "way", f"<= {len(META_TEST_CLASSES)} (digits 6-9)", way)
        check(way == self.way_, "way", f"the meta-model's output size ({self.way_})", way)
        x, y = digits(META_TEST_CLASSES)
        by_class = {c: x[y == c] for c in META_TEST_CLASSES}
        rng = np.random.default_rng(seed)
        eps, truth = [], []
        for _ in range(episodes):
            classes = rng.choice(META_TEST_CLASSES, size=way, replace=False)
            sx, sy, qx, qy = [], [], [], []
            for label, c in enumerate(classes):
                pool = by_class[int(c)]
                idx = rng.choice(len(pool), size=shot + query_per_class, replace=False)
                sx.append(pool[idx[:shot]])
                qx.append(pool[idx[shot:]])
                sy += [label] * shot
                qy += [label] * query_per_class
            eps.append(Episode(np.concatenate(sx), np.array(sy), np.concatenate(qx)))
            truth.append(np.array(qy))
        accs = []
        for i in range(0, episodes, chunk):
            pred = self.adapt_predict(eps[i:i + chunk])
            accs += list((pred == np.stack(truth[i:i + chunk])).mean(axis=1))
        a = np.array(accs)
        return {"way": way, "shot": shot, "episodes": episodes, "query_per_class": query_per_class,
                "accuracy": round(float(a.mean()), 5), "ci95": round(float(1.96 * a.std(ddof=1) / math.sqrt(len(a))), 5)}

    def state(self) -> dict[str, Any]:
        """The meta-model's weights as float32 tensors in JSON (no pickle), plus its shape facts."""
        return {"params": [encode(p.detach().numpy()) for p in self.params_], "way": self.way_,
                "input_shape": list(self.input_shape_), "curve": self.curve_, "extra": self.extra_}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        import torch

        self.params_ = [torch.from_numpy(decode(s)).requires_grad_() for s in state["params"]]
        self.way_ = int(state["way"])
        self.input_shape_ = tuple(state["input_shape"])
        self.d_ = int(np.prod(self.input_shape_))
        self.curve_ = list(state.get("curve", []))
        self.extra_ = dict(state.get("extra", {}))


def run_label(variant: str) -> str:
    """The ``method`` a results record carries: ``bidf-mkd``, or ``bidf-mkd/<ablation>``, so that
    ``bbox-lfm report`` keeps each ablation apart rather than averaging them together."""
    return variant if variant.startswith("bidf-mkd") else f"bidf-mkd/{variant}"


def meta_test_result(method: BiDfMKD, settings: Sequence[dict[str, Any]], *, provider: str, model: str,
                     wall_s: float) -> Any:
    """A fitted, meta-tested run in the shared results format: ``eval`` is the first setting
    (accuracy and 95 % interval as fractions; every setting under ``eval.settings``), ``dev`` the
    adapted meta-model's agreement with the API on the last recovered query set."""
    from ..results import RunResult

    first = settings[0]
    last = method.curve_[-1].get("dev_accuracy") if method.curve_ else None
    return RunResult(
        method=run_label(method.variant), config=method.get_config(),
        task=f"digits 6-9, {method.way_}-way meta-test", seed=method.seed, provider=provider, model=model,
        budget_spent=dict(method.budget_spent_), eval_spent=Budget().summary(), wall_s=round(wall_s, 3),
        dev={"accuracy": last, "f1": None,
             "meaning": "adapted meta-model's agreement with the API on the last recovered query set"},
        eval={"accuracy": first["accuracy"], "f1": None, "ci95": first["ci95"],
              "n": first["episodes"] * first["way"] * first["query_per_class"], "settings": list(settings)},
        curve=[{**row, "dev_accuracy": row.get("dev_accuracy")} for row in method.curve_], prompt=None,
        extra={"method": dict(method.extra_), "variant": method.variant,
               "calls_meaning": method.extra_["calls_meaning"]})

