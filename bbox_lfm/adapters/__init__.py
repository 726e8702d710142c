"""Adapters: the bottom of the query path, where a :class:`~bbox_lfm.types.Query` becomes a
request to a provider and the answer becomes a :class:`~bbox_lfm.types.Response`."""

from .base import Sender
from .mock import MockAdapter

__all__ = ["MockAdapter", "Sender"]
