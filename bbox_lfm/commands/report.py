"""``bbox-lfm report``: a Markdown table of runs and a PNG of dev accuracy vs calls.

    bbox-lfm report results/*.json --out-md table.md --out-png curve.png

Each file is one results JSON (:mod:`bbox_lfm.results`) or a bundle ``{"kind": "bundle",
"runs": [...]}`` such as ``benchmarks/results/bbt.json``, read through the results format's
models; speed-benchmark files (``"kind": "speed"``) are skipped with a note. A run's name in the
tables is ``extra.label`` when the run has one (e.g. ``zero-shot (template 2)``), else its method.

A leaderboard bundle (``"benchmark": "leaderboard"``, written by ``benchmarks/leaderboard.py``)
gets the leaderboard instead: one row per task, method and setting with the start prompt's eval
accuracy, the method's mean ± std over seeds, the gain, how often the start was kept, calls and
wall time (:func:`leaderboard_table`), and a figure of dev accuracy against calls with a panel
per task, every method on one axis, each curve starting at its start prompt's dev accuracy at 0
calls (:func:`plot_leaderboard`).

Seeds are averaged only within one setting (:func:`run_setting`: the search budget and the
number of eval rows scored): a 40-call run on 200 rows and a 600-call run on the full split of
the same method are two rows, never one mean.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results import read_results

__all__ = ["ce_guard_eval", "leaderboard_table", "load_runs", "mean_std", "plot_curves", "plot_leaderboard", "run_label",
           "run_setting", "runs_table", "search_calls", "seed_band", "summary_table"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("report", help="Markdown table of results files and a PNG of dev accuracy vs calls")
    p.add_argument("files", nargs="+", help="results JSON files (single runs or {\"runs\": [...]} bundles)")
    p.add_argument("--out-md", default=None, help="write the Markdown here (it is always printed)")
    p.add_argument("--out-png", default=None, help="write the plot of dev accuracy vs calls here")
    p.set_defaults(func=run)


def _is_board(paths: Iterable[str | Path]) -> bool:
    """Whether any of ``paths`` is a leaderboard bundle."""
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("benchmark") == "leaderboard":
            return True
    return False


def load_runs(paths: Iterable[str | Path], *, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every run in ``paths``, bundles expanded, each checked against the results format; the
    paths of speed-benchmark files (no runs) are appended to ``skipped``."""
    runs: list[dict[str, Any]] = []
    for path in paths:
        kind, found = read_results(path)
        if kind == "speed" and skipped is not None:
            skipped.append(str(path))
        runs += found
    return runs


def run_label(r: dict[str, Any]) -> str:
    """A run's name in the tables: ``extra.label``, else ``label``, else its method."""
    return str((r.get("extra") or {}).get("label") or r.get("label") or r["method"])


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}"


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run."""
    head = ("| task | method | seed | model | dev acc | eval acc | eval F1 | eval n | search calls | search requests "
            "| eval calls | wall s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for r in sorted(runs, key=lambda r: (r["task"], run_label(r), str(r.get("seed")))):
        dev, ev = r.get("dev") or {}, r["eval"]
        rows.append(f"| {r['task']} | {run_label(r)} | {r.get('seed')} | {r.get('model', '')} | "
                    f"{_pct(dev.get('accuracy'))} | {_pct(ev.get('accuracy'))} | {_pct(ev.get('f1'))} | "
                    f"{ev.get('n', '')} | {(r.get('budget_spent') or {}).get('calls', '')} | "
                    f"{(r.get('budget_spent') or {}).get('requests', '-')} | "
                    f"{(r.get('eval_spent') or {}).get('calls', '')} | {_seconds(r.get('wall_s'))} |")
    return "\n".join([head, *rows])


def _seconds(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f}"


def mean_std(xs: list[float]) -> str:
    """Mean ± sample std in percent; one value alone (a single seed has no spread to show)."""
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * statistics.fmean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def run_setting(r: dict[str, Any]) -> tuple[int | None, int]:
    """``(budget, eval n)`` of a run: the search budget it was given (``config.budget``; None for a
    baseline, which has none) and the eval rows it was scored on. Runs average over seeds only
    when both match."""
    budget = (r.get("config") or {}).get("budget")
    return (None if budget is None else int(budget)), int(r["eval"].get("n") or 0)


_Group = tuple[str, str, int | None, int]


def _groups(runs: Sequence[dict[str, Any]]) -> dict[_Group, list[dict[str, Any]]]:
    """Runs by (task, label, budget, eval n): the seeds of one setting."""
    groups: dict[_Group, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["task"], run_label(r), *run_setting(r))].append(r)
    return groups


def _group_order(key: _Group) -> tuple[str, str, int, int]:
    task, label, budget, n = key
    return task, label, -1 if budget is None else budget, n


def summary_table(runs: Sequence[dict[str, Any]]) -> str:
    """Eval accuracy and F1 as mean ± std over seeds, one row per (task, method), one column
    group per metric; ``eval n`` says how many eval rows each run scored."""
    groups = _groups(runs)
    head = ("| task | method | seeds | eval n | eval acc (mean ± std) | eval F1 (mean ± std) | search calls |\n"
            "| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for (task, label, _, _), rs in sorted(groups.items(), key=lambda kv: _group_order(kv[0])):
        accs = [float(r["eval"]["accuracy"]) for r in rs if r["eval"].get("accuracy") is not None]
        f1s = [float(r["eval"]["f1"]) for r in rs if r["eval"].get("f1") is not None]
        ns = sorted({int(r["eval"].get("n") or 0) for r in rs})
        calls = sorted({int((r.get("budget_spent") or {}).get("calls") or 0) for r in rs})
        rows.append(f"| {task} | {label} | {len(rs)} | {'/'.join(map(str, ns))} | {mean_std(accs)} | "
                    f"{mean_std(f1s)} | {'/'.join(map(str, calls))} |")
    return "\n".join([head, *rows])


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def leaderboard_table(runs: Sequence[dict[str, Any]]) -> str:
    """Task x method x setting: eval accuracy mean ± std over the seeds of one budget and one eval
    size (:func:`run_setting`) beside the start prompt's, the mean gain over it, the searched
    prompt's own eval accuracy (whether kept or not), the seeds where the start was kept, what the
    gold-label log-probability guard would report (:func:`ce_guard_eval`; "k of n" where only some
    seeds recorded it), search calls and wall seconds per seed (:func:`wall_cell`)."""
    groups = _groups(runs)
    head = ("| task | method | budget | seeds | eval n | start eval acc | eval acc (mean ± std) | gain (points) "
            "| searched prompt eval acc | start kept | ce guard eval acc | search calls | wall s / seed |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for (task, label, budget, n), rs in sorted(groups.items(),
                                               key=lambda kv: (kv[0][0], _order(kv[1][0]), _group_order(kv[0]))):
        extras = [r.get("extra") or {} for r in rs]
        accs = [float(r["eval"]["accuracy"]) for r in rs if r["eval"].get("accuracy") is not None]
        starts = [float(x["start"]["eval"]["accuracy"]) for x in extras if "start" in x]
        gains = [float(x["gain"]["eval_accuracy"]) for x in extras if "gain" in x]
        found = [float(x["search"]["eval"]["accuracy"]) for x in extras
                 if ((x.get("search") or {}).get("eval") or {}).get("accuracy") is not None]
        kept = [x["selection"]["chosen"] == "start" for x in extras if "selection" in x]
        ce = [a for a in map(ce_guard_eval, rs) if a is not None]
        ce_cell = "-" if not ce else mean_std(ce) + ("" if len(ce) == len(rs) else f" ({len(ce)} of {len(rs)})")
        calls = _mean([search_calls(r) for r in rs])
        seeds = ",".join(str(r.get("seed")) for r in sorted(rs, key=lambda r: str(r.get("seed"))))
        gain = _mean(gains)
        rows.append(f"| {task} | {label} | {'-' if budget is None else f'{budget:,}'} | {seeds} | {n:,} | "
                    f"{_pct(_mean(starts))} | {mean_std(accs)} | {'-' if gain is None else f'{100 * gain:+.1f}'} | "
                    f"{mean_std(found) if found else '-'} | {f'{sum(kept)}/{len(kept)}' if kept else '-'} | {ce_cell} | "
                    f"{0 if calls is None else calls:,.0f} | "
                    f"{wall_cell(rs)} |")
    return "\n".join([head, *rows])


def replayed(r: dict[str, Any]) -> bool:
    """Whether part of a run's work was answered from the cache, so that its wall time is less
    than a fresh run's: for a search, any of its calls (an interrupted run resumed); for a
    baseline, which has no search, any of its eval queries."""
    spent = r.get("budget_spent") if "start" in (r.get("extra") or {}) else r.get("eval_spent")
    return bool((spent or {}).get("cache_hits"))


def wall_cell(rs: Sequence[dict[str, Any]]) -> str:
    """Mean wall seconds per seed, marked ``≥`` when some seed replayed part of its work from the
    cache (:func:`replayed`): a fresh run takes at least that long."""
    mean = _mean([float(r["wall_s"]) for r in rs if r.get("wall_s") is not None]) or 0
    return ("≥" if any(map(replayed, rs)) else "") + f"{mean:,.0f}"


def ce_guard_eval(r: dict[str, Any]) -> float | None:
    """The eval accuracy a run reports under the gold-label log-probability guard
    (``extra.selection_ce``, recorded whatever guard decided): the searched prompt's when that
    rule chose it, else the start's. None for a run that did not record the rule."""
    x = r.get("extra") or {}
    chosen = (x.get("selection_ce") or {}).get("chosen")
    if chosen not in ("search", "start"):
        return None
    acc = ((x.get(chosen) or {}).get("eval") or {}).get("accuracy")
    return None if acc is None else float(acc)


def search_calls(r: dict[str, Any]) -> float:
    """Search calls as the method counts them (its curve's last point: cache hits included)."""
    curve = r.get("curve") or []
    if curve:
        return float(max(p["calls"] for p in curve))
    spent = r.get("budget_spent") or {}
    return float(spent.get("calls", 0)) + float(spent.get("cache_hits", 0))


def _order(r: dict[str, Any]) -> int:
    """Baselines first, then prompt searches."""
    return 0 if "start" not in (r.get("extra") or {}) else 1


def seed_band(curves: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float, float, float]]:
    """``(calls, mean, low, high)`` over seeds at every call count any seed's curve has. Each curve
    is ``(calls, value)`` points; between its points a curve holds its last value (before its
    first point, its first value), so seeds logged at different calls still average point by point."""
    curves = [sorted(c) for c in curves if c]
    out: list[tuple[float, float, float, float]] = []
    for x in sorted({cx for c in curves for cx, _ in c}):
        ys = [next((y for cx, y in reversed(c) if cx <= x), c[0][1]) for c in curves]
        out.append((x, sum(ys) / len(ys), min(ys), max(ys)))
    return out


def plot_leaderboard(runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Dev accuracy against calls, one panel per task, one colour per method: the mean over seeds
    (each seed's curve starting from its start prompt's dev accuracy at 0 calls; the seeds' dev
    splits differ by up to 20 points, so a shaded range would hide the means); baselines as
    dashed levels at their mean dev accuracy over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    cols = min(2, max(1, len(tasks)))  # two panels a row, so four tasks stay readable
    rows = -(-max(1, len(tasks)) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False)
    axes = list(grid.flat)
    for spare in axes[len(tasks):]:
        spare.set_visible(False)
    searches = {run_label(r) for r in runs if "start" in (r.get("extra") or {})}
    labels = sorted({run_label(r) for r in runs}, key=lambda lb: (lb not in searches, lb))
    colours = {lb: f"C{i % 10}" for i, lb in enumerate(labels)}
    for ax, task in zip(axes, tasks):
        by_label: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if r["task"] == task:
                by_label.setdefault(run_label(r), []).append(r)
        for lb in sorted(by_label, key=labels.index):
            curves, levels = [], []
            for r in by_label[lb]:
                extra = r.get("extra") or {}
                curve = [(float(p["calls"]), 100 * float(p["dev_accuracy"])) for p in r.get("curve") or []]
                if curve and "start" in extra and extra["start"]["dev"].get("accuracy") is not None:
                    curve = [(0.0, 100 * float(extra["start"]["dev"]["accuracy"])), *curve]
                if len(curve) > 1:
                    curves.append(curve)
                elif r.get("dev", {}).get("accuracy") is not None:
                    levels.append(100 * float(r["dev"]["accuracy"]))
            seeds = f" ({len(by_label[lb])} seed{'s' if len(by_label[lb]) != 1 else ''})"
            if curves:
                band = seed_band(curves)
                xs = [b[0] for b in band]
                ax.plot(xs, [b[1] for b in band], color=colours[lb], lw=1.5, drawstyle="steps-post", label=lb + seeds)
            elif levels:
                ax.axhline(sum(levels) / len(levels), ls="--", lw=0.8, color=colours[lb], label=lb + seeds)
        ax.set_title(f"{task}: mean over seeds")
        ax.set_xlabel("search calls")
        ax.set_ylabel("dev accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Dev accuracy against calls, one line per run that has a curve (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for r in sorted(runs, key=lambda r: (r["task"], run_label(r), str(r.get("seed")))):
        curve = r.get("curve") or []
        if not curve:
            continue
        ax.plot([p["calls"] for p in curve], [100 * p["dev_accuracy"] for p in curve], marker=".",
                label=f"{r['task']} {run_label(r)} s{r.get('seed')}")
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no run has a curve", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("calls")
    ax.set_ylabel("dev accuracy (%)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def run(args: argparse.Namespace) -> int:
    """Print (and write) the tables; draw the plot."""
    skipped: list[str] = []
    runs = load_runs(args.files, skipped=skipped)
    for path in skipped:
        print(f"note: {path} is a speed benchmark's file (no method runs); skipped", file=sys.stderr)
    if not runs:
        raise ConfigError(f"the files must hold at least one method run; got {len(args.files)} file(s) without any")
    board = _is_board(args.files)
    first = f"## Leaderboard\n\n{leaderboard_table(runs)}" if board else f"## Summary\n\n{summary_table(runs)}"
    md = f"{first}\n\n## Runs\n\n{runs_table(runs)}\n"
    sys.stdout.write(md)
    if args.out_md:
        Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_md).write_text(md, encoding="utf-8")
    if args.out_png:
        (plot_leaderboard if board else plot_curves)(runs, args.out_png)
    return 0
