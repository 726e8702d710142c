"""Derivative-free optimizers in ask/tell form (pycma, nevergrad); see :mod:`.asktell`."""

from __future__ import annotations

from .asktell import CMA, AskTell, Nevergrad, make_optimizer

__all__ = ["CMA", "AskTell", "Nevergrad", "make_optimizer"]
