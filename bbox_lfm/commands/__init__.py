"""Subcommands of ``bbox-lfm``: one module each, with ``register(subparsers)``."""
