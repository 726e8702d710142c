"""Record and replay: the pytest plugin (:mod:`bbox_lfm.testing.plugin`, loaded by pytest
through its entry point) and :func:`cassette_client` for notebooks and scripts."""

from .cassette import cassette_client

__all__ = ["cassette_client"]
