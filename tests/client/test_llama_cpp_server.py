"""Against a real third-party server: llama-cpp-python's, on the embedded SmolLM2 GGUF.

Skipped where llama-cpp-python is not installed (``make test-llama-cpp`` builds it). The probe
must find what the shipped ``llama-cpp`` profile says; with no ``--model`` the one served model
is used; label words count one token each (``max_tokens=1`` and the echoed prompt, since
llama.cpp reads 0 as "no limit"); top-k scores agree with the local server's exact ones on the
same model where a word is in the top 100 (echoed values are not: ``echo_logprobs`` false); a
BDPL budget of N calls is N calls and N x 16 requests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbox_lfm.testing.llama_cpp import available

pytestmark = pytest.mark.skipif(not available(), reason="llama-cpp-python is not installed (make test-llama-cpp)")

PROBED = ("completions", "logprobs", "max_top_logprobs", "chat_logprobs", "chat_max_top_logprobs", "echo",
          "echo_max_tokens", "echo_logprobs", "max_batch")


@pytest.fixture(scope="module")
def llama_url():
    from bbox_lfm.testing.llama_cpp import llama_cpp_server

    with llama_cpp_server() as url:
        yield url


def test_probe_finds_the_shipped_profile(llama_url: str) -> None:
    from bbox_lfm import Client
    from bbox_lfm.probe import probe
    from bbox_lfm.profiles import load_profile

    with Client(llama_url, provider="llama-cpp", cache_mode="off", max_attempts=1) as client:
        result = probe(client)
    shipped = load_profile("llama-cpp").capabilities
    assert {k: result.capabilities[k] for k in PROBED} == {k: getattr(shipped, k) for k in PROBED}, result.evidence
    assert result.max_tokens_zero == "generates" and not result.model_named and len(result.models) == 1


def test_no_model_named_label_words_counted_and_scores_agree(llama_url: str, local_client, tmp_path: Path) -> None:
    from bbox_lfm import Client
    from bbox_lfm.tasks import load_task

    task = load_task("sst2")
    template, words = task.templates[1]
    rows = task.split("eval")[:12]
    prompts = [template.format(text=ex.text) for ex in rows]
    with Client(llama_url, provider="llama-cpp", cache=tmp_path / "c.sqlite") as client:
        assert client.model is None
        assert task.with_template(template, words).check_label_words(client) is True
        assert client.model_source == "the one model the server lists"
        theirs = client.score(prompts, words)  # top 100, one prompt per request
        assert theirs.strategy == "topk"
        assert client.budget.summary()["requests"] == len(prompts) + len(words) + 1
        import dataclasses

        caps = dataclasses.replace(client.capabilities, echo_logprobs=True)  # what the profile refuses
        client.profile = dataclasses.replace(client.profile, capabilities=caps)
        echoed = client.score(prompts, words, strategy="echo")
    ours = local_client.score(prompts, words)  # exact scores, the same weights de-quantized to float32
    # top-k scores: where a word is in the top 100 the same value as the local server's up to
    # llama.cpp's quantized arithmetic (it quantizes activations too: up to 0.3 measured); the
    # others get the floor (counted as misses)
    seen = [(i, k) for i, r in enumerate(theirs.responses) for k, w in enumerate(words)
            if any(t.strip() == w.strip() for t in r.choices[0].logprobs.top_logprobs[0])]
    assert len(seen) == 2 * len(prompts) - theirs.misses and theirs.misses <= 2
    assert max(abs(theirs.logprobs[i, k] - ours.logprobs[i, k]) for i, k in seen) < 0.5
    assert (theirs.predictions() == ours.predictions()).mean() >= 11 / 12
    # the echoed values are not log p(word | prompt) on this server (the probe's echo_logprobs)
    assert abs(echoed.logprobs - ours.logprobs).max() > 2.0


def test_bdpl_budget_is_calls_with_requests_apart(llama_url: str, tmp_path: Path, monkeypatch) -> None:
    from bbox_lfm.cli import main

    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(tmp_path))
    out = tmp_path / "bdpl.json"
    rc = main(["tune", "bdpl", "--task", "sample", "--budget", "4", "--set", "sample_size=2", "--set",
               "eval_every=4", "--eval-limit", "4", "--base-url", llama_url, "--provider", "llama-cpp",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    # 4 calls; each scores the 16 training prompts, one per request
    assert r["budget_spent"]["calls"] == 4 and r["budget_spent"]["requests"] == 4 * 16
    assert r["model"] and r["provider"] == "llama-cpp"
