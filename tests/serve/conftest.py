"""One real server (SmolLM2 on a free loopback port) shared by the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bbox_lfm.serve import LocalServer, start_local


@pytest.fixture(scope="session")
def local_server() -> Iterator[LocalServer]:
    """The embedded default model served by `start_local`, stopped after the session."""
    server = start_local()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openai_client(local_server: LocalServer) -> Any:
    """The official ``openai`` client pointed at `local_server`, with its own retries off."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=local_server.base_url, api_key="EMPTY", max_retries=0)
