"""One call for a client whose queries live in a cassette: notebooks and scripts that replay.

A notebook committed with its cassette runs anywhere (CI, a laptop on a train) with no model and
no network, and the same code records the cassette against a real server::

    server = start_local() if RECORD else None   # the local server, only when recording
    client = cassette_client("cassettes/01_quickstart.jsonl", server=server)

With no server the client replays: every answer comes from the cassette, nothing is sent, and
a query the cassette lacks raises :class:`~bbox_lfm.errors.CacheMiss` naming what differs from
the nearest recorded one; the provider, model and namespace come from the cassette's header.
With a server (a :class:`~bbox_lfm.serve.LocalServer` or a base URL) the client answers from
the cassette where it can, sends the rest, and writes each new answer to the cassette at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..client import Client
from ..errors import ConfigError
from ..stores.jsonl import JSONLStore, _is_loopback, recorded_against

__all__ = ["cassette_client"]


def cassette_client(cassette: str | os.PathLike[str], *, server: Any = None, **client_kw: Any) -> Client:
    """A :class:`Client` backed by ``cassette``: replay only without ``server``, record with one.

    ``server``: a ``LocalServer`` (or its base URL, or any provider's base URL) to record against.
    ``client_kw`` go to the client (a budget, ``provider=``, ``model=``...); when replaying, a
    given provider or model that contradicts the cassette's header raises ``ConfigError``.
    """
    path = Path(cassette)
    if server is None:
        if not path.is_file():
            raise ConfigError(f"cassette must be an existing cassette file when no server is given (replay); got "
                              f"{str(path)!r}. Record it with cassette_client({str(path)!r}, server=start_local())")
        against = recorded_against(path)
        for name in ("provider", "model"):
            mine, theirs = client_kw.get(name), against.get(name)
            if mine is not None and theirs and mine != theirs:
                raise ConfigError(f"{name} must be what the cassette {str(path)!r} was recorded against, "
                                  f"{theirs!r}, to replay it; got {mine!r}")
        client_kw.setdefault("provider", against.get("provider"))
        client_kw.setdefault("model", against.get("model"))
        client_kw.setdefault("cache_namespace", against.get("namespace"))
        client_kw.setdefault("api_key", "EMPTY")  # never sent: replay reaches no provider
        return Client(against.get("base_url"), cache=JSONLStore(path), cache_mode="replay", **client_kw)

    secrets = [client_kw.get("api_key"), os.environ.get("OPENAI_API_KEY")]
    store = JSONLStore(path, secrets=secrets, autosave=True)
    base_url = getattr(server, "base_url", server)
    # bbox-lfm's own server (an object, or a loopback URL and no other profile) keys answers by
    # model rather than port, so the cassette replays whatever port it was recorded on
    local = hasattr(server, "model_id") or (client_kw.get("provider") in (None, "bbox-lfm") and _is_loopback(base_url))
    if local:
        client = Client.local(server, cache=store, cache_mode="readwrite", **client_kw)
    else:
        client = Client(base_url, cache=store, cache_mode="readwrite", **client_kw)
    store.recorded = {"base_url": client.base_url, "provider": client.profile.name, "model": client.model,
                      "namespace": client.cache_namespace}
    return client
