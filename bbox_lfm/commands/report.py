"""``bbox-lfm report``: a Markdown table of runs and a PNG of dev accuracy vs calls.

    bbox-lfm report results/*.json --out-md table.md --out-png curve.png

Each file is one results JSON (:mod:`bbox_lfm.results`) or a bundle ``{"kind": "bundle",
"runs": [...]}`` such as ``benchmarks/results/bbt.json``, read through the results format's
models; speed-benchmark files (``"kind": "speed"``) are skipped with a note. A run's name in the
tables is ``extra.label`` when the run has one (e.g. ``zero-shot (template 2)``), else its method.

A leaderboard bundle (``"benchmark": "leaderboard"``, written by ``benchmarks/leaderboard.py``)
gets the leaderboard instead: one row per task and method with the start prompt's eval
accuracy, the method's mean ± std over seeds, the gain, how often the start was kept, calls and
wall time (:func:`leaderboard_table`), and a figure of dev accuracy against calls with a panel
per task, every method on one axis, each curve starting at its start prompt's dev accuracy at 0
calls (:func:`plot_leaderboard`).
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

__all__ = ["leaderboard_table", "load_runs", "plot_curves", "plot_leaderboard", "runs_table", "summary_table"]


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


def _label(r: dict[str, Any]) -> str:
    return str((r.get("extra") or {}).get("label") or r.get("label") or r["method"])


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}"


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run."""
    head = ("| task | method | seed | model | dev acc | eval acc | eval F1 | eval n | search calls | search requests "
            "| eval calls | wall s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for r in sorted(runs, key=lambda r: (r["task"], _label(r), str(r.get("seed")))):
        dev, ev = r.get("dev") or {}, r["eval"]
        rows.append(f"| {r['task']} | {_label(r)} | {r.get('seed')} | {r.get('model', '')} | "
                    f"{_pct(dev.get('accuracy'))} | {_pct(ev.get('accuracy'))} | {_pct(ev.get('f1'))} | "
                    f"{ev.get('n', '')} | {(r.get('budget_spent') or {}).get('calls', '')} | "
                    f"{(r.get('budget_spent') or {}).get('requests', '-')} | "
                    f"{(r.get('eval_spent') or {}).get('calls', '')} | {_seconds(r.get('wall_s'))} |")
    return "\n".join([head, *rows])


def _seconds(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f}"


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.fmean(xs):.1f} ± {100 * sd:.1f}"


def _by_task_and_label(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["task"], _label(r))].append(r)
    return groups


def summary_table(runs: Sequence[dict[str, Any]]) -> str:
    """Eval accuracy and F1 as mean ± std over seeds, one row per (task, method), one column
    group per metric; ``eval n`` says how many eval rows each run scored."""
    groups = _by_task_and_label(runs)
    head = ("| task | method | seeds | eval n | eval acc (mean ± std) | eval F1 (mean ± std) | search calls |\n"
            "| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for (task, label), rs in sorted(groups.items()):
        accs = [float(r["eval"]["accuracy"]) for r in rs if r["eval"].get("accuracy") is not None]
        f1s = [float(r["eval"]["f1"]) for r in rs if r["eval"].get("f1") is not None]
        ns = sorted({int(r["eval"].get("n") or 0) for r in rs})
        calls = sorted({int((r.get("budget_spent") or {}).get("calls") or 0) for r in rs})
        rows.append(f"| {task} | {label} | {len(rs)} | {'/'.join(map(str, ns))} | {_mean_std(accs)} | "
                    f"{_mean_std(f1s)} | {'/'.join(map(str, calls))} |")
    return "\n".join([head, *rows])


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def leaderboard_table(runs: Sequence[dict[str, Any]]) -> str:
    """Task x method: eval accuracy mean ± std over seeds beside the start prompt's, the mean gain
    over it, the seeds where the start was kept, search calls and wall seconds per seed."""
    groups = _by_task_and_label(runs)
    head = ("| task | method | seeds | eval n | start eval acc | eval acc (mean ± std) | gain (points) | start kept "
            "| search calls | wall s / seed |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for (task, label), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], _order(kv[1][0]), kv[0][1])):
        accs = [float(r["eval"]["accuracy"]) for r in rs if r["eval"].get("accuracy") is not None]
        starts = [float(r["extra"]["start"]["eval"]["accuracy"]) for r in rs if "start" in (r.get("extra") or {})]
        gains = [float(r["extra"]["gain"]["eval_accuracy"]) for r in rs if "gain" in (r.get("extra") or {})]
        kept = [r["extra"]["selection"]["chosen"] == "start" for r in rs if "selection" in (r.get("extra") or {})]
        ns = sorted({int(r["eval"].get("n") or 0) for r in rs})
        calls = _mean([_calls(r) for r in rs])
        seeds = ",".join(str(r.get("seed")) for r in sorted(rs, key=lambda r: str(r.get("seed"))))
        start = _mean(starts)
        gain = _mean(gains)
        rows.append(f"| {task} | {label} | {seeds} | {'/'.join(map(str, ns))} | {_pct(start)} | {_mean_std(accs)} | "
                    f"{'-' if gain is None else f'{100 * gain:+.1f}'} | "
                    f"{f'{sum(kept)}/{len(kept)}' if kept else '-'} | {0 if calls is None else calls:.0f} | "
                    f"{_mean([float(r['wall_s']) for r in rs if r.get('wall_s') is not None]) or 0:.0f} |")
    return "\n".join([head, *rows])


def _calls(r: dict[str, Any]) -> float:
    """Search calls as the method counts them (its curve's last point: cache hits included)."""
    curve = r.get("curve") or []
    if curve:
        return float(max(p["calls"] for p in curve))
    spent = r.get("budget_spent") or {}
    return float(spent.get("calls", 0)) + float(spent.get("cache_hits", 0))


def _order(r: dict[str, Any]) -> int:
    """Baselines first, then prompt searches."""
    return 0 if "start" not in (r.get("extra") or {}) else 1


def plot_leaderboard(runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Dev accuracy against calls, one panel per task, one colour per method (each seed a line
    from its start prompt's dev accuracy at 0 calls); baselines as dashed levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4.2), squeeze=False)
    labels = sorted({_label(r) for r in runs}, key=lambda lb: (lb not in {_label(r) for r in runs
                                                                          if "start" not in (r.get("extra") or {})}, lb))
    colours = {lb: f"C{i % 10}" for i, lb in enumerate(labels)}
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in runs if r["task"] == task]
        shown: set[str] = set()
        for r in sorted(mine, key=lambda r: (_label(r), str(r.get("seed")))):
            lb, extra = _label(r), r.get("extra") or {}
            curve = list(r.get("curve") or [])
            if "start" in extra and extra["start"]["dev"].get("accuracy") is not None:
                curve = [{"calls": 0, "dev_accuracy": extra["start"]["dev"]["accuracy"]}, *curve]
            kw = {"color": colours[lb], "label": None if lb in shown else lb, "alpha": 0.8}
            shown.add(lb)
            if len(curve) > 1:
                ax.plot([p["calls"] for p in curve], [100 * p["dev_accuracy"] for p in curve], marker=".", lw=1, **kw)
            elif r.get("dev", {}).get("accuracy") is not None:
                ax.axhline(100 * r["dev"]["accuracy"], ls="--", lw=0.8, **kw)
        ax.set_title(task)
        ax.set_xlabel("search calls")
        ax.set_ylabel("dev accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
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
    for r in sorted(runs, key=lambda r: (r["task"], _label(r), str(r.get("seed")))):
        curve = r.get("curve") or []
        if not curve:
            continue
        ax.plot([p["calls"] for p in curve], [100 * p["dev_accuracy"] for p in curve], marker=".",
                label=f"{r['task']} {_label(r)} s{r.get('seed')}")
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
