"""bbox-lfm's pytest plugin (record/replay cassettes); registered under the ``pytest11`` entry point."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``--bbox-*`` options."""
    group = parser.getgroup("bbox_lfm", "bbox-lfm record/replay")
    group.addoption("--bbox-record-mode", default="none", choices=("none", "once", "new_episodes", "all"),
                    help="cassette record mode (default none: replay only, nothing reaches the network)")
