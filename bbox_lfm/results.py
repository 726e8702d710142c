"""One results format for every run of every method (JSON, versioned schema).

Fields: ``schema`` (this version), ``method``, ``config``, ``task``, ``seed``, ``provider``,
``model``, ``budget_spent`` (what the search sent upstream: calls, sequences, tokens, cost_usd,
cache_hits that cost nothing, and retries, the attempts beyond the first), ``eval_spent`` (the
same for dev and eval scoring, which papers do not count against the budget), ``wall_s``,
``dev`` and ``eval`` (each at least ``accuracy`` and ``f1``), ``curve`` (``[{calls,
dev_accuracy}]``, calls as the method's paper counts them, hits included), ``prompt``, ``version``, ``commit``, plus free-form ``extra``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError

__all__ = ["SCHEMA_VERSION", "RunResult", "git_commit", "read_result", "write_result"]

SCHEMA_VERSION = 1
_REQUIRED = ("method", "config", "task", "seed", "provider", "model", "budget_spent", "eval_spent",
             "wall_s", "dev", "eval", "curve", "prompt", "version", "commit")


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


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results file and check it has every field of the schema."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"results file {str(path)!r} must have the fields {list(_REQUIRED)}; missing {missing}")
    return dict(data)
