"""``bbox-lfm models``: list a provider's models and their metadata as JSON."""

from __future__ import annotations

import argparse

from ._common import add_client_args, open_client, print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("models", help="list the provider's models and their metadata as JSON")
    add_client_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the model list."""
    with open_client(args) as client:
        print_json({"base_url": client.base_url, "provider": client.profile.name, "models": client.models()})
    return 0
