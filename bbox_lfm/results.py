"""One results format for every run of every method (JSON, versioned schema).

Fields: ``schema`` (this version), ``method``, ``config``, ``task``, ``seed``, ``provider``,
``model``, ``budget_spent`` (what the search spent: ``calls``, the method's unit, one prompt over
the training batch, cache hits included; ``requests``, ``sequences``, ``tokens`` and ``dollars``
that went upstream; ``cache_hits``, requests answered from the cache; ``retries``, the attempts
beyond the first; see :mod:`bbox_lfm.budget`), ``eval_spent`` (the same for dev and eval
scoring, which papers do not count against the budget), ``wall_s``, ``dev`` and ``eval`` (each
at least ``accuracy`` and ``f1``), ``curve`` (``[{calls, dev_accuracy}]``, calls as the method's
paper counts them, hits included), ``prompt``, ``version``, ``commit``, plus free-form ``extra``.

A results file holds one run, or a bundle ``{"schema", "kind": "bundle", "runs": [...]}`` with
whatever summary its benchmark adds beside the runs. Speed benchmarks write
``{"kind": "speed", ...}`` files of their own shape, which `read_results` recognises and
returns no runs for. `RunRecord` and `Bundle` are the pydantic models every file is read
through; their JSON Schema is published as ``docs/results.schema.json``
(`results_json_schema`). The core fields are required and typed; anything else may be added
beside them (a newer writer's fields, e.g. more budget units), so readers keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .errors import ConfigError

__all__ = ["SCHEMA_VERSION", "Bundle", "RunRecord", "RunResult", "git_commit", "read_result", "read_results",
           "results_json_schema", "validate_run", "write_result"]

SCHEMA_VERSION = 1


def git_commit() -> str:
    """The current git commit of the checkout this package runs from, or "" outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass(kw_only=True)
class RunResult:
    """One run of one method on one task and seed."""

    method: str
    config: dict[str, Any]
    task: str
    seed: int | None
    provider: str
    model: str
    budget_spent: dict[str, Any]
    eval_spent: dict[str, Any]
    wall_s: float
    dev: dict[str, Any]
    eval: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    prompt: Any = None
    version: str = __version__
    commit: str = field(default_factory=git_commit)
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return asdict(self)


class _Open(BaseModel):
    # required fields are checked; fields this version does not know are kept as they are
    model_config = ConfigDict(extra="allow")


class Spent(_Open):
    """What one budget counted (``Budget.summary()``)."""

    calls: int = Field(ge=0, description="the method's calls: one prompt over the training batch, cache hits included")
    requests: int | None = Field(default=None, ge=0,
                                 description="HTTP requests sent upstream (None: not recorded, older runs)")
    sequences: int = Field(ge=0, description="prompts sent upstream (prompts x n)")
    tokens: int | None = Field(default=None, ge=0, description="None: not recorded (older benchmark runs)")
    dollars: float | None = Field(default=None, ge=0, description="None: not recorded (older benchmark runs)")
    cache_hits: int = Field(ge=0, description="requests answered from the cache, at no cost")
    retries: int | None = Field(default=None, ge=0, description="attempts beyond the first (None: not recorded)")


class Metrics(_Open):
    """Scores on one split; None where the split was empty."""

    accuracy: float | None = Field(ge=0, le=1)
    f1: float | None = Field(ge=0, le=1)
    n: int | None = Field(default=None, ge=0, description="examples scored (None: not recorded)")


class CurvePoint(_Open):
    """Dev accuracy after ``calls`` of the method's own calls (hits included)."""

    calls: float = Field(ge=0)
    dev_accuracy: float | None = Field(ge=0, le=1)


class RunRecord(_Open):
    """One run of one method on one task and seed, as a results file holds it."""

    schema_: Literal[1] = Field(alias="schema", description="version of this format")
    method: str = Field(min_length=1)
    config: dict[str, Any]
    task: str = Field(min_length=1)
    seed: int | None
    provider: str
    model: str
    budget_spent: Spent
    eval_spent: Spent
    wall_s: float | None = Field(ge=0, description="seconds for fit and scoring (None: not recorded)")
    dev: Metrics
    eval: Metrics
    curve: list[CurvePoint]
    prompt: Any
    version: str
    commit: str
    extra: dict[str, Any] = Field(default_factory=dict)


class Bundle(_Open):
    """Several runs in one file (a benchmark's), with any summary beside them."""

    schema_: Literal[1] = Field(alias="schema", description="version of this format")
    kind: Literal["bundle"] = "bundle"
    runs: list[RunRecord]


def results_json_schema() -> dict[str, Any]:
    """The JSON Schema of a results file: one run or a bundle (published in ``docs/``)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(RunRecord | Bundle).json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"bbox-lfm results, schema {SCHEMA_VERSION}",
            **schema}


def _problems(exc: ValidationError, limit: int = 5) -> str:
    errors = exc.errors()
    shown = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in errors[:limit])
    return shown + (f"; and {len(errors) - limit} more" if len(errors) > limit else "")


def validate_run(data: Mapping[str, Any], *, where: str = "a run") -> dict[str, Any]:
    """``data`` checked against `RunRecord`, returned unchanged; ConfigError naming each problem."""
    try:
        RunRecord.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where} must follow the results format (schema {SCHEMA_VERSION}); "
                          f"{_problems(exc)}") from None
    return dict(data)


def write_result(path: str | os.PathLike[str], result: RunResult | Mapping[str, Any]) -> Path:
    """Write atomically (a crash never leaves half a file)."""
    data = result.to_json() if isinstance(result, RunResult) else dict(result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_results(path: str | os.PathLike[str]) -> tuple[str, list[dict[str, Any]]]:
    """``(kind, runs)`` of a results file: ``"run"`` (one), ``"bundle"`` (its runs) or ``"speed"``
    (a speed benchmark's file: no runs). Every run is checked against the results format."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"results file must exist; got {str(path)!r} (not found)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"results file {str(path)!r} must be JSON; {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"results file {str(path)!r} must hold a JSON object; got {type(data).__name__}")
    # a bundle written before bundles carried their kind: runs and no method of its own
    kind = data.get("kind") or ("bundle" if "runs" in data and "method" not in data else "run")
    if kind == "speed":
        return "speed", []
    if kind == "bundle":
        try:
            Bundle.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"results bundle {str(path)!r} must follow the results format (schema "
                              f"{SCHEMA_VERSION}); {_problems(exc)}") from None
        return "bundle", [dict(r) for r in data["runs"]]
    if kind != "run":
        raise ConfigError(f"results file {str(path)!r} must have kind 'run', 'bundle' or 'speed'; got {kind!r}")
    return "run", [validate_run(data, where=f"results file {str(path)!r}")]


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a one-run results file, checked against the results format."""
    kind, runs = read_results(path)
    if kind != "run":
        raise ConfigError(f"results file {str(path)!r} must hold one run; got a {kind} file")
    return runs[0]
