"""bbox-lfm's pytest plugin: record provider answers once, replay them offline forever.

Registered under the ``pytest11`` entry point, so installing bbox-lfm is enough. A test that
asks for the ``bbox_client`` fixture, or carries ``@pytest.mark.bbox_cassette``, runs against
its cassette ``tests/cassettes/{module}/{test}.jsonl``:

- ``--bbox-record-mode=none`` (default): answers come only from the cassette; a query it lacks
  fails the test with ``CacheMiss`` naming the cassette, and nothing reaches the network.
- ``once``: replay when the cassette exists, else send, record and write it.
- ``new_episodes``: replay what the cassette has, send and add what it lacks.
- ``all``: send everything again and rewrite the cassette.

While such a test runs, *every* :class:`~bbox_lfm.client.Client` it builds without an explicit
cache uses the cassette (through ``BBOX_LFM_CACHE_DIR`` and ``BBOX_LFM_CACHE_MODE``, so child
processes such as the ``bbox-lfm`` CLI do too). The provider comes from ``--bbox-base-url`` /
``--bbox-provider`` / ``--bbox-model`` / ``--bbox-namespace``, else the marker's keyword
arguments, else the ini options of the same names (``bbox_base_url``, ...). Override
the ``bbox_client_kwargs`` fixture to pass anything else to the client (an adapter, a budget).
See ``docs/cassettes.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RECORD_MODES", "Cassette"]

RECORD_MODES = ("none", "once", "new_episodes", "all")
_SETTINGS = ("base_url", "provider", "model", "namespace")
_MARKER_DOC = ("bbox_cassette(name=None, *, base_url=None, provider=None, model=None, namespace=None, "
               "record_mode=None): run the test against its bbox-lfm cassette tests/cassettes/{module}/{name}.jsonl")
_CASSETTE_KEY = pytest.StashKey["Cassette"]()


@dataclass
class Cassette:
    """One test's cassette: where it lives, how it is used, and the settings of its provider."""

    path: Path
    record_mode: str
    cache_dir: Path
    settings: dict[str, str | None]
    loaded: int = 0

    @property
    def cache_mode(self) -> str:
        """The client cache mode this record mode means."""
        if self.record_mode == "none" or (self.record_mode == "once" and self.path.exists()):
            return "replay"
        return "readwrite"

    @property
    def store_path(self) -> Path:
        """The SQLite file the test's clients use while it runs."""
        return self.cache_dir / "cache.sqlite"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``--bbox-*`` options and their ini twins."""
    group = parser.getgroup("bbox_lfm", "bbox-lfm record/replay")
    group.addoption("--bbox-record-mode", default=None, choices=RECORD_MODES,
                    help="cassette record mode (default none: replay only, nothing reaches the network)")
    helps = {"base_url": "provider base URL for bbox_client, e.g. http://127.0.0.1:8000/v1",
             "provider": "provider profile for bbox_client (openai, vllm, bbox-lfm, generic, a .toml path)",
             "model": "model for bbox_client",
             "namespace": "cache namespace for bbox_client (default the base URL; keeps cassettes valid when"
                          " the URL changes, e.g. a local server on a random port)"}
    for name in _SETTINGS:
        group.addoption(f"--bbox-{name.replace('_', '-')}", default=None, help=helps[name])
        parser.addini(f"bbox_{name}", helps[name], default=None)
    parser.addini("bbox_record_mode", "default cassette record mode", default="none")
    parser.addini("bbox_cassette_dir", "cassette directory, relative to the rootdir", default="tests/cassettes")


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker (the project runs with --strict-markers)."""
    config.addinivalue_line("markers", _MARKER_DOC)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_") or "test"


def _cassette_for(request: pytest.FixtureRequest) -> Cassette:
    config = request.config
    marker = request.node.get_closest_marker("bbox_cassette")
    mk: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        mk.setdefault("name", marker.args[0])
    unknown = set(mk) - {"name", "record_mode", *_SETTINGS}
    if unknown:
        raise pytest.UsageError(f"bbox_cassette got unknown keyword arguments {sorted(unknown)}")
    mode = mk.get("record_mode") or config.getoption("bbox_record_mode") or config.getini("bbox_record_mode")
    if mode not in RECORD_MODES:
        raise pytest.UsageError(f"bbox record mode must be one of {RECORD_MODES}; got {mode!r}")
    # the command line wins, so that a marked test can be recorded against any server; the
    # marker's namespace keeps the cassette valid whatever URL it was recorded from
    settings = {name: config.getoption(f"bbox_{name}") or mk.get(name) or config.getini(f"bbox_{name}") or None
                for name in _SETTINGS}
    module = Path(str(request.node.path)).stem
    name = _safe(mk.get("name") or request.node.name)
    path = Path(str(config.rootpath)) / config.getini("bbox_cassette_dir") / _safe(module) / f"{name}.jsonl"
    cache_dir = request.getfixturevalue("tmp_path_factory").mktemp("bbox_cassette")
    return Cassette(path=path, record_mode=mode, cache_dir=cache_dir, settings=settings)


@pytest.fixture()
def bbox_cassette(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cassette]:
    """The test's cassette, active for every client the test builds without its own cache."""
    from ..stores import SQLiteStore, read_cassette

    cassette = _cassette_for(request)
    store = SQLiteStore(cassette.store_path)
    if cassette.record_mode != "all" and cassette.path.exists():
        for key, entry in read_cassette(cassette.path):
            store.put(key, entry)
            cassette.loaded += 1
    store.close()
    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(cassette.cache_dir))
    monkeypatch.setenv("BBOX_LFM_CACHE_MODE", cassette.cache_mode)
    if cassette.cache_mode == "replay":
        _block_network(monkeypatch, cassette)
    request.node.stash[_CASSETTE_KEY] = cassette
    yield cassette
    if cassette.cache_mode != "replay":
        _write_back(cassette)


def _write_back(cassette: Cassette) -> None:
    """Write the recorded answers to the cassette file (sorted, secrets scrubbed)."""
    from ..profiles import load_profile
    from ..stores import SQLiteStore, write_cassette

    store = SQLiteStore(cassette.store_path)
    try:
        entries = list(store.items())
    finally:
        store.close()
    if len(entries) == cassette.loaded and cassette.record_mode != "all":
        return  # nothing new: leave the file (and its diff) alone
    if not entries:
        return
    secrets = [os.environ.get("OPENAI_API_KEY")]
    provider = cassette.settings.get("provider")
    if provider:
        secrets.append(os.environ.get(load_profile(provider).api_key_env))
    write_cassette(cassette.path, entries, secrets)


def _block_network(monkeypatch: pytest.MonkeyPatch, cassette: Cassette) -> None:
    """In replay, make any request that bypasses the cache (``cache_mode='off'``, ``models()``) fail."""
    from ..adapters.openai_compat import OpenAICompatAdapter
    from ..errors import CacheMiss

    def refuse(self: Any, query: Any = None) -> Any:
        what = query.describe() if query is not None else "GET /models"
        raise CacheMiss("-" * 16, f"{what}: record mode {cassette.record_mode!r} allows no network access"
                                  f" (cassette {cassette.path})")

    monkeypatch.setattr(OpenAICompatAdapter, "send", refuse)
    monkeypatch.setattr(OpenAICompatAdapter, "models", refuse)


@pytest.fixture(autouse=True)
def _bbox_cassette_marker(request: pytest.FixtureRequest) -> None:
    """Activate the cassette for tests marked ``bbox_cassette`` that do not ask for it."""
    if request.node.get_closest_marker("bbox_cassette") is not None:
        request.getfixturevalue("bbox_cassette")


@pytest.fixture()
def bbox_client_kwargs() -> dict[str, Any]:
    """Extra keyword arguments for ``bbox_client``'s :class:`Client` (override it in a conftest)."""
    return {}


@pytest.fixture()
def bbox_client(bbox_cassette: Cassette, bbox_client_kwargs: dict[str, Any]) -> Iterator[Any]:
    """A :class:`~bbox_lfm.client.Client` backed by the test's cassette."""
    from ..client import Client

    s = bbox_cassette.settings
    kw: dict[str, Any] = {"provider": s["provider"], "model": s["model"], "cache_namespace": s["namespace"],
                          "cache_mode": bbox_cassette.cache_mode}
    if bbox_cassette.cache_mode == "replay":
        kw["api_key"] = "EMPTY"  # never sent: replay reaches no provider
    kw.update(bbox_client_kwargs)
    client = Client(s["base_url"], **kw)
    try:
        yield client
    finally:
        client.close()
        if client.store is not None:
            client.store.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Tell how to record when a replayed test missed its cassette."""
    outcome: Any = yield
    report = outcome.get_result()
    cassette = item.stash.get(_CASSETTE_KEY, None)
    if cassette is None or call.excinfo is None:
        return
    from ..errors import CacheMiss

    if call.excinfo.errisinstance(CacheMiss):
        state = "has no answer for this query" if cassette.path.exists() else "does not exist"
        report.sections.append(("bbox cassette", (
            f"The cassette {cassette.path} {state} (record mode {cassette.record_mode!r}); nothing was sent.\n"
            "Record it against a real provider with --bbox-record-mode=once (missing cassettes) or"
            " new_episodes (add missing answers), plus --bbox-base-url/--bbox-provider/--bbox-model.")))
