"""Cache stores: where answers are kept between runs."""

from .memory import MemoryStore

__all__ = ["MemoryStore"]
