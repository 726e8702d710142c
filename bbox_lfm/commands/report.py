"""``bbox-lfm report``: a Markdown table of runs and a PNG of dev accuracy vs calls.

    bbox-lfm report results/*.json --out-md table.md --out-png curve.png

Each file is one results JSON (:mod:`bbox_lfm.results`) or a bundle ``{"kind": "bundle",
"runs": [...]}`` such as ``benchmarks/results/bbt.json``, read through the results format's
models; speed-benchmark files (``"kind": "speed"``) are skipped with a note. A run's name in the
tables is ``extra.label`` when the run has one (e.g. ``zero-shot (template 2)``), else its method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results import read_results

__all__ = ["load_runs", "plot_curves", "runs_table", "summary_table"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("report", help="Markdown table of results files and a PNG of dev accuracy vs calls")
    p.add_argument("files", nargs="+", help="results JSON files (single runs or {\"runs\": [...]} bundles)")
    p.add_argument("--out-md", default=None, help="write the Markdown here (it is always printed)")
    p.add_argument("--out-png", default=None, help="write the plot of dev accuracy vs calls here")
    p.set_defaults(func=run)


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


def summary_table(runs: Sequence[dict[str, Any]]) -> str:
    """Eval accuracy and F1 as mean ± std over seeds, one row per (task, method), one column
    group per metric; ``eval n`` says how many eval rows each run scored."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["task"], _label(r))].append(r)
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Print (and write) the tables; draw the plot."""
    skipped: list[str] = []
    runs = load_runs(args.files, skipped=skipped)
    for path in skipped:
        print(f"note: {path} is a speed benchmark's file (no method runs); skipped", file=sys.stderr)
    if not runs:
        raise ConfigError(f"the files must hold at least one method run; got {len(args.files)} file(s) without any")
    md = f"## Summary\n\n{summary_table(runs)}\n\n## Runs\n\n{runs_table(runs)}\n"
    sys.stdout.write(md)
    if args.out_md:
        Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_md).write_text(md, encoding="utf-8")
    if args.out_png:
        plot_curves(runs, args.out_png)
    return 0
