"""Flags and helpers that several commands share: how to reach a provider."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

from ..budget import Budget
from ..client import Client
from ..layers.cache import CACHE_MODES

__all__ = ["LOCAL_REPLAY_URL", "Choices", "add_client_args", "open_client", "print_json"]

LOCAL_REPLAY_URL = "http://127.0.0.1:9/v1"  # the discard port: a query that slipped through fails at once


class Choices(Sequence[str]):
    """argparse ``choices`` read from a registry (methods, students, a method's options) the first
    time they are needed, to check a given value or to print help: the registry stays the one
    list of names, and the CLI starts without importing what the registry imports."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        self._names: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._names is None:
            self._names = tuple(self._load())
        return self._names

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._all()[index]


def add_client_args(p: argparse.ArgumentParser) -> None:
    """--local / --base-url / --provider / --model / --api-key / cache flags."""
    g = p.add_argument_group("provider")
    g.add_argument("--local", action="store_true",
                   help="start the embedded local server (SmolLM2-135M-Instruct) for this run")
    g.add_argument("--local-model", default=None, help="model for --local (a local HF directory or GGUF file)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--provider", default=None, help="provider profile name or .toml path")
    g.add_argument("--model", default=None, help="model name (default: the profile's)")
    g.add_argument("--api-key", default=None, help="API key (better: the profile's key variable)")
    g.add_argument("--cache-mode", default=None, choices=CACHE_MODES,
                   help="cache mode (default readwrite)")
    g.add_argument("--cache", default=None, help="cache file (default $BBOX_LFM_CACHE_DIR/cache.sqlite)")
    g.add_argument("--max-concurrency", type=int, default=16, help="concurrent requests")


@contextlib.contextmanager
def open_client(args: argparse.Namespace, budget: Budget | None = None) -> Iterator[Client]:
    """A client for the provider the flags name; with --local, a server is started and stopped."""
    server: Any = None
    try:
        kw: dict[str, Any] = {"api_key": args.api_key, "provider": args.provider, "budget": budget,
                              "cache": args.cache, "cache_mode": args.cache_mode,
                              "max_concurrency": args.max_concurrency}
        if args.model:
            kw["model"] = args.model
        if args.local:
            if args.cache_mode == "replay":
                # replay works offline without loading the model: cache keys name the model, not
                # the port, and nothing is sent, so the URL is never reached
                client = Client.local(LOCAL_REPLAY_URL, **kw)
            else:
                from ..serve import start_local

                server = start_local(args.local_model)
                client = Client.local(server, **kw)
        else:
            client = Client(args.base_url, **kw)
            _say_what_was_chosen(client)
        with client:
            yield client
            # every command that queried a provider ends with what it spent
            print("budget (whole run):\n" + client.budget.format(), file=sys.stderr)
    finally:
        if server is not None:
            server.stop()


def _say_what_was_chosen(client: Client) -> None:
    """Tell the user when the run uses a probed profile, or a model nobody named."""
    if client.profile.probed:
        print(f"bbox-lfm: note: using the {client.profile.name!r} profile probed for {client.base_url} "
              f"({client.profile.source}); `bbox-lfm providers probe` refreshes it", file=sys.stderr)
    if client.model is None:
        client.resolve_model()
        print(f"bbox-lfm: note: no --model given; using {client.model!r}, the one model {client.base_url} lists",
              file=sys.stderr)


def print_json(obj: Any) -> None:
    """Pretty JSON on stdout."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
