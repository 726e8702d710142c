"""The method contract, checked for every registered method (scikit-learn's parametrize_with_checks).

Each method class declares ``tiny_config`` (constructor keyword arguments for a run of a few
calls on the built-in ``sample`` task) and, where a check cannot apply for a principled reason,
``contract_exempt`` ({check: why}); the test then says why instead of passing in silence.
Every check runs against the toy provider (tests/methods/toy_provider.py) and against the real
local server (SmolLM2-135M) at the tiny size. A method's first run (fit, then dev and eval
scoring through the harness) is shared by the checks that read it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm import Client
from bbox_lfm.budget import Budget
from bbox_lfm.errors import CapabilityError
from bbox_lfm.methods import Method, get, names
from bbox_lfm.methods.harness import eval_examples
from bbox_lfm.methods.harness import run as run_method
from bbox_lfm.profiles import load_profile
from bbox_lfm.results import read_result, validate_run, write_result
from bbox_lfm.stores import MemoryStore
from bbox_lfm.tasks import load_task

_spec = importlib.util.spec_from_file_location("toy_provider", Path(__file__).with_name("toy_provider.py"))
assert _spec is not None and _spec.loader is not None
_toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_toy)
ToyProvider = _toy.ToyProvider

CHECKS = ("fit", "curve", "replay", "roundtrip", "capability", "budget_exhausted", "results")
BACKENDS = ("toy", "local")
EVAL_LIMIT = 6
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # e.g. a one-label teacher on 12 texts


@dataclasses.dataclass
class FirstRun:
    """What one harness run of a method left: the method, its result, what went upstream."""

    method: Method
    result: dict[str, Any]
    store: MemoryStore
    fit_spent: dict[str, Any]
    total_spent: dict[str, Any]


def task() -> Any:
    return load_task("sample")


def build(name: str) -> Method:
    cls = get(name)
    config = cls.__dict__.get("tiny_config")
    assert isinstance(config, dict), (
        f"{cls.__name__} must declare tiny_config: ClassVar[dict[str, Any]] (constructor keyword "
        f"arguments for a tiny run on the 'sample' task) to join the contract suite")
    return cls(**config)


def exempt(name: str, check: str) -> None:
    """Skip, saying why, when the method declares that ``check`` cannot apply to it."""
    why = getattr(get(name), "contract_exempt", {}).get(check)
    if why:
        pytest.skip(f"{name} is exempt from the {check!r} check: {why}")


def seed_of(method: Method) -> int:
    return int(getattr(method, "seed", 13))


def budget_of(method: Method) -> int | None:
    """The method's own budget (in its calls), where it has one."""
    config = getattr(method, "config", None)
    value = getattr(method, "budget", getattr(config, "budget", None))
    return None if value is None else int(value)


@pytest.fixture(scope="module")
def backends(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Client factories per backend; the local server starts only when a local case runs."""

    def toy(store: Any, budget: Budget | None = None, profile: Any = None) -> Client:
        return Client("http://toy/v1", adapter=ToyProvider(tuple(task().label_words)), model="toy",
                      provider=profile or "bbox-lfm", cache=store, budget=budget)

    def local(store: Any, budget: Budget | None = None, profile: Any = None) -> Client:
        server = request.getfixturevalue("local_server")
        return Client.local(server, cache=store, budget=budget, **({"provider": profile} if profile else {}))

    yield {"toy": toy, "local": local}


_FIRST: dict[tuple[str, str], FirstRun] = {}


def first_run(name: str, backend: str, backends: dict[str, Any]) -> FirstRun:
    """Fit ``name`` on ``backend`` through the harness once per session."""
    if (name, backend) not in _FIRST:
        store = MemoryStore()
        client = backends[backend](store)
        method = build(name)
        fit = method.fit
        spent: dict[str, Any] = {}

        def measured_fit(*args: Any, **kwargs: Any) -> Any:
            out = fit(*args, **kwargs)
            spent.update(client.budget.summary())
            return out

        method.fit = measured_fit  # type: ignore[method-assign]
        result = run_method(method, client, task(), seed=seed_of(method), eval_limit=EVAL_LIMIT, progress=False)
        del method.fit
        _FIRST[name, backend] = FirstRun(method, result.to_json(), store, spent, client.budget.summary())
    return _FIRST[name, backend]


def cases() -> list[Any]:
    return [pytest.param(n, b, id=f"{n}-{b}") for n in names() for b in BACKENDS]


def test_every_method_declares_a_tiny_config() -> None:
    for name in names():
        build(name)
        unknown = set(getattr(get(name), "contract_exempt", {})) - set(CHECKS)
        assert not unknown, f"{name}.contract_exempt names checks that do not exist: {sorted(unknown)}; see {CHECKS}"


@pytest.mark.parametrize(("name", "backend"), cases())
def test_fit_stays_in_budget_and_counts_dev_apart(name: str, backend: str, backends: dict[str, Any]) -> None:
    """Everything fit sent upstream is in budget_spent_ (the search) or eval_spent_ (dev scoring),
    the method's calls stay within its budget, and a curve and a best prompt are written."""
    exempt(name, "fit")
    run = first_run(name, backend, backends)
    m = run.method
    spent, dev = m.budget_spent_, m.eval_spent_  # type: ignore[attr-defined]
    assert spent["calls"] + dev["calls"] == run.fit_spent["calls"], (
        f"{name}: fit sent {run.fit_spent['calls']} requests; budget_spent_ {spent['calls']} + eval_spent_ "
        f"{dev['calls']} must account for all of them")
    json.dumps(m.best_prompt_)  # type: ignore[attr-defined]
    assert "prompt" in run.result
    budget = budget_of(m)
    curve = m.curve_  # type: ignore[attr-defined]
    if getattr(get(name), "contract_exempt", {}).get("curve") is None:
        assert curve, f"{name} wrote no curve (declare contract_exempt['curve'] if it cannot have one)"
    calls = [p["calls"] for p in curve]
    assert calls == sorted(calls), f"{name}: curve calls must not decrease; got {calls}"
    if budget is not None:
        assert all(c <= budget for c in calls), f"{name}: curve goes past the budget {budget}: {calls}"


@pytest.mark.parametrize(("name", "backend"), cases())
def test_replay_sends_nothing_and_gives_the_same(name: str, backend: str, backends: dict[str, Any]) -> None:
    exempt(name, "replay")
    run = first_run(name, backend, backends)
    client = backends[backend](run.store).with_cache_mode("replay")
    method = build(name)
    again = run_method(method, client, task(), seed=seed_of(method), eval_limit=EVAL_LIMIT, progress=False).to_json()
    assert client.budget.summary()["requests"] == 0, f"{name}: a replayed run sent {client.budget.summary()}"
    for key in ("prompt", "curve", "dev", "eval"):
        assert again[key] == run.result[key], f"{name}: the replayed run's {key} differs"


@pytest.mark.parametrize(("name", "backend"), cases())
def test_save_load_predict_round_trip(name: str, backend: str, backends: dict[str, Any], tmp_path: Path) -> None:
    exempt(name, "roundtrip")
    run = first_run(name, backend, backends)
    client = backends[backend](run.store).with_cache_mode("replay")
    examples = eval_examples(task(), eval_limit=EVAL_LIMIT)
    before = run.method.predict(client, examples)
    path = run.method.save(tmp_path / "method.json")
    loaded = get(name).load(path)
    assert type(loaded) is type(run.method)
    assert list(loaded.predict(client, examples)) == list(before)
    assert client.budget.summary()["requests"] == 0


@pytest.mark.parametrize(("name", "backend"), cases())
def test_missing_capability_raises_before_sending(name: str, backend: str, backends: dict[str, Any]) -> None:
    exempt(name, "capability")
    needs = get(name).needs
    assert needs, f"{name} needs no capability: declare contract_exempt['capability'] saying why"
    for need in needs:
        base = load_profile("bbox-lfm")
        lacking = dataclasses.replace(base, capabilities=dataclasses.replace(base.capabilities, **{need: False}))
        client = backends[backend](MemoryStore(), profile=lacking)
        with pytest.raises(CapabilityError, match=need):
            method = build(name)
            method.fit(client, task())
            # a fit that sends nothing (zero-shot, icl) may leave the check to the first query
            method.predict(client, eval_examples(task(), eval_limit=2))
        assert client.budget.summary()["requests"] == 0, f"{name} sent queries before finding {need!r} missing"


@pytest.mark.parametrize(("name", "backend"), cases())
def test_budget_exhausted_mid_run_returns_best_so_far(name: str, backend: str, backends: dict[str, Any]) -> None:
    exempt(name, "budget_exhausted")
    full = first_run(name, backend, backends).fit_spent["calls"]
    assert full >= 2, (f"{name}'s tiny fit sent {full} requests, too few to cut short; raise tiny_config or "
                       f"declare contract_exempt['budget_exhausted'] saying why")
    limit = full // 2
    client = backends[backend](MemoryStore(), budget=Budget(calls=limit))
    method = build(name).fit(client, task())  # must not raise
    assert client.budget.summary()["calls"] <= limit
    json.dumps(method.best_prompt_)  # type: ignore[attr-defined]
    examples = eval_examples(task(), eval_limit=2)
    predictions = method.predict(backends[backend](MemoryStore()), examples)
    assert len(predictions) == len(examples)


@pytest.mark.parametrize(("name", "backend"), cases())
def test_results_file_follows_the_format(name: str, backend: str, backends: dict[str, Any], tmp_path: Path) -> None:
    exempt(name, "results")
    run = first_run(name, backend, backends)
    validate_run(run.result, where=f"{name}'s results")
    assert read_result(write_result(tmp_path / "r.json", run.result))["method"] == name
