"""Testing helpers for users of bbox-lfm: the pytest plugin that records and replays queries
(``bbox_client``, ``@pytest.mark.bbox_cassette``; see docs/cassettes.md), loaded by pytest through
its entry point, and :func:`cassette_client` for notebooks and scripts that replay a cassette."""

from .cassette import cassette_client

__all__ = ["cassette_client"]
