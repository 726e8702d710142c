"""``bbox-lfm providers``: the provider profiles and what they can do."""

from __future__ import annotations

import argparse
import dataclasses

from ..profiles import available_profiles, load_profile
from ._common import print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("providers", help="show provider profiles (capabilities, limits, prices) as JSON")
    p.add_argument("name", nargs="?", default=None, help="one profile (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the profiles."""
    names = [args.name] if args.name else available_profiles()
    out = {}
    for n in names:
        prof = load_profile(n)
        d = {f.name: getattr(prof, f.name) for f in dataclasses.fields(prof)}
        d["capabilities"] = dataclasses.asdict(prof.capabilities)
        d["prices"] = {m: dataclasses.asdict(p) for m, p in prof.prices.items()}
        out[prof.name] = d
    print_json(out)
    return 0
