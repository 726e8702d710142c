"""Shared fixtures: an isolated cache directory and ONE local server per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep tests out of the user's cache: every test session gets its own cache directory."""
    d = tmp_path_factory.mktemp("bbox_cache")
    old = os.environ.get("BBOX_LFM_CACHE_DIR")
    os.environ["BBOX_LFM_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("BBOX_LFM_CACHE_DIR", None)
    else:
        os.environ["BBOX_LFM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def local_server() -> Iterator[object]:
    """The embedded SmolLM2-135M-Instruct behind bbox-lfm's server, loaded once per session."""
    from bbox_lfm.serve import start_local

    server = start_local()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def local_client(local_server: object, tmp_path: Path) -> Iterator[object]:
    """A client for the session's local server with a fresh, empty cache of its own."""
    from bbox_lfm import Client

    with Client.local(local_server, cache=tmp_path / "cache.sqlite") as client:
        yield client


@pytest.fixture()
def benchmark_script() -> Callable[[str], ModuleType]:
    """Loads ``benchmarks/NAME.py`` as a module (the scripts are not a package): ``load("readme")``."""
    import importlib.util
    import sys

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        return module

    return load
