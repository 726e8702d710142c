"""The documentation site builds in strict mode, and every public name has a docstring.

mkdocs' strict mode fails on a broken link between pages and on an API reference entry
(mkdocstrings) that no longer resolves; the docstring check covers what mkdocstrings passes
over silently: a public module, class, function or method without a docstring.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bbox_lfm

ROOT = Path(__file__).resolve().parents[2]


def test_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "api" / "client" / "index.html").is_file()
    # every notebook is a page of the site (docs/notebooks links to notebooks/), its cassette is not
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (tmp_path / "site" / "notebooks" / nb.stem / "index.html").is_file(), nb.name
    assert not (tmp_path / "site" / "notebooks" / "cassettes").exists()


def _undocumented() -> list[str]:
    missing: list[str] = []
    for info in pkgutil.walk_packages(bbox_lfm.__path__, "bbox_lfm."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        if not (mod.__doc__ or "").strip():
            missing.append(info.name)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ != mod.__name__:
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{info.name}.{name}")
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") or not inspect.isfunction(value):
                        continue
                    inherited = any((getattr(getattr(base, attr, None), "__doc__", None) or "").strip()
                                    for base in obj.__mro__[1:])
                    if not (value.__doc__ or "").strip() and not inherited:
                        missing.append(f"{info.name}.{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    assert _undocumented() == []


def test_docstring_check_notices_a_missing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from bbox_lfm import budget

    monkeypatch.setattr(budget.Budget, "__doc__", None)
    assert "bbox_lfm.budget.Budget" in _undocumented()
