"""Ask/tell adapters over pycma and nevergrad, one population at a time.

The caller owns the loop (pycma's ``ask()`` / ``tell(solutions, values)`` / ``stop()``), so a
whole population goes out as one batch of concurrent queries::

    opt = make_optimizer("cma", dim=500, sigma=1.0, popsize=20, seed=42)
    while not opt.stop():
        zs = opt.ask()                     # popsize candidates
        opt.tell(zs, [loss(z) for z in zs])

Determinism: pycma draws its samples from numpy's *global* generator, seeded at construction.
Each :class:`CMA` keeps its own copy of that generator state and swaps it in only around its
own ``ask``/``tell``, so several instances (BBTv2 runs one per layer) and any other user of the
global generator cannot disturb each other: the same seed gives the same candidates, bit for
bit, which is what makes a rerun replay from the cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, check

__all__ = ["CMA", "AskTell", "Nevergrad", "make_optimizer"]

_GLOBAL_RNG = threading.Lock()  # numpy's global generator is shared by every CMA instance


class AskTell(Protocol):
    """What every optimizer here offers."""

    popsize: int

    def ask(self) -> list[np.ndarray]:
        """The next population: ``popsize`` candidate vectors."""

    def tell(self, solutions: Sequence[np.ndarray], losses: Sequence[float]) -> None:
        """Report the losses of a whole population returned by :meth:`ask` (lower is better)."""

    def stop(self) -> dict[str, Any]:
        """The stopping criteria met so far (empty: keep going)."""


class CMA:
    """pycma's ``CMAEvolutionStrategy`` with x0 = 0, sigma0 = ``sigma``, ``popsize`` and ``seed``
    (no bounds; ``maxiter`` when given), exactly as BBT's official code configures it."""

    def __init__(self, *, dim: int, sigma: float, popsize: int, seed: int, maxiter: int | None = None):
        import cma  # lazy: only methods that search need it

        # pycma takes seed 0 as "draw a seed from the clock", which would break replay
        check(isinstance(seed, (int, np.integer)) and seed >= 1, "seed", "an integer >= 1 for cma", seed)
        self.popsize = popsize
        opts: dict[str, Any] = {"seed": int(seed), "popsize": popsize, "verbose": -9}
        if maxiter is not None:
            opts["maxiter"] = maxiter
        with _GLOBAL_RNG:
            outer = np.random.get_state()
            self.es = cma.CMAEvolutionStrategy(np.zeros(dim), sigma, opts)
            self._rng = np.random.get_state()
            np.random.set_state(outer)

    def _isolated(self, fn: Any, *args: Any) -> Any:
        with _GLOBAL_RNG:
            outer = np.random.get_state()
            np.random.set_state(self._rng)
            try:
                return fn(*args)
            finally:
                self._rng = np.random.get_state()
                np.random.set_state(outer)

    def ask(self) -> list[np.ndarray]:
        """``popsize`` samples from N(m, sigma^2 C)."""
        return [np.asarray(x, dtype=np.float64) for x in self._isolated(self.es.ask)]

    def tell(self, solutions: Sequence[np.ndarray], losses: Sequence[float]) -> None:
        """Update mean, step size and covariance from the ranked population."""
        check(len(solutions) == self.popsize and len(losses) == self.popsize, "solutions",
              f"the whole population of {self.popsize}", len(solutions))
        self._isolated(self.es.tell, list(solutions), [float(v) for v in losses])

    def stop(self) -> dict[str, Any]:
        """pycma's own termination dict."""
        return dict(self.es.stop())


class Nevergrad:
    """A nevergrad optimizer (any name in ``nevergrad.optimizers.registry``) over R^dim,
    initialised at 0 with mutation scale ``sigma``, asked ``popsize`` candidates at a time
    (``num_workers = popsize``) and told all of them, the same population handling as :class:`CMA`."""

    def __init__(self, name: str, *, dim: int, sigma: float, popsize: int, seed: int, budget: int | None = None):
        import nevergrad as ng  # lazy: importing nevergrad takes seconds

        if name not in ng.optimizers.registry:
            raise ConfigError(f"optimizer must be 'cma' or 'ng:<a nevergrad optimizer name>'; got 'ng:{name}'")
        self.popsize = popsize
        param = ng.p.Array(init=np.zeros(dim)).set_mutation(sigma=sigma)
        param.random_state = np.random.RandomState(seed)
        self.opt = ng.optimizers.registry[name](parametrization=param, budget=budget, num_workers=popsize)
        self._pending: list[Any] = []

    def ask(self) -> list[np.ndarray]:
        """``popsize`` candidates from nevergrad's ``ask``."""
        self._pending = [self.opt.ask() for _ in range(self.popsize)]
        return [np.asarray(c.value, dtype=np.float64) for c in self._pending]

    def tell(self, solutions: Sequence[np.ndarray], losses: Sequence[float]) -> None:
        """Tell each asked candidate its loss."""
        check(len(solutions) == len(self._pending) and len(losses) == len(self._pending), "solutions",
              f"the whole population of {len(self._pending)} last asked", len(solutions))
        for cand, loss in zip(self._pending, losses):
            self.opt.tell(cand, float(loss))
        self._pending = []

    def stop(self) -> dict[str, Any]:
        """``{"budget": n}`` once nevergrad's own budget is used up."""
        budget = self.opt.budget
        return {"budget": budget} if budget is not None and self.opt.num_tell >= budget else {}


def make_optimizer(name: str, dim: int, sigma: float, popsize: int, seed: int, *,
                   maxiter: int | None = None) -> AskTell:
    """``"cma"`` (pycma) or ``"ng:<Name>"`` (nevergrad), searching R^dim from 0.

    ``maxiter`` caps the generations (nevergrad gets ``maxiter * popsize`` as its budget).
    """
    check(dim >= 1, "dim", ">= 1", dim)
    check(sigma > 0, "sigma", "> 0", sigma)
    check(popsize >= 2, "popsize", ">= 2", popsize)
    if name == "cma":
        return CMA(dim=dim, sigma=sigma, popsize=popsize, seed=seed, maxiter=maxiter)
    if name.startswith("ng:"):
        return Nevergrad(name[3:], dim=dim, sigma=sigma, popsize=popsize, seed=seed,
                         budget=None if maxiter is None else maxiter * popsize)
    raise ConfigError(f"optimizer must be 'cma' or 'ng:<a nevergrad optimizer name>'; got {name!r}")
