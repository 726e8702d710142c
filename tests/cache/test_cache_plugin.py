"""The pytest plugin, used by a throwaway project that is not this one (pytester)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bbox_lfm import Client, Query
from bbox_lfm.testing.plugin import RECORD_MODES, Cassette

pytest_plugins = ["pytester"]

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
    (line,) = tape.read_text().splitlines()
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
    assert len(tape.read_text().splitlines()) == 2  # "hello" stays: new_episodes only adds
    project.runpytest("--bbox-record-mode=all").assert_outcomes(passed=2)
    assert sent(project)[3:] == ["new", "from the code under test"]  # everything asked again
    assert len(tape.read_text().splitlines()) == 1  # and the cassette rewritten with this run only


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
