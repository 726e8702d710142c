"""Budget layer: reserve before sending, settle on the answer."""

from __future__ import annotations

from ..adapters.base import Sender
from ..budget import Budget
from ..errors import BudgetExhausted
from ..types import Query, Response

__all__ = ["BudgetLayer"]


class BudgetLayer:
    """Refuse (``BudgetExhausted``) any query that could exceed ``budget``; count what goes up."""

    def __init__(self, inner: Sender, budget: Budget):
        self.inner = inner
        self.budget = budget

    def send(self, query: Query) -> Response:
        """Reserve, send, settle (or release when no answer came)."""
        r = self.budget.reserve(query)
        try:
            response = self.inner.send(query)
        except BudgetExhausted:
            self.budget.release(r, sent=False)  # an enclosing budget refused it: nothing went up
            raise
        except BaseException as exc:
            self.budget.release(r, attempts=getattr(exc, "attempts", 1))
            raise
        self.budget.settle(r, response)
        return response
