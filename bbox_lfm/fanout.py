"""Send all, wait for all, then raise the first error: the one fan-out every concurrent caller uses.

A batch of queries goes out on a thread pool so the provider (or the local server's batcher)
sees them together. Every item runs to its end even when another fails, so the answers that
did arrive are cached and counted; only then is the first failure, in item order, raised. A
caller that can use a partial batch (BBT keeps the candidates answered before a budget ran
out) asks for every outcome instead (``settle=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Outcome", "fan_out"]

T = TypeVar("T")
R = TypeVar("R")
#: one item's result, or the error it raised (the other is None)
Outcome = tuple[Any, BaseException | None]


def fan_out(fn: Callable[[T], R], items: Sequence[T], *, max_workers: int, settle: bool = False,
            name: str = "bbox-lfm", on_done: Callable[[], None] | None = None) -> list[Any]:
    """``fn(item)`` for every item, at most ``max_workers`` at once, results in item order.

    All items run to completion; then the first error in item order is raised, or, with
    ``settle``, every ``(result, error)`` pair (an `Outcome`) is returned. ``on_done`` is called as each item
    finishes (a progress bar's update).
    """
    items = list(items)

    def run(item: T) -> R:
        try:
            return fn(item)
        finally:
            if on_done is not None:
                on_done()

    outcomes: list[Outcome] = []
    if max_workers <= 1 or len(items) <= 1:
        for item in items:
            try:
                outcomes.append((run(item), None))
            except Exception as exc:  # noqa: BLE001 -- kept, and raised after the rest finish
                outcomes.append((None, exc))
    else:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix=name) as pool:
            futures = [pool.submit(run, item) for item in items]
            for future in futures:
                error = future.exception()
                outcomes.append((None if error is not None else future.result(), error))
    if settle:
        return outcomes
    for _, error in outcomes:
        if error is not None:
            raise error
    return [result for result, _ in outcomes]
