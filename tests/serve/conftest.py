"""Fixtures of the server tests.

``local_server`` (ONE `start_local()` server for the whole session) lives in
``tests/conftest.py``, shared with the client tests; this adds the official client on top.
"""

from __future__ import annotations

from typing import Any

import pytest

from bbox_lfm.serve import LocalServer


@pytest.fixture(scope="session")
def openai_client(local_server: LocalServer) -> Any:
    """The official ``openai`` client pointed at ``local_server``, with its own retries off."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=local_server.base_url, api_key="EMPTY", max_retries=0)
