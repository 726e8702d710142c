"""Start points: the flags, the task's best template, earlier runs, and the harness's guard."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbox_lfm.cli import main
from bbox_lfm.errors import ConfigError
from bbox_lfm.methods import Method, get
from bbox_lfm.methods.harness import CE_RULE, ROWS_RULE, choose, choose_ce, run
from bbox_lfm.results import read_result, write_result
from bbox_lfm.tasks import load_task, start_point
from bbox_lfm.tasks.builtin import BUILTIN
from bbox_lfm.tasks.start import reload_task

from .test_baselines import sentiment_rule
from .test_spec import needs_data

REVIEW = "Review: {text}\nSentiment:"


def test_builtin_tasks_name_their_best_measured_template() -> None:
    # benchmarks/results/baselines.json: sst2 78.6 / mr 76.5 / agnews 68.9 with templates[1], rte 56.0 with [0]
    baselines = json.loads((Path(__file__).parents[2] / "benchmarks/results/baselines.json").read_text())
    best: dict[str, tuple[float, int]] = {}
    for r in baselines["runs"]:
        if r["method"] == "zero-shot":
            index = int(r["extra"]["label"].split()[-1].rstrip(")")) - 1
            best[r["task"]] = max(best.get(r["task"], (-1.0, -1)), (r["eval"]["accuracy"], index))
    assert {t: best[t][1] for t in best} == {t: BUILTIN[t]["best_template"] for t in best}
    assert BUILTIN["sst2"]["templates"][BUILTIN["sst2"]["best_template"]]["template"] == REVIEW


@needs_data
def test_default_start_is_the_best_template_and_the_papers_is_one_flag_away() -> None:
    task = load_task("sst2")
    assert task.best_template == 1
    start = start_point(task)
    assert (start.template, start.label_words, start.template_index) == (REVIEW, (" negative", " positive"), 1)
    assert "best" in start.origin
    assert start_point(task, template_index=0).template == "{text} It was"
    assert start_point(task, default="first").template == "{text} It was"
    assert start.apply(task).template == REVIEW and start.apply(task).split("eval") == task.split("eval")


def test_start_from_a_template_of_ones_own() -> None:
    task = load_task("sample")
    assert task.best_template is None and start_point(task).template == task.template  # unmeasured: first
    s = start_point(task, template="Say: {text}\nMood:", label_words=["sad", " glad"])
    assert s.label_words == (" sad", " glad") and s.to_json()["origin"] == "template given"
    assert start_point(task, template_index=1, label_words=["bad", "good"]).label_words == (" bad", " good")
    with pytest.raises(ConfigError, match="template_index must be an index into the task's 3 templates"):
        start_point(task, template_index=3)
    with pytest.raises(ConfigError, match="at most one of them"):
        start_point(task, template="{text} x", template_index=1)
    with pytest.raises(ConfigError, match="a string containing {text}"):
        start_point(task, template="no slot")
    with pytest.raises(ConfigError, match="one word per label"):
        start_point(task, template="{text} x", label_words=[" a"])


def _result(tmp_path: Path, name: str, **fields: Any) -> Path:
    spent = {"calls": 0, "sequences": 0, "cache_hits": 0}
    metrics = {"accuracy": None, "f1": None}
    base = {"schema": 1, "method": "m", "config": {}, "task": "sample", "seed": 13, "provider": "p", "model": "m",
            "budget_spent": spent, "eval_spent": spent, "wall_s": 0.0, "dev": metrics, "eval": metrics, "curve": [],
            "prompt": None, "version": "0", "commit": ""}
    return write_result(tmp_path / name, {**base, **fields})


def test_start_from_earlier_runs(tmp_path: Path, mock_client) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    # a best-of-n run: its chosen template
    r = run(get("best-of-n")(seed=13), mock_client(sentiment_rule), task, seed=13, progress=False)
    path = write_result(tmp_path / "bon.json", r)
    s = start_point(task, prompt_from=path)
    assert s.template == REVIEW and s.label_words == (" negative", " positive") and s.prompt_from == str(path)
    # a discrete prompt (BDPL) is written into the template it started from
    start = {"template": "{text} It was", "label_words": [" terrible", " great"]}
    s = start_point(task, prompt_from=_result(tmp_path, "bdpl.json", method="bdpl", prompt="truly honest",
                                              config={"start": start}))
    assert s.template == "truly honest {text} It was" and not s.extra
    # a soft prompt (BBT) rides along as request fields; tensors are recorded by shape only
    soft = {"shape": [2, 4], "dtype": "float32", "data": "AAAA"}
    s = start_point(task, prompt_from=_result(tmp_path, "bbt.json", method="bbt", prompt=soft, config={"start": start}))
    assert s.extra == {"soft_prompt": soft} and s.to_json()["extra"] == {"soft_prompt": {"shape": [2, 4]}}
    # ICL demonstrations go in front of the template
    icl = {"template": REVIEW, "label_words": [" negative", " positive"], "prefix": "Review: ok\nSentiment: positive\n\n"}
    assert start_point(task, prompt_from=_result(tmp_path, "icl.json", prompt=icl)).template.startswith("Review: ok")
    with pytest.raises(ConfigError, match="records its template"):
        start_point(task, prompt_from=_result(tmp_path, "old.json", method="bbt", prompt=soft))
    with pytest.raises(ConfigError, match="a run on task 'sample'; got a run on 'sst2'"):
        start_point(task, prompt_from=_result(tmp_path, "other.json", task="sst2", prompt=icl))
    with pytest.raises(ConfigError, match="not found"):
        start_point(task, prompt_from=tmp_path / "missing.json")


def test_reload_task_restores_the_template_a_method_started_from() -> None:
    assert reload_task("sample", REVIEW, (" negative", " positive")).template == REVIEW
    assert reload_task("sample").template == "{text} It was"


def test_choose_needs_a_clear_margin_on_dev() -> None:
    y = np.array([1] * 10)
    start = np.array([1] * 8 + [0] * 2)
    assert choose(y, start, start)["chosen"] == "start"                              # a tie keeps the start
    assert choose(y, start, np.array([1] * 9 + [0]))["chosen"] == "start"           # one row: noise
    fixed2 = choose(y, start, np.array([1] * 10))
    assert (fixed2["chosen"], fixed2["fixed"], fixed2["broken"], fixed2["needed"]) == ("search", 2, 0, 2)
    # 4 fixed, 2 broken: net 2 < ceil(sqrt(6)) = 3
    s, b = np.array([1] * 4 + [0] * 6), np.array([0] * 2 + [1] * 2 + [1] * 4 + [0] * 2)
    assert choose(y, s, b) == {**choose(y, s, b), "chosen": "start", "fixed": 4, "broken": 2, "needed": 3}


def test_choose_ce_against_hand_computed_gains() -> None:
    """Two rows, two labels, scores given as probabilities: row 0 gold 0, row 1 gold 1.
    start: p(gold) 0.5 and 0.5; search: 0.8 and 0.6 -> gains ln 1.6 = 0.4700, ln 1.2 = 0.1823;
    mean 0.3262, sample std 0.1327, se 0.0938: the search (mean > se)."""
    y = [0, 1]
    start = np.log(np.array([[0.5, 0.5], [0.5, 0.5]]))
    search = np.log(np.array([[0.8, 0.2], [0.4, 0.6]])) + 3.0  # unnormalised: the rule normalises over the labels
    r = choose_ce(y, start, search)
    assert r["chosen"] == "search" and r["n"] == 2
    assert r["mean_gain_nats"] == pytest.approx((np.log(1.6) + np.log(1.2)) / 2, abs=1e-12)
    assert r["se_nats"] == pytest.approx(abs(np.log(1.6) - np.log(1.2)) / 2, abs=1e-12)  # sd/sqrt(2) of two values
    # one row gains a lot, one loses nearly as much: the mean is under one standard error
    mixed = np.log(np.array([[0.9, 0.1], [0.8, 0.2]]))  # row 1 gold 1: 0.5 -> 0.2
    m = choose_ce(y, start, mixed)
    assert m["chosen"] == "start" and m["mean_gain_nats"] == pytest.approx((np.log(1.8) + np.log(0.4)) / 2)
    assert choose_ce(y, start, start)["chosen"] == "start"          # no gain keeps the start
    # K = 3, the same gain on every row: se 0, any positive mean is chosen
    y3 = [0, 1, 2]
    s3 = np.log(np.full((3, 3), 1 / 3))
    b3 = np.log(np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]))
    r3 = choose_ce(y3, s3, b3)
    assert r3["chosen"] == "search" and r3["mean_gain_nats"] == pytest.approx(np.log(1.5)) and r3["se_nats"] < 1e-12
    with pytest.raises(ConfigError, match="scores"):
        choose_ce(y, start, search[:1])


class _Scored(Method):
    """A 'search' whose label scores give every row's gold label probability ``p``."""

    name = "test-scored"
    leaves_scores = True

    def __init__(self, *, seed: int = 13, p: float = 0.9) -> None:
        self.seed, self.p = seed, p

    def fit(self, client, task):  # type: ignore[no-untyped-def]
        self.best_prompt_ = "scored"
        return self

    def predict(self, client, examples):  # type: ignore[no-untyped-def]
        gold = np.array([ex.label for ex in examples])
        scores = np.full((len(examples), 2), np.log(1 - self.p))
        scores[np.arange(len(examples)), gold] = np.log(self.p)
        self.last_scores_ = scores
        return scores.argmax(axis=1)

    def get_config(self):  # type: ignore[no-untyped-def]
        return {"seed": self.seed, "p": self.p}


def test_harness_decides_by_the_ce_comparison_where_the_method_gives_scores(  # type: ignore[no-untyped-def]
        mock_client) -> None:
    task = load_task("sample")
    start = start_point(task, template_index=1)
    rows = run(_Scored(), mock_client(sentiment_rule), task, seed=13, progress=False, start=start, guard=True)
    ce_record = rows.extra["selection_ce"]
    assert ce_record["n"] == rows.dev["n"] and ce_record["chosen"] in ("search", "start")
    assert rows.extra["selection"]["rule"] == ROWS_RULE                      # asked for: the row count decides
    assert run(_Scored(), mock_client(sentiment_rule), task, seed=13, progress=False, start=start,
               guard="rows").extra["selection"] == rows.extra["selection"]
    by_rows = run(_Scored(p=0.999), mock_client(sentiment_rule), task, seed=13, progress=False, start=start,
                  guard="rows").extra["selection"]
    for guard in ("ce", "auto"):  # "auto", the default, is "ce" for a method that leaves its label scores
        ce = run(_Scored(p=0.999), mock_client(sentiment_rule), task, seed=13, progress=False, start=start,
                 **({} if guard == "auto" else {"guard": guard}))
        assert ce.extra["selection"]["chosen"] == ce.extra["selection_ce"]["chosen"] == "search"
        assert ce.extra["selection"]["rule"] == "guard 'ce': " + CE_RULE and ce.prompt == "scored"
        assert ce.extra["selection"]["rows_chosen"] == by_rows["chosen"] == "search"
    # right on every dev row but barely sure of it (p = 0.6): the row count takes the search, the
    # ce rule keeps the start; the row count's own choice and counts stay in the record
    by_rows = run(_Scored(p=0.6), mock_client(sentiment_rule), task, seed=13, progress=False, start=start,
                  guard="rows").extra["selection"]
    ce = run(_Scored(p=0.6), mock_client(sentiment_rule), task, seed=13, progress=False, start=start, guard="ce")
    assert (by_rows["chosen"], ce.extra["selection"]["chosen"], ce.extra["selection"]["rows_chosen"]) == (
        "search", "start", "search")
    assert (ce.extra["selection"]["fixed"], ce.extra["selection"]["broken"]) == (by_rows["fixed"], by_rows["broken"])
    off = run(_Scored(p=0.6), mock_client(sentiment_rule), task, seed=13, progress=False, start=start, guard=False)
    assert off.extra["selection"]["chosen"] == "search" and off.extra["selection"]["rows_chosen"] == "search"
    # labels only: the default falls back to the row count; "ce" is refused before anything is sent
    oracle = run(_Oracle(), mock_client(sentiment_rule), task, seed=13, progress=False, start=start)
    assert "selection_ce" not in oracle.extra and oracle.extra["selection"]["rule"] == ROWS_RULE
    with pytest.raises(ConfigError, match="guard"):  # labels only: refused before anything is sent
        run(_Oracle(), mock_client(sentiment_rule), task, seed=13, progress=False, start=start, guard="ce")
    with pytest.raises(ConfigError, match="guard"):
        run(_Scored(), mock_client(sentiment_rule), task, seed=13, progress=False, start=start, guard="yes")


class _Oracle(Method):
    """A 'search' whose prompt is right on every row (or on none)."""

    name = "test-oracle"

    def __init__(self, *, seed: int = 13, right: bool = True) -> None:
        self.seed, self.right = seed, right

    def fit(self, client, task):  # type: ignore[no-untyped-def]
        self.best_prompt_ = "oracle"
        return self

    def predict(self, client, examples):  # type: ignore[no-untyped-def]
        return np.array([ex.label if self.right else 1 - ex.label for ex in examples])

    def get_config(self):  # type: ignore[no-untyped-def]
        return {"seed": self.seed, "right": self.right}


def test_harness_reports_start_and_gain_and_keeps_a_better_start(mock_client) -> None:  # type: ignore[no-untyped-def]
    task = load_task("sample")
    start = start_point(task, template_index=1)
    good = run(_Oracle(), mock_client(sentiment_rule), task, seed=13, progress=False, start=start)
    assert good.config["start"]["template"] == REVIEW and good.config["right"] is True
    assert good.extra["selection"]["chosen"] == "search" and good.prompt == "oracle" and good.eval["accuracy"] == 1.0
    assert good.extra["gain"]["eval_accuracy"] == 1.0 - good.extra["start"]["eval"]["accuracy"]
    bad = run(_Oracle(right=False), mock_client(sentiment_rule), task, seed=13, progress=False, start=start)
    assert bad.extra["selection"]["chosen"] == "start" and bad.prompt["template"] == REVIEW
    assert bad.eval == bad.extra["start"]["eval"] and bad.extra["search"]["eval"]["accuracy"] == 0.0
    assert bad.extra["gain"]["eval_accuracy"] == 0.0
    off = run(_Oracle(right=False), mock_client(sentiment_rule), task, seed=13, progress=False, start=start,
              guard=False)
    assert off.extra["selection"]["chosen"] == "search" and off.eval["accuracy"] == 0.0


@pytest.fixture()
def fake_tune(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from bbox_lfm.commands import tune as tune_cmd

    spec = importlib.util.spec_from_file_location("start_fakes", Path(__file__).parents[1] / "methods" / "_fakes.py")
    fakes = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(fakes)  # type: ignore[union-attr]
    fake_client = fakes.fake_client

    @contextlib.contextmanager
    def fake_open(args, budget=None):  # type: ignore[no-untyped-def]
        yield fake_client()

    monkeypatch.setattr(tune_cmd, "open_client", fake_open)


def test_tune_records_its_start_and_the_start_scores(tmp_path: Path, fake_tune: None) -> None:
    out = tmp_path / "r.json"
    argv = ["tune", "bbt", "--task", "sample", "--template-index", "1", "--seed", "13", "--budget", "8",
            "--set", "n_prompt_tokens=2", "--set", "intrinsic_dim=4", "--set", "popsize=4", "--eval-limit", "6",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    r = read_result(out)
    assert r["config"]["start"] == {"template": REVIEW, "label_words": [" negative", " positive"],
                                    "origin": "template_index 1", "template_index": 1}
    assert r["extra"]["start"]["eval"]["n"] == 6 and r["extra"]["start"]["dev"]["n"] == 16
    assert r["extra"]["selection"]["chosen"] in ("start", "search") and "gain" in r["extra"]
    assert r["extra"]["selection"]["rule"] == "guard 'ce': " + CE_RULE  # BBT leaves label scores: ce decides
    assert main([*argv, "--guard", "rows"]) == 0 and read_result(out)["extra"]["selection"]["rule"] == ROWS_RULE
    assert main([*argv, "--no-guard"]) == 0 and read_result(out)["extra"]["selection"]["chosen"] == "search"
    bbt = tmp_path / "bbt.json"
    write_result(bbt, {**r, "prompt": {"shape": [2, 8], "dtype": "float32", "data": ""}})
    assert main([*argv[:4], "--prompt-from", str(bbt), *argv[6:]]) == 2  # tune starts from text only


def test_distill_starts_from_the_best_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bbox_lfm.commands import distill as distill_cmd
    from bbox_lfm.tasks import Task

    seen: list[Task] = []

    class Stop(Exception):
        pass

    def fake_start(args, task, announce=True):  # type: ignore[no-untyped-def]
        s = start_point(task, template=args.template, label_words=args.label_words,
                        template_index=args.template_index, prompt_from=args.prompt_from)
        seen.append(s.apply(task))
        raise Stop

    monkeypatch.setattr(distill_cmd, "start_from_args", fake_start)
    monkeypatch.setattr(distill_cmd, "task_from_args", lambda args: load_task("sample").__class__(
        **{**{f: getattr(load_task("sample"), f) for f in ("name", "labels", "label_words", "template", "templates",
                                                          "loaders", "shot")}, "best_template": 1}))
    for extra in ([], ["--template-index", "0"]):
        with pytest.raises(Stop):
            main(["distill", "--task", "sample", "--budget-sequences", "4", "--out", str(tmp_path), *extra])
    assert [t.template for t in seen] == [REVIEW, "{text} It was"]
