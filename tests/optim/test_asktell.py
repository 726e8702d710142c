"""The ask/tell adapters: deterministic, isolated from numpy's global generator, and optimizing."""

from __future__ import annotations

import numpy as np
import pytest

from bbox_lfm.errors import ConfigError
from bbox_lfm.optim import CMA, make_optimizer


def sphere(x: np.ndarray) -> float:
    return float(np.sum((x - 0.5) ** 2))


def run(opt, generations: int) -> list[float]:
    best = []
    for _ in range(generations):
        xs = opt.ask()
        fs = [sphere(x) for x in xs]
        opt.tell(xs, fs)
        best.append(min(fs))
    return best


@pytest.mark.parametrize("name", ["cma", "ng:TwoPointsDE"])
def test_minimizes_sphere(name: str) -> None:
    opt = make_optimizer(name, dim=5, sigma=0.3, popsize=8, seed=3, maxiter=60)
    best = run(opt, 40)
    assert len(opt.ask()) == 8
    assert min(best) < 0.05 * sphere(np.zeros(5))


@pytest.mark.parametrize("name", ["cma", "ng:OnePlusOne"])
def test_same_seed_same_candidates(name: str) -> None:
    a = make_optimizer(name, dim=4, sigma=1.0, popsize=4, seed=7)
    b = make_optimizer(name, dim=4, sigma=1.0, popsize=4, seed=7)
    run(a, 3)
    run(b, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a.ask(), b.ask()))
    c = make_optimizer(name, dim=4, sigma=1.0, popsize=4, seed=8)
    run(c, 3)
    assert not np.array_equal(a.ask()[0], c.ask()[0])


def test_cma_instances_do_not_share_the_global_generator() -> None:
    # interleaving two instances and touching np.random in between changes nothing
    alone = CMA(dim=3, sigma=0.5, popsize=4, seed=11)
    expected = next(alone.ask() for _ in range(1))
    a = CMA(dim=3, sigma=0.5, popsize=4, seed=11)
    other = CMA(dim=3, sigma=0.5, popsize=4, seed=12)
    np.random.seed(0)
    other.ask()
    np.random.rand(10)
    got = a.ask()
    assert all(np.array_equal(x, y) for x, y in zip(expected, got))


def test_cma_starts_at_zero_with_sigma() -> None:
    opt = CMA(dim=200, sigma=0.2, popsize=20, seed=5)
    xs = np.stack(opt.ask())
    assert abs(xs.mean()) < 0.01
    assert 0.18 < xs.std() < 0.22


def test_cma_stops_at_maxiter() -> None:
    opt = make_optimizer("cma", dim=2, sigma=0.5, popsize=4, seed=1, maxiter=3)
    run(opt, 3)
    assert "maxiter" in opt.stop()


def test_partial_population_is_refused() -> None:
    opt = make_optimizer("cma", dim=2, sigma=0.5, popsize=4, seed=1)
    xs = opt.ask()
    with pytest.raises(ConfigError, match="solutions"):
        opt.tell(xs[:2], [1.0, 2.0])


@pytest.mark.parametrize("kw, match", [
    ({"name": "adam"}, "optimizer"),
    ({"name": "ng:NoSuchOptimizer"}, "optimizer"),
    ({"name": "cma", "seed": 0}, "seed"),
    ({"name": "cma", "sigma": 0.0}, "sigma"),
    ({"name": "cma", "popsize": 1}, "popsize"),
])
def test_validation(kw: dict, match: str) -> None:
    args = {"name": "cma", "dim": 3, "sigma": 1.0, "popsize": 4, "seed": 1} | kw
    with pytest.raises(ConfigError, match=match):
        make_optimizer(**args)
