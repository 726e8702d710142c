"""``bbox-lfm providers``: the provider profiles and what they can do.

    bbox-lfm providers [NAME]                     the shipped (and user) profiles as JSON
    bbox-lfm providers probe --base-url URL [--model M] [--provider NAME] [--out FILE]

``probe`` asks the server a handful of cheap questions (:mod:`bbox_lfm.probe`), prints what it
found and writes a profile where the client looks for that URL (or to ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..profiles import available_profiles, load_profile
from ._common import print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("providers", help="show provider profiles as JSON, or probe a server: providers probe --base-url URL")
    p.add_argument("name", nargs="?", default=None, help="one profile (default: all), or 'probe' to probe a server")
    g = p.add_argument_group("probe")
    g.add_argument("--base-url", default=None, help="the server to probe, e.g. http://127.0.0.1:8080/v1")
    g.add_argument("--model", default=None, help="model to probe (default: the one the server lists)")
    g.add_argument("--provider", default=None,
                   help="profile whose other values (key variable, prices, limits) the probed one keeps "
                        "(default: bbox-lfm for a bbox-lfm server, else generic)")
    g.add_argument("--api-key", default=None, help="API key (better: the profile's key variable)")
    g.add_argument("--out", default=None, help="write the profile here instead of the per-URL cache location")
    g.add_argument("--no-save", action="store_true", help="print only, write nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the profiles, or probe a server."""
    if args.name == "probe":
        return _probe(args)
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


def _probe(args: argparse.Namespace) -> int:
    from ..client import Client
    from ..errors import ConfigError
    from ..probe import probe, profile_toml, write_probed_profile

    if not args.base_url:
        raise ConfigError("--base-url must be given to probe a server; got nothing")
    with Client(args.base_url, provider=args.provider or "generic", api_key=args.api_key, cache_mode="off",
                max_attempts=1, probed=False) as client:
        result = probe(client, model=args.model)
        # the profile whose other values the probed one keeps: the one named, else bbox-lfm's
        # for a server that publishes bbox-lfm metadata, else generic's
        base = client.profile if args.provider else load_profile(
            "bbox-lfm" if result.metadata_capabilities else "generic")
    print(f"probed {result.base_url} with {result.requests} requests; model {result.model!r}"
          + ("" if result.model_named else " (the one model the server lists)"), file=sys.stderr)
    for name, why in result.evidence.items():
        print(f"  {name}: {why}", file=sys.stderr)
    if args.no_save:
        sys.stdout.write(profile_toml(base, result))
        return 0
    path = write_probed_profile(base, result, args.out)
    print_json({"profile": str(path), "provider": base.name, "model": result.model,
                "capabilities": result.capabilities, "max_tokens_zero": result.max_tokens_zero,
                "requests": result.requests})
    return 0
