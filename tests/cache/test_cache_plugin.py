"""The pytest plugin, used by a throwaway project that is not this one (pytester)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from bbox_lfm import Client, Query
from bbox_lfm.cli import build_parser
from bbox_lfm.testing.plugin import RECORD_MODES, Cassette

pytest_plugins = ["pytester"]

# pytester removes, after each test, the modules first imported during it, while their package
# keeps its attribute: a later `from bbox_lfm.commands import eval` would then patch a copy the
# CLI no longer runs (tests/tasks/test_calibration.py failed so after this file). Every command
# module is imported here, before any test of this file takes its snapshot.
build_parser()

CONFTEST = """
import os
import pytest
from bbox_lfm import MockAdapter

def fake_provider(query):
    with open(os.environ["FAKE_PROVIDER_LOG"], "a") as f:  # what reached the provider
        f.write(query.prompt[0] + "\\n")
    return {"choices": [{"index": 0, "text": " echo:" + query.prompt[0]}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

@pytest.fixture
def bbox_client_kwargs():
    return {"adapter": MockAdapter(fake_provider)}
"""

INI = """
[pytest]
bbox_base_url = http://fake.test/v1
bbox_provider = generic
bbox_model = fm
"""

TESTS = """
import pytest
from bbox_lfm import Client, MockAdapter, Query
from conftest import fake_provider

def test_fixture(bbox_client):
    assert bbox_client.send(Query(prompt="hello")).text == " echo:hello"
    assert bbox_client.send(Query(prompt="hello")).cache_hit  # asked once, answered twice

@pytest.mark.bbox_cassette(base_url="http://other.test/v1", provider="generic", model="om")
def test_marker_reaches_clients_the_code_builds_itself():
    client = Client("http://other.test/v1", provider="generic", model="om", adapter=MockAdapter(fake_provider))
    assert client.send(Query(prompt="from the code under test")).text == " echo:from the code under test"
"""


@pytest.fixture()
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("FAKE_PROVIDER_LOG", str(pytester.path / "provider.log"))
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_foreign=TESTS)
    return pytester


def sent(p: pytest.Pytester) -> list[str]:
    log = p.path / "provider.log"
    return log.read_text().splitlines() if log.exists() else []


def test_record_once_then_replay_offline(project: pytest.Pytester) -> None:
    project.runpytest("--bbox-record-mode=once").assert_outcomes(passed=2)
    assert sent(project) == ["hello", "from the code under test"]
    tape = project.path / "tests" / "cassettes" / "test_foreign" / "test_fixture.jsonl"
    marked = tape.with_name("test_marker_reaches_clients_the_code_builds_itself.jsonl")
    assert tape.exists() and marked.exists()
    header, line = tape.read_text().splitlines()
    assert json.loads(header)["recorded_against"] == {  # what the ini file gave
        "base_url": "http://fake.test/v1", "model": "fm", "namespace": "http://fake.test/v1", "provider": "generic"}
    assert json.loads(line)["query"]["prompt"] == ["hello"]
    before = tape.read_bytes()

    project.runpytest().assert_outcomes(passed=2)  # default none: replay only
    project.runpytest("--bbox-record-mode=once").assert_outcomes(passed=2)  # cassettes exist: replay
    assert sent(project) == ["hello", "from the code under test"]
    assert tape.read_bytes() == before


def test_none_fails_a_missing_answer_clearly_and_sends_nothing(project: pytest.Pytester) -> None:
    project.runpytest("--bbox-record-mode=once").assert_outcomes(passed=2)
    project.makepyfile(test_foreign=TESTS.replace("hello", "new"))
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*CacheMiss*no cached answer*", "*bbox cassette*",
                                 "*test_fixture.jsonl has no answer*", "*--bbox-record-mode=once*"])
    assert sent(project) == ["hello", "from the code under test"]

    project.runpytest("--bbox-record-mode=new_episodes").assert_outcomes(passed=2)
    assert sent(project)[2:] == ["new"]  # only what the cassette lacked
    tape = project.path / "tests" / "cassettes" / "test_foreign" / "test_fixture.jsonl"
    assert len(tape.read_text().splitlines()) == 1 + 2  # "hello" stays: new_episodes only adds
    project.runpytest("--bbox-record-mode=all").assert_outcomes(passed=2)
    assert sent(project)[3:] == ["new", "from the code under test"]  # everything asked again
    assert len(tape.read_text().splitlines()) == 1 + 1  # and the cassette rewritten with this run only


def test_no_cassette_and_no_mock_never_reaches_the_network(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_offline="""
        import pytest
        from bbox_lfm import Query
        from bbox_lfm.errors import CacheMiss

        def test_send(bbox_client):
            bbox_client.send(Query(prompt="x"))

        def test_models(bbox_client):
            with pytest.raises(CacheMiss, match="allows no network access"):
                bbox_client.models()
            with pytest.raises(CacheMiss, match="allows no network access"):
                bbox_client.with_cache_mode("off").send(Query(prompt="x"))
    """)
    # port 9 is discard: were anything sent, it would fail differently (a connection error)
    result = pytester.runpytest("--bbox-base-url=http://127.0.0.1:9/v1", "--bbox-provider=openai",
                                "--bbox-model=gpt-4o-mini")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*CacheMiss: replay mode: no cached answer*", "*test_send.jsonl does not exist*"])
    assert not (pytester.path / "tests" / "cassettes").exists()


def test_marker_validation_and_registration(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.bbox_cassette(colour="red")
        def test_x():
            pass
    """)
    result = pytester.runpytest("--strict-markers")
    result.stdout.fnmatch_lines(["*unknown keyword arguments*colour*"])
    assert RECORD_MODES == ("none", "once", "new_episodes", "all")


def test_the_plugin_is_registered_under_pytest11() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "bbox_lfm"]
    assert ep.value == "bbox_lfm.testing.plugin"


@pytest.mark.bbox_cassette(base_url="http://127.0.0.1:9/v1", provider="bbox-lfm", model="SmolLM2-135M-Instruct",
                           namespace="bbox-lfm-local:SmolLM2-135M-Instruct")
def test_this_projects_recorded_cassette_replays(bbox_client: Client, bbox_cassette: Cassette) -> None:
    """A cassette recorded from the local SmolLM2 server, replayed with no server at all.

    Re-record: start a server (``bbox-lfm serve``) and run this test with
    ``--bbox-record-mode=all --bbox-base-url http://127.0.0.1:PORT/v1``.
    """
    scores = bbox_client.score(["The film was a delight from start to finish. It was"], [" terrible", " great"])
    text = bbox_client.send(Query(prompt="The capital of France is", max_tokens=4)).text
    assert scores.logprobs.shape == (1, 2) and np.isfinite(scores.logprobs).all() and text
    if bbox_cassette.cache_mode == "replay":
        assert scores.cache_hits == 1 and bbox_client.budget.summary()["requests"] == 0


# -- record once, then a plain `pytest` replays (issue 24) -----------------------------------------

USER_CONFTEST = """
import os
import socket
import pytest

@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    # the CI run: no server and no network; any connection attempt fails the test
    if os.environ.get("NO_NETWORK"):
        def refuse(*args, **kwargs):
            raise OSError("this run has no network")
        monkeypatch.setattr(socket.socket, "connect", refuse)
"""

USER_TESTS = """
from bbox_lfm import Query

def test_capital(bbox_client):
    assert bbox_client.send(Query(prompt="The capital of France is", max_tokens=2)).text

def test_sentiment(bbox_client):
    scores = bbox_client.score(["A delight from start to finish. It was"], [" great", " awful"])
    assert scores.logprobs.shape == (1, 2)
"""


def test_recorded_against_the_local_server_then_plain_pytest_replays(
        pytester: pytest.Pytester, local_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's scenario: record with flags against a running server, replay with none and no server."""
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    pytester.runpytest("--bbox-record-mode=once", f"--bbox-base-url={local_server.base_url}",
                       "--bbox-provider=bbox-lfm").assert_outcomes(passed=2)
    tapes = sorted((pytester.path / "tests" / "cassettes" / "test_user").glob("*.jsonl"))
    assert [t.name for t in tapes] == ["test_capital.jsonl", "test_sentiment.jsonl"]
    for tape in tapes:
        header = json.loads(tape.read_text().splitlines()[0])
        assert header == {"bbox_lfm_cassette": 1, "recorded_against": {
            "model": local_server.model_id, "namespace": f"bbox-lfm-local:{local_server.model_id}",
            "provider": "bbox-lfm"}}
        assert f":{local_server.port}" not in tape.read_text()  # the random port is nowhere

    monkeypatch.setenv("NO_NETWORK", "1")
    pytester.runpytest().assert_outcomes(passed=2)  # no flags, no server
    pytester.runpytest("--bbox-base-url=http://127.0.0.1:9/v1").assert_outcomes(passed=2)  # any port

    # a contradicting flag names both values
    result = pytester.runpytest("--bbox-model=gpt-4o-mini")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([(f"*recorded against model '{local_server.model_id}', replaying as model"
                                  " 'gpt-4o-mini' (--bbox-model)*")])
    result = pytester.runpytest("--bbox-base-url=https://api.openai.com/v1")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([(f"*recorded against namespace 'bbox-lfm-local:{local_server.model_id}', replaying"
                                  " as namespace 'https://api.openai.com/v1' from base URL*(--bbox-base-url)*")])

    # an edited prompt fails, naming what changed
    pytester.makepyfile(test_user=USER_TESTS.replace("France", "Spain"))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([("*CacheMiss*nearest recorded query differs in prompt[[]0[]]"
                                  " (recorded 'The capital of France is', asked 'The capital of Spain is')*"),
                                 "*bbox cassette*", "*test_capital.jsonl has no answer*"])


HOSTED_CONFTEST = """
import os
import pytest
from bbox_lfm import MockAdapter

def hosted(query):  # stands in for the hosted API while recording
    return {"choices": [{"index": 0, "text": " ok"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

@pytest.fixture
def bbox_client_kwargs():
    return {"adapter": MockAdapter(hosted)} if os.environ.get("RECORDING") else {}
"""

HOSTED_TESTS = """
import os
import pytest
from bbox_lfm import Client, MockAdapter, Query
from conftest import hosted

def test_fixture(bbox_client):
    assert bbox_client.send(Query(prompt="hi", max_tokens=1)).text == " ok"

@pytest.mark.bbox_cassette
def test_own_client():
    adapter = MockAdapter(hosted) if os.environ.get("RECORDING") else None
    with Client("https://api.openai.com/v1", model="gpt-4o-mini", adapter=adapter) as c:
        assert c.send(Query(prompt="own", max_tokens=1)).text == " ok"
"""


def test_recorded_against_a_hosted_api_replays_with_no_key(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(HOSTED_CONFTEST)
    pytester.makepyfile(test_hosted=HOSTED_TESTS)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdefSECRET")
    monkeypatch.setenv("RECORDING", "1")
    pytester.runpytest("--bbox-record-mode=once", "--bbox-base-url=https://api.openai.com/v1",
                       "--bbox-provider=openai", "--bbox-model=gpt-4o-mini").assert_outcomes(passed=2)
    tapes = pytester.path / "tests" / "cassettes" / "test_hosted"
    header = json.loads((tapes / "test_fixture.jsonl").read_text().splitlines()[0])["recorded_against"]
    assert header == {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                      "namespace": "https://api.openai.com/v1", "provider": "openai"}
    assert all("SECRET" not in t.read_text() for t in tapes.iterdir())

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("RECORDING")
    pytester.runpytest().assert_outcomes(passed=2)
    assert "OPENAI_API_KEY" not in os.environ  # the placeholder lived only as long as the test


def test_a_cassette_cut_from_a_long_runs_cache_replays_with_no_flags(pytester: pytest.Pytester) -> None:
    from bbox_lfm import MockAdapter
    from bbox_lfm.cli import main

    def server(q: Query) -> dict[str, Any]:
        return {"choices": [{"index": 0, "text": " Paris" if "France" in q.prompt[0] else " Rome"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1}}

    cache = pytester.path / "long_run.sqlite"
    with Client.local("http://127.0.0.1:8123/v1", adapter=MockAdapter(server), cache=cache) as run:
        for country in ("France", "Italy", "Spain"):  # the long run
            run.send(Query(prompt=f"The capital of {country} is", max_tokens=1))
    tape = pytester.path / "tests" / "cassettes" / "test_cut" / "test_paris.jsonl"
    assert main(["cache", "--cache", str(cache), "export", "--filter", "prompt~France", str(tape)]) == 0
    pytester.makepyfile(test_cut="""
        from bbox_lfm import Query

        def test_paris(bbox_client):
            assert bbox_client.send(Query(prompt="The capital of France is", max_tokens=1)).text == " Paris"
    """)
    pytester.runpytest().assert_outcomes(passed=1)
