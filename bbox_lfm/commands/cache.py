"""``bbox-lfm cache``: look after the query cache.

- ``stats [--json]``: entries, size, hits, misses, hit rate, dollars the hits saved.
- ``prune [--older-than DAYS] [--filter TERM ...] [--dry-run]``: delete entries.
- ``export [--filter TERM ...] [--provider P] out.jsonl``: write a cassette (sorted, secrets
  scrubbed) in the pytest plugin's format: its header names what the entries were recorded
  against (the namespace and model they share; ``--provider`` names the profile where the
  namespace does not tell), so a cassette cut from a long run's cache replays with no flags.
- ``import in.jsonl``: add a cassette's entries to the cache.

Filter terms are ``FIELD=VALUE`` or ``FIELD~TEXT`` with FIELD one of model, endpoint,
base_url, key (a prefix), prompt (see :mod:`bbox_lfm.stores.filters`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from ..errors import check
from ..profiles import load_profile
from ..stores import SQLiteStore, default_cache_path, parse_filter, read_cassette, write_cassette
from ..stores.jsonl import infer_recorded_against, read_header
from ._common import print_json

_DAY_S = 86_400.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command and its subcommands."""
    p = sub.add_parser("cache", help="inspect, prune, export and import the query cache")
    p.add_argument("--cache", default=None, help="cache file (default $BBOX_LFM_CACHE_DIR/cache.sqlite)")
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION", required=True)

    s = actions.add_parser("stats", help="entries, size, hit rate and money saved")
    s.add_argument("--json", action="store_true", help="print JSON")

    def add_filter(q: argparse.ArgumentParser) -> None:
        q.add_argument("--filter", action="append", default=[], metavar="TERM",
                       help="FIELD=VALUE or FIELD~TEXT (model, endpoint, base_url, key, prompt); repeatable")
        q.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="created more than DAYS ago")
        q.add_argument("--newer-than", type=float, default=None, metavar="DAYS", help="created in the last DAYS")

    pr = actions.add_parser("prune", help="delete entries (by age and filter)")
    add_filter(pr)
    pr.add_argument("--dry-run", action="store_true", help="only count what would be deleted")

    ex = actions.add_parser("export", help="write entries to a JSONL cassette")
    add_filter(ex)
    ex.add_argument("--provider", default=None,
                    help="provider profile to name in the cassette's header (default: what the namespace tells)")
    ex.add_argument("out", help="cassette to write (.jsonl)")

    im = actions.add_parser("import", help="add a JSONL cassette's entries to the cache")
    im.add_argument("cassette", help="cassette to read (.jsonl)")
    p.set_defaults(func=run)


def _path(args: argparse.Namespace) -> Path:
    return Path(args.cache) if args.cache else default_cache_path()


def _filter(args: argparse.Namespace) -> Any:
    return parse_filter(args.filter, now=time.time(),
                        older_than_s=None if args.older_than is None else args.older_than * _DAY_S,
                        newer_than_s=None if args.newer_than is None else args.newer_than * _DAY_S)


def _when(t: float | None) -> str:
    return "-" if t is None else dt.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def run(args: argparse.Namespace) -> int:
    """Carry out the chosen action."""
    path = _path(args)
    if args.cache_action == "stats" and not path.exists():
        stats: dict[str, Any] = {"path": str(path), "exists": False, "entries": 0, "size_bytes": 0, "hits": 0,
                                 "misses": 0, "hit_rate": None, "saved_usd": 0.0}
        return _print_stats(stats, args.json)
    if args.cache_action == "import":
        check(Path(args.cassette).is_file(), "cassette", "an existing JSONL file", args.cassette)
    store = SQLiteStore(path)
    try:
        if args.cache_action == "stats":
            return _print_stats({**store.stats(), "exists": True}, args.json)
        if args.cache_action == "prune":
            where = _filter(args)
            if args.dry_run:
                n = sum(1 for _ in store.select(where))
            else:
                n = store.delete(where)
            print_json({"path": str(path), "deleted": 0 if args.dry_run else n, "matched": n,
                        "entries_left": len(store)})
            return 0
        if args.cache_action == "export":
            entries = list(store.select(_filter(args)))
            recorded = infer_recorded_against(entries)
            if args.provider:
                load_profile(args.provider)  # a name or path that does not load fails here, not in replay
                recorded["provider"] = args.provider
            secrets = [os.environ.get("OPENAI_API_KEY")]
            n = write_cassette(args.out, entries, secrets, recorded=recorded)
            print_json({"path": str(path), "exported": n, "out": args.out, "recorded_against": read_header(args.out)})
            return 0
        n = 0
        for key, entry in read_cassette(args.cassette):
            store.put(key, entry)
            n += 1
        print_json({"path": str(path), "imported": n, "entries": len(store)})
        return 0
    finally:
        store.close()


def _print_stats(stats: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(stats)
        return 0
    rate = "-" if stats["hit_rate"] is None else f"{100 * stats['hit_rate']:.1f}%"
    print(f"cache      {stats['path']}{'' if stats.get('exists', True) else ' (not created yet)'}")
    print(f"entries    {stats['entries']}  ({stats['size_bytes'] / 1e6:.2f} MB)")
    print(f"hits       {stats['hits']}  misses {stats['misses']}  hit rate {rate}")
    print(f"saved      ${stats['saved_usd']:.4f}")
    if stats.get("oldest") is not None:
        print(f"created    {_when(stats['oldest'])} .. {_when(stats['newest'])}")
    for model, n in (stats.get("models") or {}).items():
        print(f"model      {model or '(none)'}: {n}")
    return 0
