"""The one interface every layer and adapter implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..types import Query, Response

__all__ = ["Sender"]


@runtime_checkable
class Sender(Protocol):
    """Anything that turns a query into a response: an adapter, or a layer wrapping a sender."""

    def send(self, query: Query) -> Response:
        """Send ``query`` and return the answer, or raise an error of :mod:`bbox_lfm.errors`."""
        ...
