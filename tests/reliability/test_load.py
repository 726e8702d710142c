"""64 concurrent clients against the local server: no error, memory that stops growing."""

from __future__ import annotations

from typing import Any

import pytest

from ._util import load

pytestmark = pytest.mark.slow


def test_64_concurrent_clients(local_server: Any) -> None:
    figures = load(local_server.base_url, local_server.model_id, clients=64, rounds=4, per_round=1)
    assert figures["errors"] == 0, figures["first_errors"]
    assert figures["ok"] == figures["requests"] == 256
    rss = figures["rss_mb_after_round"]
    # round 1 warms up (thread stacks, tokenizer caches, batch buffers); after it, memory may
    # move by noise but must not keep climbing with the load
    growth = rss[-1] - rss[2]
    assert growth < max(64.0, 0.05 * rss[2]), rss
