"""The runs the results files still lack, as one line per benchmark process for ``run.sh all``.

    python benchmarks/gpu/missing.py      # e.g. "bbt bbtv2 21" / "bdpl chat-exact 13 21 42"

One process per missing (method or variant, seed) when that makes at most ``--most`` processes
(the device tool brings back at most 8 files: the parts and a log), else one per method or
variant with all its missing seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def missing_runs(results: Path = RESULTS) -> list[tuple[str, str, int]]:
    runs = []
    for kind in ("bbt", "bdpl"):
        path = results / f"{kind}.json"
        if path.is_file():
            for name, seeds in (json.loads(path.read_text(encoding="utf-8")).get("missing") or {}).items():
                runs += [(kind, name, int(s)) for s in seeds]
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--most", type=int, default=7, help="most processes (default 7)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    runs = missing_runs(args.results)
    groups: dict[tuple[str, str], list[int]] = {}
    for kind, name, seed in runs:
        groups.setdefault((kind, name), []).append(seed)
    if len(runs) <= args.most:
        lines = [f"{kind} {name} {seed}" for kind, name, seed in runs]
    else:
        lines = [f"{kind} {name} " + " ".join(map(str, seeds)) for (kind, name), seeds in groups.items()]
    if len(lines) > args.most:
        raise SystemExit(f"most: {len(lines)} processes needed even grouped; more than --most {args.most}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
