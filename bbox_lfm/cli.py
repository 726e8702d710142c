"""The ``bbox-lfm`` command.

Each subcommand lives in its own module of :mod:`bbox_lfm.commands` with a ``register(sub)``
function; they are found by listing that package, so adding a command touches nothing here.
Every flag can also be set by an environment variable: ``--base-url`` by ``BBOX_LFM_BASE_URL``,
``--cache-mode`` by ``BBOX_LFM_CACHE_MODE``, and so on (the command line wins).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__
from .errors import BBoxError

__all__ = ["build_parser", "main"]

_TRUE = {"1", "true", "yes", "on"}


def _env_defaults(parser: argparse.ArgumentParser) -> None:
    """Let ``BBOX_LFM_<FLAG>`` set the default of every ``--flag`` (recursively)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _env_defaults(sub)
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest == "help":
            continue
        var = "BBOX_LFM_" + longs[0][2:].upper().replace("-", "_")
        raw = os.environ.get(var)
        if raw is None:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            action.default = (raw.strip().lower() in _TRUE) == isinstance(action, argparse._StoreTrueAction)
        elif action.type is not None and callable(action.type):
            action.default = action.type(raw)
        else:
            action.default = raw
        action.required = False
        action.help = (action.help or "") + f" [env {var}]"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every command registered."""
    from . import commands

    parser = argparse.ArgumentParser(prog="bbox-lfm", description="Learn from models you can only query.")
    parser.add_argument("--version", action="version", version=f"bbox-lfm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    _env_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices.get(argv[0]) if argv else None
    if command is not None and command.get_default("pass_through"):
        # the command parses its own flags (e.g. `serve`, whose parser the server owns)
        args = argparse.Namespace(func=command.get_default("func"), argv=argv[1:])
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BBoxError as exc:
        print(f"bbox-lfm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bbox-lfm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
