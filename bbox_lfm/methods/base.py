"""The contract every method keeps (scikit-learn's estimator shape).

Hyperparameters go to the constructor (keyword-only, defaults = the paper's); data goes to
``fit(client, task)``; learned state lives in attributes ending in ``_``. ``fit`` runs the
search through ``client`` and must stop cleanly on ``BudgetExhausted``, keeping the best result
so far. After ``fit``: ``best_prompt_`` (JSON-able), ``curve_`` (``[{calls, dev_accuracy}]``),
``budget_spent_`` and ``eval_spent_`` (``Budget.summary()`` of the search and of dev scoring).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

__all__ = ["Method", "register", "registry"]

registry: dict[str, type[Method]] = {}
M = TypeVar("M", bound="type[Method]")


def register(cls: M) -> M:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if cls.name in registry and registry[cls.name] is not cls:
        from ..errors import ConfigError

        raise ConfigError(f"method name must be unique; got {cls.name!r}, registered twice")
    registry[cls.name] = cls
    return cls


class Method:
    """Base class: subclasses set ``name`` and ``needs`` and implement ``fit``/``predict``."""

    name: ClassVar[str] = ""
    #: capabilities the provider must have (checked before any query is sent)
    needs: ClassVar[tuple[str, ...]] = ()
    #: ``"prompt"``: searches a prompt from the task's template within a call budget (the
    #: leaderboard runs every such method; the harness keeps the start prompt unless the search
    #: beats it); ``"baseline"``: searches nothing; ``"student"``: trains a local model
    kind: ClassVar[str] = "prompt"
    #: whether ``predict`` leaves the label scores behind its answers in ``last_scores_`` (rows x
    #: labels), which the harness's ``guard="ce"`` compares prompts on
    leaves_scores: ClassVar[bool] = False
    #: checks of tests/methods/test_contract.py that cannot apply to the method, each with the
    #: reason (every registered class also declares ``tiny_config``, its own, not inherited)
    contract_exempt: ClassVar[dict[str, str]] = {}

    def __init__(self, **hyperparameters: Any) -> None:
        """Subclasses take their hyperparameters as keyword-only arguments (defaults = the paper's)."""
        if hyperparameters:
            raise TypeError(f"{type(self).__name__} takes no hyperparameters; got {sorted(hyperparameters)}")

    def projected_calls(self, task: Any = None) -> int | None:
        """Search calls the method will send, as its paper counts them (None: not known up front)."""
        return None

    def fit(self, client: Any, task: Any) -> Method:
        """Search through ``client`` on ``task``'s few-shot split."""
        raise NotImplementedError

    def predict(self, client: Any, examples: Sequence[Any]) -> np.ndarray:
        """Predicted label index for each example."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The learned state as JSON (what :meth:`save` writes besides the config)."""
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write config and learned state as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"method": self.name, "config": self.get_config(), "state": self.state()},
                                   indent=2, sort_keys=True, default=float), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Method:
        """Rebuild a fitted method from :meth:`save`'s file."""
        from . import get

        data = json.loads(Path(path).read_text(encoding="utf-8"))
        klass = get(data["method"]) if cls is Method else cls
        obj = klass(**data["config"])
        obj.set_state(data["state"])
        return obj
