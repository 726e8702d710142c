"""bbox-lfm's pytest plugin: record provider answers once, replay them offline forever.

Registered under the ``pytest11`` entry point, so installing bbox-lfm is enough. A test that
asks for the ``bbox_client`` fixture, or carries ``@pytest.mark.bbox_cassette``, runs against
its cassette ``tests/cassettes/{module}/{test}.jsonl``:

- ``--bbox-record-mode=none`` (default): answers come only from the cassette; a query it lacks
  fails the test with ``CacheMiss`` naming the cassette and what differs from the nearest
  recorded query, and nothing reaches the network.
- ``once``: replay when the cassette exists, else send, record and write it.
- ``new_episodes``: replay what the cassette has, send and add what it lacks.
- ``all``: send everything again and rewrite the cassette.

While such a test runs, *every* :class:`~bbox_lfm.client.Client` it builds without an explicit
cache uses the cassette (through ``BBOX_LFM_CACHE_DIR`` and ``BBOX_LFM_CACHE_MODE``, so child
processes such as the ``bbox-lfm`` CLI do too). The provider comes from ``--bbox-base-url`` /
``--bbox-provider`` / ``--bbox-model`` / ``--bbox-namespace``, else the marker's keyword
arguments, else the ini options of the same names (``bbox_base_url``, ...), else the cassette:
its header records what it was recorded against, so a plain ``pytest`` replays what
``pytest --bbox-record-mode=once --bbox-base-url ...`` recorded. A setting that is given and
contradicts the cassette fails the test naming both. Against bbox-lfm's local server the cache
namespace is ``bbox-lfm-local:<model>``, so a cassette recorded on one port replays on any.
Override the ``bbox_client_kwargs`` fixture to pass anything else to the client (an adapter, a
budget). See ``docs/cassettes.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    """One test's cassette: where it lives, how it is used, and the settings of its provider.

    ``given`` are the settings from the command line, marker or ini file (``sources`` says
    which), ``recorded`` what the cassette says it was recorded against, ``settings`` what the
    test runs with (given, else recorded), ``used`` what ``bbox_client`` ran with (the header
    a recording writes).
    """

    path: Path
    record_mode: str
    cache_dir: Path
    settings: dict[str, str | None]
    given: dict[str, str | None] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)
    used: dict[str, str | None] | None = None
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
             "namespace": "cache namespace for bbox_client (default the base URL, or bbox-lfm-local:MODEL for"
                          " bbox-lfm's local server, so its cassettes replay whatever its port)"}
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


def _given(config: pytest.Config, mk: dict[str, Any]) -> tuple[dict[str, str | None], dict[str, str]]:
    """The settings given for a test and where each came from: the command line wins (so that a
    marked test can be recorded against any server), then the marker, then the ini file."""
    given: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for name in _SETTINGS:
        given[name] = None
        for value, source in ((config.getoption(f"bbox_{name}"), f"--bbox-{name.replace('_', '-')}"),
                              (mk.get(name), f"bbox_cassette({name}=...)"),
                              (config.getini(f"bbox_{name}"), f"bbox_{name} in the ini file")):
            if value:
                given[name], sources[name] = str(value), source
                break
    return given, sources


def _merge(given: dict[str, str | None], recorded: dict[str, str]) -> dict[str, str | None]:
    """Given settings, with what is not given taken from the cassette. Where the provider is
    (base URL and namespace) is one setting: a given base URL is not paired with a recorded
    namespace, so that ``--bbox-record-mode=all --bbox-base-url NEW`` records under NEW."""
    where_given = bool(given["base_url"] or given["namespace"])
    return {name: given[name] or (None if name in ("base_url", "namespace") and where_given else recorded.get(name))
            for name in _SETTINGS}


def _effective(settings: dict[str, str | None]) -> dict[str, str | None]:
    """What a client built from ``settings`` talks to and keys its cache by, as ``Client`` decides
    it; bbox-lfm's local server (profile ``bbox-lfm`` on a loopback address) gets the namespace
    ``bbox-lfm-local:<model>``, which no port number enters."""
    from ..client import Client
    from ..stores.jsonl import LOCAL_NAMESPACE_PREFIX, _is_loopback

    base_url = settings["base_url"] or os.environ.get("OPENAI_BASE_URL") or None
    profile = Client._resolve_profile(settings["provider"], base_url)
    base = (base_url or profile.base_url).rstrip("/")
    model = settings["model"] or profile.default_model or None
    namespace = settings["namespace"]
    if not namespace:
        local = profile.name == "bbox-lfm" and _is_loopback(base) and model
        namespace = f"{LOCAL_NAMESPACE_PREFIX}{model}" if local else base
    return {"base_url": base, "provider": settings["provider"] or profile.name, "model": model,
            "namespace": namespace}


def _same_provider(a: str, b: str) -> bool:
    if a == b:
        return True
    from ..errors import ConfigError
    from ..profiles import load_profile

    try:  # a profile named once by name and once by its .toml path
        return load_profile(a).name == load_profile(b).name
    except (ConfigError, OSError):
        return False


def _contradictions(cassette: Cassette) -> list[str]:
    """Each given setting that differs from what the cassette was recorded against, both named."""
    given, recorded, sources = cassette.given, cassette.recorded, cassette.sources
    out = []
    for name in ("provider", "model"):
        mine, theirs = given[name], recorded.get(name)
        if mine and theirs and not (_same_provider(mine, theirs) if name == "provider" else mine == theirs):
            out.append(f"recorded against {name} {theirs!r}, replaying as {name} {mine!r} ({sources[name]})")
    theirs = recorded.get("namespace")
    if theirs and (given["namespace"] or given["base_url"]):
        mine = _effective(cassette.settings)["namespace"]
        if mine != theirs:
            name = "namespace" if given["namespace"] else "base_url"
            what = "" if name == "namespace" else f" from base URL {given['base_url']!r}"
            out.append(f"recorded against namespace {theirs!r}, replaying as namespace {mine!r}{what}"
                       f" ({sources[name]})")
    return out


def _cassette_for(request: pytest.FixtureRequest) -> Cassette:
    from ..stores.jsonl import recorded_against

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
    module = Path(str(request.node.path)).stem
    name = _safe(mk.get("name") or request.node.name)
    path = Path(str(config.rootpath)) / config.getini("bbox_cassette_dir") / _safe(module) / f"{name}.jsonl"
    given, sources = _given(config, mk)
    recorded = recorded_against(path) if path.exists() else {}
    cache_dir = request.getfixturevalue("tmp_path_factory").mktemp("bbox_cassette")
    cassette = Cassette(path=path, record_mode=mode, cache_dir=cache_dir, settings=_merge(given, recorded),
                        given=given, sources=sources, recorded=recorded)
    if recorded and mode != "all":  # 'all' re-records: the given settings win
        wrong = _contradictions(cassette)
        if wrong:
            pytest.fail(f"bbox cassette {path}: " + "; ".join(wrong) + ". Drop the setting to replay what was"
                        " recorded, or record again with --bbox-record-mode=all.", pytrace=False)
    return cassette


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
        _placeholder_key(monkeypatch, cassette)
    request.node.stash[_CASSETTE_KEY] = cassette
    yield cassette
    if cassette.cache_mode != "replay":
        _write_back(cassette)


def _recorded(cassette: Cassette, entries: list[tuple[str, dict[str, Any]]]) -> dict[str, str | None]:
    """What the header says the cassette was recorded against: what ``bbox_client`` ran with;
    for a test that builds its own clients, what the entries tell, with the given settings."""
    from ..stores.jsonl import infer_recorded_against

    if cassette.used is not None:
        return dict(cassette.used)
    out: dict[str, str | None] = dict(infer_recorded_against(entries))
    out.update({k: v for k, v in cassette.given.items() if v})
    return out


def _placeholder_key(monkeypatch: pytest.MonkeyPatch, cassette: Cassette) -> None:
    """In replay, a client for a hosted provider needs no key: give its variable a placeholder
    (nothing is sent, and a client the tested code builds itself would refuse to start without)."""
    from ..errors import ConfigError
    from ..profiles import load_profile

    try:
        provider = _effective(cassette.settings)["provider"]
        env = load_profile(provider).api_key_env if provider else None
    except (ConfigError, OSError):
        return
    if env and not os.environ.get(env):
        monkeypatch.setenv(env, "EMPTY")


def _write_back(cassette: Cassette) -> None:
    """Write the recorded answers to the cassette file (sorted, secrets scrubbed, with a header)."""
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
    write_cassette(cassette.path, entries, secrets, recorded=_recorded(cassette, entries))


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
    eff = _effective(s)
    kw: dict[str, Any] = {"provider": s["provider"], "model": eff["model"], "cache_namespace": eff["namespace"],
                          "cache_mode": bbox_cassette.cache_mode}
    if bbox_cassette.cache_mode == "replay":
        kw["api_key"] = "EMPTY"  # never sent: replay reaches no provider
    kw.update(bbox_client_kwargs)
    client = Client(s["base_url"], **kw)
    bbox_cassette.used = {"base_url": client.base_url, "provider": s["provider"] or client.profile.name,
                          "model": client.model, "namespace": client.cache_namespace}
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
        against = ", ".join(f"{k} {v!r}" for k, v in sorted(cassette.recorded.items()))
        hint = getattr(call.excinfo.value, "hint", None)
        report.sections.append(("bbox cassette", (
            f"The cassette {cassette.path} {state} (record mode {cassette.record_mode!r}); nothing was sent.\n"
            + (f"It was recorded against {against}.\n" if against else "")
            + (f"In it, {hint}.\n" if hint else "") +
            "Record it against a real provider with --bbox-record-mode=once (missing cassettes) or"
            " new_episodes (add missing answers), plus --bbox-base-url/--bbox-provider/--bbox-model.")))
