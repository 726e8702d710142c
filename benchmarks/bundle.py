"""Method benchmarks' files in the results format: their runs as RunRecords in one bundle.

Each method benchmark (baselines, bbt, bdpl, distill) keeps its runs in a layout of its own
while it works (``{"bbt": [...], "bbtv2": [...]}``, ``{variant: {seed: run}}``, a list). `dump`
writes them as a bundle of the results format (``bbox_lfm.results.Bundle``: ``kind: bundle``,
``runs: [RunRecord, ...]``), the benchmark's own summary beside them; `load` gives the working
layout back, so the scripts resume and merge as before. The mapping loses nothing: each record
keeps every field its run had, says where in the layout it sits (``bundle_key``) and which core
fields the bundle added because the run did not carry them (``bundle_added``; values that were
not recorded are None or "" there, never a made-up figure).

    python benchmarks/bundle.py benchmarks/results/*.json   # convert files written before bundles
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["dump", "load", "to_bundle"]

LAYOUTS = {"baselines": "list", "bbt": "by_method", "bdpl": "by_variant_seed", "distill": "list",
           "rlprompt": "by_variant_seed", "promptboosting": "by_variant_seed"}
_PROVIDER = "bbox-lfm"  # every method benchmark so far ran against the local server


def _name(doc: dict[str, Any], path: Path | None) -> str:
    name = doc.get("benchmark") or (path.stem if path is not None else "")
    if name not in LAYOUTS:
        raise SystemExit(f"benchmark must be one of {sorted(LAYOUTS)}; got {name!r}")
    return str(name)


def _record(run: dict[str, Any], key: list[Any], core: dict[str, Any]) -> dict[str, Any]:
    """``run`` with the core fields it lacks taken from ``core``, and where it came from."""
    rec = dict(run)
    added = [k for k in core if k not in rec]
    for k in added:
        rec[k] = core[k]
    rec["bundle_key"] = key
    rec["bundle_added"] = added
    return rec


def _core(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Core fields a run of this benchmark did not record itself (None or "" where unknown)."""
    base = {"schema": 1, "task": doc.get("task"), "provider": doc.get("provider") or _PROVIDER,
            "model": doc.get("model") or "", "prompt": None, "version": "", "commit": "", "extra": {},
            "eval_spent": None, "wall_s": None, "curve": []}
    base.update(fields)
    return base


def to_bundle(doc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The benchmark document ``doc`` (working layout) as a results bundle."""
    if doc.get("kind") == "bundle":
        return doc
    doc = copy.deepcopy(doc)
    name = name or _name(doc, None)
    native = doc.pop("runs", [])
    records: list[dict[str, Any]] = []
    if name == "baselines":
        records = [_record(r, [i], {}) for i, r in enumerate(native)]
    elif name == "bbt":
        for method, runs in native.items():
            for i, r in enumerate(runs):
                core = _core(doc, method=method, config={"budget": doc.get("budget_calls"), "seed": r.get("seed")},
                             label=method)
                records.append(_record(r, [method, i], core))
    elif name == "bdpl":
        for variant, seeds in native.items():
            for seed, r in seeds.items():
                records.append(_record(r, [variant, seed], _core(doc, method="bdpl", label=f"bdpl ({variant})")))
    elif name == "rlprompt":  # {task: {seed: run}}, the runs already whole results
        for task, seeds in native.items():
            for seed, r in seeds.items():
                records.append(_record(r, [task, seed], _core(doc, method="rlprompt", task=task)))
    elif name == "promptboosting":  # {group: {seed: run}}, whole results; a group names a task and a path
        for group, seeds in native.items():
            for seed, r in seeds.items():
                label = "promptboosting" if group == r.get("task") else f"promptboosting ({group})"
                records.append(_record(r, [group, seed], _core(doc, method="promptboosting", label=label)))
    elif name == "distill":
        model = (doc.get("teacher") or {}).get("model") or ""
        for i, r in enumerate(native):
            selection = r.get("selection")
            label = f"distill {r.get('student')} {selection} {r.get('budget_sequences')}"
            core = _core(doc, method="distill", model=model, seed=r.get("seed", doc.get("seed")), label=label,
                         config={"student": r.get("student"), "transfer": r.get("transfer"), "selection": selection,
                                 "budget": r.get("budget_sequences")},
                         # the student predicts locally: its dev and eval scoring send no query
                         budget_spent={"calls": r.get("sent_upstream"), "sequences": r.get("sent_upstream"),
                                       "cache_hits": r.get("cache_hits")},
                         eval_spent={"calls": 0, "sequences": 0, "cache_hits": 0},
                         dev={"accuracy": None, "f1": None})
            records.append(_record(r, [i], core))
    top = {"schema": 1, "kind": "bundle", "benchmark": name}
    added = [k for k in top if k not in doc or (k == "schema" and doc[k] != 1)]
    return {**doc, **top, "bundle_added": added, "runs": records}


def from_bundle(doc: dict[str, Any]) -> dict[str, Any]:
    """The working layout of a bundle (a document already in it is returned as it is)."""
    if doc.get("kind") != "bundle":
        return doc
    doc = copy.deepcopy(doc)
    name = doc["benchmark"]
    for k in doc.pop("bundle_added", ["schema", "kind"]):
        doc.pop(k, None)
    doc.pop("kind", None)
    records = doc.pop("runs")
    layout = LAYOUTS[name]
    runs: Any = [] if layout == "list" else {}
    for rec in records:
        key = rec.pop("bundle_key")
        for k in rec.pop("bundle_added"):
            rec.pop(k, None)
        if layout == "list":
            runs.append(rec)
        elif layout == "by_method":
            runs.setdefault(key[0], []).append(rec)
        else:
            runs.setdefault(key[0], {})[key[1]] = rec
    return {**doc, "runs": runs}


def load(path: Path) -> dict[str, Any]:
    """A benchmark file in its working layout."""
    return from_bundle(json.loads(Path(path).read_text(encoding="utf-8")))


def dump(path: Path, doc: dict[str, Any], name: str) -> None:
    """Write ``doc`` (working layout) to ``path`` as a bundle, atomically, checked against the format."""
    from bbox_lfm.results import read_results, write_result

    write_result(path, to_bundle(doc, name))
    read_results(path)


def main(argv: list[str]) -> int:
    """Convert the named files in place (those already bundles, and speed files, are left alone)."""
    for arg in argv:
        path = Path(arg)
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("kind") in ("bundle", "speed") or path.stem not in LAYOUTS:
            continue
        before = json.dumps(doc, sort_keys=True)
        dump(path, doc, path.stem)
        assert json.dumps(load(path), sort_keys=True) == before, f"{path}: converting back does not give the original"
        print(f"{path}: {len(json.loads(path.read_text())['runs'])} runs as a bundle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
