"""Layers of the query path. Each wraps an inner sender and is itself one; their order is
set in one place, :class:`bbox_lfm.client.Client`."""

from .budget import BudgetLayer
from .ratelimit import RateLimitLayer
from .retry import RetryLayer

__all__ = ["BudgetLayer", "RateLimitLayer", "RetryLayer"]
