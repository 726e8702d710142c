"""Reading examples: JSONL, CSV and JSON files, and (optionally) Hugging Face ``datasets``.

A label in a file is either an index into the task's labels or one of the label names; anything
else is an error naming the file and line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .task import Example

__all__ = ["data_root", "load_hf", "read_examples"]


def data_root() -> Path:
    """Where the benchmark data lies: ``$BBOX_LFM_DATA``, else ``../shared/data`` beside the
    checkout (``/work/shared/data`` for ``/work/main``)."""
    env = os.environ.get("BBOX_LFM_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _rows(path: Path) -> Iterable[tuple[int, Mapping[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{path}:{n} must be a JSON object per line; got {line[:80]!r}") from exc
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","), 2):
                yield n, row
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ConfigError(f"{path} must hold a JSON list of objects; got {type(data).__name__}")
        yield from enumerate(data, 1)
    else:
        raise ConfigError(f"data file must end in .jsonl, .json, .csv or .tsv; got {str(path)!r}")


def to_label(value: Any, labels: Sequence[str], where: str) -> int:
    """The label index of ``value`` (an index, a numeric string, or a label name)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and 0 <= value < len(labels):
        return value
    if isinstance(value, str):
        if value in labels:
            return labels.index(value)
        if value.strip().lstrip("-").isdigit() and 0 <= int(value) < len(labels):
            return int(value)
    raise ConfigError(f"label at {where} must be one of {list(labels)} or an index below {len(labels)}; got {value!r}")


def read_examples(path: str | os.PathLike[str], labels: Sequence[str], *, text_field: str = "text",
                  text_pair_field: str | None = None, label_field: str = "label") -> list[Example]:
    """Examples from a JSONL, JSON or CSV/TSV file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file must exist; got {str(path)!r} (not found)")
    out = []
    for n, row in _rows(path):
        where = f"{path}:{n}"
        for fld in (text_field, label_field, *([text_pair_field] if text_pair_field else [])):
            if fld not in row:
                raise ConfigError(f"row at {where} must have the field {fld!r}; got fields {sorted(row)}")
        pair = str(row[text_pair_field]) if text_pair_field else None
        out.append(Example(text=str(row[text_field]), label=to_label(row[label_field], labels, where),
                           text_pair=pair))
    return out


def load_hf(path: str, split: str, labels: Sequence[str], *, name: str | None = None, text_field: str = "text",
            text_pair_field: str | None = None, label_field: str = "label") -> list[Example]:
    """Examples from a Hugging Face dataset; needs the ``datasets`` package and, unless the
    dataset is already in its cache, a network."""
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("loading a task from Hugging Face needs the `datasets` package (pip install datasets) "
                          "and network access; got neither installed. Point the task spec at local "
                          "JSONL/CSV files instead") from exc
    try:
        ds = datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # datasets raises many unrelated types when offline
        raise ConfigError(f"Hugging Face dataset {path!r} (config {name!r}, split {split!r}) must be loadable; "
                          f"got {type(exc).__name__}: {exc}. Offline? Use local JSONL/CSV files") from exc
    out = []
    for n, row in enumerate(ds):
        where = f"{path}[{split}][{n}]"
        pair = str(row[text_pair_field]) if text_pair_field else None
        out.append(Example(text=str(row[text_field]), label=to_label(row[label_field], labels, where),
                           text_pair=pair))
    return out
