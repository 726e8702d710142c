"""Record a notebook's cassette again: run it top to bottom against the local server.

    python notebooks/record.py notebooks/01_quickstart.ipynb [...]

Each notebook runs in a fresh kernel with ``BBOX_LFM_RECORD=1``, which makes it start the local
server and send its queries (see its first code cell); its cassette
``notebooks/cassettes/<name>.jsonl`` is rewritten from scratch, so it holds exactly what the
notebook asks now. The notebook file itself is left as it is: notebooks are committed without
outputs, and ``tests/test_notebooks.py`` replays them from these cassettes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def record(path: Path, timeout_s: float) -> float:
    """Run the notebook at ``path`` in record mode; return the seconds it took."""
    import nbclient
    import nbformat

    cassette = path.parent / "cassettes" / f"{path.stem}.jsonl"
    cassette.unlink(missing_ok=True)
    os.environ["BBOX_LFM_RECORD"] = "1"
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Record each notebook given; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--cell-timeout", type=float, default=1800.0, help="seconds one cell may take")
    args = ap.parse_args(argv)
    for path in args.notebooks:
        seconds = record(path.resolve(), args.cell_timeout)
        cassette = path.parent / "cassettes" / f"{path.stem}.jsonl"
        size = cassette.stat().st_size if cassette.exists() else 0
        print(f"{path.name}: recorded in {seconds:.0f} s, cassette {cassette} {size / 1e3:.0f} kB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
