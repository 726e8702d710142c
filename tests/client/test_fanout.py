"""The one fan-out: every item finishes, then the first error in item order is raised."""

from __future__ import annotations

import threading
import time

import pytest

from bbox_lfm.fanout import fan_out


@pytest.mark.parametrize("workers", [1, 4])
def test_all_finish_then_the_first_error_in_order_is_raised(workers: int) -> None:
    done: list[int] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        time.sleep(0.01 * (5 - i))  # later items finish first
        with lock:
            done.append(i)
        if i in (1, 3):
            raise ValueError(f"item {i}")
        return i * i

    with pytest.raises(ValueError, match="item 1"):
        fan_out(fn, range(5), max_workers=workers)
    assert sorted(done) == [0, 1, 2, 3, 4]
    outcomes = fan_out(fn, range(5), max_workers=workers, settle=True)
    assert [r for r, _ in outcomes] == [0, None, 4, None, 16]
    assert [str(e) if e else None for _, e in outcomes] == [None, "item 1", None, "item 3", None]


def test_results_in_order_and_progress_callback() -> None:
    ticks: list[int] = []
    assert fan_out(lambda i: -i, [3, 1, 2], max_workers=3, on_done=lambda: ticks.append(1)) == [-3, -1, -2]
    assert len(ticks) == 3
