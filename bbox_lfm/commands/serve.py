"""``bbox-lfm serve``: the local OpenAI-compatible server (see :mod:`bbox_lfm.serve`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command; its flags are parsed by :func:`bbox_lfm.serve.cli_main`."""
    p = sub.add_parser("serve", add_help=False, help="serve a local Hugging Face model over the OpenAI API "
                       "(default SmolLM2-135M-Instruct); `bbox-lfm serve --help` for its flags")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=run, pass_through=True)  # main() hands it the raw arguments


def run(args: argparse.Namespace) -> int:
    """Hand the arguments to the server's own parser."""
    from ..serve import cli_main

    return cli_main(list(args.argv))
