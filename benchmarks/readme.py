"""The README's results section, generated from the benchmark result files.

    python benchmarks/readme.py            # rewrite README.md between the results markers
    python benchmarks/readme.py --check    # exit 1 if README.md is out of date (a test runs this)

Everything between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md comes
from ``benchmarks/results/*.json``: the leaderboard (``leaderboard.json`` through
:func:`bbox_lfm.commands.report.leaderboard_table`, one row per task, method, budget and eval
size: seeds of different settings are never averaged), each method's own benchmark
(``baselines.json``, ``bbt.json``, ``bdpl.json``, ``promptboosting.json``, ``rlprompt.json``,
``rlprompt_long.json``), contextual calibration (``calibration.json``), distillation
(``distill.json``) and BiDf-MKD (``bidf_mkd.json``). The prose around the tables is fixed; every
figure is read from a file.

This is a benchmark script rather than ``bbox-lfm report --readme``: ``report`` reads any results
files through the results format, for any user's runs; this section knows which runs of this
repository's benchmark files make which README row (labels, variants, the distillation and
BiDf-MKD summaries), and those files ship with the benchmarks, not with the wheel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bbox_lfm.commands.report import leaderboard_table, mean_std, run_label, run_setting, search_calls
from bbox_lfm.errors import ConfigError

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
COMMAND = "python benchmarks/readme.py"


@dataclass(frozen=True)
class Row:
    """One row of the per-benchmark table: the runs of ``file`` on ``task`` named ``label``."""

    task: str
    what: str
    file: str
    label: str


#: the per-benchmark rows, in the README's order; ``what`` is fixed prose, figures come from the runs
ROWS = [
    Row("sst2", "zero-shot, `{template}`", "baselines.json", "zero-shot (template 1)"),
    Row("sst2", "zero-shot, `{template}` (best manual template)", "baselines.json", "zero-shot (template 2)"),
    Row("sst2", "ICL (k = 4)", "baselines.json", "icl (k=4)"),
    Row("sst2", "BBT, from `{text} It was`", "bbt.json", "bbt"),
    Row("sst2", "BBTv2, from `{text} It was`", "bbt.json", "bbtv2"),
    Row("sst2", "BDPL, from `{template}`", "bdpl.json", "bdpl (exact)"),
    Row("sst2", "BDPL through chat, `top_logprobs` 20, from `{template}`", "bdpl.json", "bdpl (chat-top20)"),
    Row("sst2", "PromptBoosting, full vocabulary", "promptboosting.json", "promptboosting"),
    Row("sst2", "PromptBoosting through chat, `top_logprobs` 20", "promptboosting.json",
        "promptboosting (sst2-top20)"),
    Row("sst2", "RLPrompt, from `{template}` (the template with an empty prompt on the same rows: {empty}; the "
                "learned prompts before the guard: {searched})", "rlprompt.json", "rlprompt"),
    Row("sst2", "RLPrompt, one longer run, from `{template}` (the template with an empty prompt: {empty}; the "
                "learned prompt before the guard: {searched})", "rlprompt_long.json", "rlprompt"),
    Row("mr", "zero-shot, `{template}` (best manual template)", "baselines.json", "zero-shot (template 2)"),
    Row("mr", "PromptBoosting, full vocabulary", "promptboosting.json", "promptboosting"),
    Row("agnews", "zero-shot, `{template}` (best manual template)", "baselines.json", "zero-shot (template 2)"),
    Row("agnews", "best-of-4", "baselines.json", "best-of-4"),
    Row("rte", "zero-shot, `{template}`", "baselines.json", "zero-shot (template 1)"),
]

#: BiDf-MKD variants (keys of bidf_mkd.json's summary) and their names, in the table's order
BIDF_VARIANTS = [
    ("random", "random meta-model"),
    ("bidf-mkd", "BiDf-MKD (zero-order, q = {q})"),
    ("no-boundary", "no boundary query set"),
    ("no-memory", "no memory replay"),
    ("true-gradient", "true-gradient inversion (APIs opened up)"),
    ("oracle-maml", "MAML on the real images (oracle)"),
]


def _load(results: Path, name: str) -> dict[str, Any]:
    path = results / name
    if not path.is_file():
        raise ConfigError(f"results file {str(path)!r} must exist for the README's results section; not found")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"results file {str(path)!r} must hold a JSON object; got {type(data).__name__}")
    return data


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _code(template: str) -> str:
    """A template as inline code in a table cell: its newlines shown as ``\\n``, pipes escaped."""
    return template.replace("\n", "\\n").replace("|", "\\|")


def _latest_per_seed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per seed (the last the file lists), so a rerun never counts twice."""
    return list({r.get("seed"): r for r in runs}.values())


def by_setting(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The runs split by (budget, eval n), one run per seed in each: what one table row may average."""
    groups: dict[tuple[int | None, int], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[run_setting(r)].append(r)
    return [_latest_per_seed(groups[k]) for k in sorted(groups, key=lambda k: (k[0] or 0, k[1]))]


def _what(row: Row, doc: dict[str, Any], rs: list[dict[str, Any]]) -> str:
    fields: dict[str, str] = {}
    if "{template}" in row.what:
        # where each benchmark records it: the run's config, its extra, or the file's empty-prompt score
        config, extra = rs[0].get("config") or {}, rs[0].get("extra") or {}
        empty = (doc.get("template_empty_prompt") or {}).get(row.task) or {}
        recorded = extra.get("template")
        template = (config.get("template") or (recorded.get("template") if isinstance(recorded, dict) else recorded)
                    or empty.get("template"))
        if not template:
            raise ConfigError(f"{row.file}: the {row.label!r} runs on {row.task} must record their template")
        fields["template"] = _code(str(template))
    if "{empty}" in row.what:
        empty = (doc.get("template_empty_prompt") or {}).get(row.task) or {}
        if empty.get("accuracy") is None or empty.get("n") != rs[0]["eval"].get("n"):
            raise ConfigError(f"{row.file}: template_empty_prompt.{row.task} must be scored on the runs' eval rows")
        fields["empty"] = _pct(float(empty["accuracy"]))
    if "{searched}" in row.what:
        found = [((r.get("extra") or {}).get("search") or {}).get("eval", {}).get("accuracy") for r in rs]
        if any(a is None for a in found):
            raise ConfigError(f"{row.file}: every {row.label!r} run on {row.task} must record extra.search.eval")
        fields["searched"] = mean_std([float(a) for a in found])
    what = row.what
    for key, value in fields.items():
        what = what.replace("{" + key + "}", value)
    return what


def method_rows(results: Path) -> str:
    """The per-benchmark table: one row per :data:`ROWS` entry and setting (budget, eval n)."""
    head = ("| task | method | seeds | eval n | search calls | eval acc |\n"
            "| --- | --- | --- | --- | --- | --- |")
    lines = [head]
    docs: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        doc = docs.setdefault(row.file, _load(results, row.file))
        mine = [r for r in doc.get("runs", []) if r.get("task") == row.task and run_label(r) == row.label]
        if not mine:
            raise ConfigError(f"{row.file} must hold runs labelled {row.label!r} on {row.task} for the README; "
                              f"found none")
        for rs in by_setting(mine):
            accs = [float(r["eval"]["accuracy"]) for r in rs]
            seeds = ",".join(str(r.get("seed")) for r in sorted(rs, key=lambda r: int(r.get("seed") or 0)))
            calls = statistics.fmean(search_calls(r) for r in rs)
            lines.append(f"| {row.task} | {_what(row, doc, rs)} | {seeds} | {rs[0]['eval']['n']:,} | {calls:,.0f} | "
                         f"{mean_std(accs)} |")
    return "\n".join(lines)


def leaderboard_part(doc: dict[str, Any]) -> str:
    """The leaderboard: what it is, what is still missing or set apart, and its table."""
    runs = doc.get("runs") or []
    if not runs:
        raise ConfigError("leaderboard.json must hold at least one run for the README; got none")
    starts = "; ".join(f"{task}: `{_code(s['template'])}`" for task, s in sorted((doc.get("starts") or {}).items()))
    text = ("`benchmarks/leaderboard.py` runs every registered prompt method from the task's best manual "
            f"template ({starts}) beside the baselines on that template. A search keeps its start unless it "
            "clearly beats it on the dev rows (\"start kept\"); \"searched prompt eval acc\" is what the search "
            "found, kept or not; \"ce guard eval acc\" is what the finer guard on the dev rows' gold-label "
            "log-probability would report (both rules are recorded in every run). A row averages only the seeds "
            "of one budget and one eval size. A wall time marked ≥ is a lower bound: some seed answered part of "
            "its search (a baseline: of its eval rows) from the cache, as a resumed run does.")
    missing, earlier = doc.get("missing") or [], doc.get("earlier") or []
    if missing:
        text += f" Still to run: {len(missing):,} runs (the file's `missing`)."
    if earlier:
        text += (f" {len(earlier):,} runs of an earlier budget or eval size are set apart in the file's `earlier` "
                 "and not shown.")
    return f"{text}\n\n{leaderboard_table(runs)}"


def calibration_line(doc: dict[str, Any]) -> str:
    """Zero-shot against calibrated zero-shot, per task, on the same rows."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in doc.get("runs") or []:
        acc[(r["task"], run_label(r))] = r["eval"]
    parts = []
    for task in sorted({t for t, _ in acc}):
        zero, cal = acc.get((task, "zero-shot")), acc.get((task, "calibrated"))
        if zero is None or cal is None or zero.get("n") != cal.get("n"):
            continue
        parts.append(f"{task} {_pct(zero['accuracy'])} -> {_pct(cal['accuracy'])} ({zero['n']:,} rows)")
    if not parts:
        raise ConfigError("calibration.json must hold a zero-shot and a calibrated run on the same rows of a task")
    return ("Contextual calibration (`calibration.json`, the best manual template, zero-shot -> calibrated): "
            + ", ".join(parts) + ".")


def distill_part(doc: dict[str, Any]) -> str:
    """The distillation sentence: the fine-tuned student over seeds, the speed ratio."""
    students = [r for r in doc.get("runs") or []
                if r.get("student") == "minilm-ft" and r.get("selection") == "random"
                and r.get("transfer") == "unlabeled" and r.get("pool_splits") == ["train", "test"]
                and (r.get("config") or {}).get("budget") == 3000 and (r.get("student_config") or {}).get("epochs") == 3]
    students = _latest_per_seed(students)
    if not students:
        raise ConfigError("distill.json must hold minilm-ft runs (random, unlabeled, train+test pool, 3,000 "
                          "sequences, 3 epochs) for the README")
    teacher, speed = doc["teacher"], doc["speed"]
    agree = [float(r["eval"]["agreement"]) for r in students]
    seeds = ", ".join(str(r.get("seed")) for r in sorted(students, key=lambda r: int(r.get("seed") or 0)))
    return (f"Distillation ({doc['task']}, teacher `{_code(teacher['template'])}` at "
            f"{_pct(teacher['eval']['accuracy'])}): a fine-tuned MiniLM student trained on "
            f"{students[0]['config']['budget']:,} teacher answers (texts drawn at random from the train and test "
            f"splits) agrees with the teacher on {mean_std(agree)} % of the {students[0]['eval']['n']:,} eval rows "
            f"(seeds {seeds}); the `{speed['student']}` student labels a text {speed['speedup']:.1f}x faster than "
            f"the teacher ({speed['n']:,} texts).")


def _classes(xs: list[int]) -> str:
    return f"{xs[0]}-{xs[-1]}" if xs == list(range(xs[0], xs[-1] + 1)) else ", ".join(map(str, xs))


def bidf_part(doc: dict[str, Any]) -> str:
    """BiDf-MKD: the seed-0 table with 95 % intervals, then the means over seeds."""
    zoo, summary = doc["zoo"], doc["summary"]
    table = summary["seed 0"]["table"]
    q = next(r["config"]["q"] for r in doc["runs"] if r.get("seed") == 0 and r["extra"].get("variant") == "bidf-mkd")
    way = zoo["way"]
    lines = [_wrap(f"BiDf-MKD, data-free meta-learning from a zoo of {zoo['apis']} digits classifier APIs "
                   f"(classes {_classes(zoo['meta_train_classes'])}). Meta-test on the held-out digits "
                   f"{_classes(zoo['meta_test_classes'])}, {doc['settings']['episodes']:,} episodes each, mean "
                   "accuracy with 95 % intervals, seed 0:"), "",
             f"| variant | API calls | {way}-way 1-shot | {way}-way 5-shot |", "| --- | --- | --- | --- |"]
    for key, name in BIDF_VARIANTS:
        v = table[key]
        lines.append(f"| {name.format(q=q)} | {v['queries']:,} | {v['1-shot']} | {v['5-shot']} |")
    across = next(v for k, v in summary.items() if k.startswith("across seeds"))
    seeds = ", ".join(map(str, across["seeds"]))

    def both(key: str) -> str:
        return f"{across[key]['1-shot']} / {across[key]['5-shot']}"

    wins = sum(all(b > r for b, r in zip(across["bidf-mkd"][f"{s} per seed"], across["random"][f"{s} per seed"]))
               for s in ("1-shot", "5-shot"))
    beats = "on every seed in both settings" if wins == 2 else "not on every seed"
    lines += ["", _wrap(f"Over seeds {seeds} (1-shot / 5-shot, mean ± std of the seed means), BiDf-MKD reaches "
                        f"{both('bidf-mkd')} against the random meta-model's {both('random')}, ahead of it "
                        f"{beats}; the true-gradient inversion reaches {both('true-gradient')} and MAML on the "
                        f"real images {both('oracle-maml')}.")]
    return "\n".join(lines)


def _wrap(text: str) -> str:
    """A paragraph wrapped at 100 columns, as the rest of the README."""
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def render(results: Path) -> str:
    """The text between the markers, from the JSON files in ``results``."""
    board = _load(results, "leaderboard.json")
    leaderboard = leaderboard_part(board)
    prose, table = leaderboard.split("\n\n", 1)
    parts = [
        f"<!-- generated by `{COMMAND}` from benchmarks/results/*.json: edit those, not this text -->",
        _wrap(f"{board.get('model') or 'The model'} on the local server; eval accuracy in %, mean ± sample std "
              "over the seeds listed (one seed: its value). How each figure was measured, on which machine, and "
              "what limits it: [docs/benchmarks.md](docs/benchmarks.md)."),
        "### Leaderboard: every method from the best manual template",
        _wrap(prose),
        table,
        ("![Leaderboard: dev accuracy against search calls, mean over seeds, a panel per task]"
         "(benchmarks/results/leaderboard.png)"),
        "### Each method's own benchmark",
        _wrap("From each method's own script (`benchmarks/baselines.py`, `bbt.py`, `bdpl.py`, "
              "`promptboosting.py`, `rlprompt.py`); search calls as the method counts them, cache hits included."),
        method_rows(results),
        _wrap(calibration_line(_load(results, "calibration.json"))),
        "![BBT and BBTv2: dev accuracy against search calls](benchmarks/results/bbt.png)",
        "![RLPrompt: mean reward and dev accuracy against search calls](benchmarks/results/rlprompt.png)",
        "### Distillation and data-free meta-learning",
        _wrap(distill_part(_load(results, "distill.json"))),
        bidf_part(_load(results, "bidf_mkd.json")),
        "Notes: [docs/benchmarks.md](docs/benchmarks.md).",
    ]
    return "\n" + "\n\n".join(parts) + "\n"


def splice(readme: str, section: str) -> str:
    """``readme`` with the text between the results markers replaced by ``section``."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ConfigError(f"README must hold {BEGIN} once, then {END} once; got {readme.count(BEGIN)} begin and "
                          f"{readme.count(END)} end markers")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}{section}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with ``--check``, compare) the README's results section."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", default=str(HERE.parent / "README.md"))
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--check", action="store_true", help="exit 1 (and say what to run) if the README differs")
    args = p.parse_args(argv)
    path = Path(args.readme)
    old = path.read_text(encoding="utf-8")
    new = splice(old, render(Path(args.results)))
    if args.check:
        if new != old:
            print(f"{path}: the results section is out of date with {args.results}/*.json; run `{COMMAND}`",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
        print(f"{path}: results section rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
