"""Dynamic batching: one worker thread owns the model and merges queued scoring work.

Request threads call `Batcher.score` (rows whose log-probs they need) or `Batcher.call` (any
other model work: generation, hidden statistics) and block until the worker has done it. The
worker takes the oldest job; for scoring it then waits up to ``window_s`` for more scoring
jobs, up to ``max_batch`` rows, sorts all their rows by length (less padding) and runs them in
forward passes of at most ``max_batch`` rows, or cuts them as a ``plan`` function says (the
engine's plan keeps rows that share a long prefix together, so the prefix is computed once).
``window_s=0`` turns merging across requests off: each request's rows are then run on their own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Batcher"]

R = TypeVar("R")
T = TypeVar("T")


@dataclass
class _ScoreJob(Generic[R]):
    rows: list[Any]
    future: Future[list[R]] = field(default_factory=Future)


@dataclass
class _CallJob:
    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


@dataclass
class _MergeJob:
    key: Any
    item: Any
    fn: Callable[[list[Any]], list[Any]]
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


class Batcher(Generic[R]):
    """Runs ``forward(rows) -> results`` (one result per row) on a single worker thread.

    ``length(row)`` orders rows before they are cut into forward passes; ``plan(rows,
    max_batch)``, when given, replaces that: it returns the forward passes as lists of row indices.
    """

    def __init__(
        self,
        forward: Callable[[list[Any]], list[R]],
        *,
        length: Callable[[Any], int],
        window_s: float = 0.005,
        max_batch: int = 64,
        plan: Callable[[list[Any], int], list[list[int]]] | None = None,
    ) -> None:
        self._forward = forward
        self._length = length
        self._plan = plan
        self.window_s = window_s
        # merged jobs (generation) run for seconds, so waiting longer for company costs nothing
        self.merge_window_s = max(window_s, 0.05) if window_s > 0 else 0.0
        self.max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self.forward_calls = 0  # read by the benchmark and tests: forwards actually run
        self.merged_jobs = 0  # `merge` jobs that ran together with at least one other
        self._thread = threading.Thread(target=self._loop, name="bbox-lfm-batcher", daemon=True)
        self._thread.start()

    def score(self, rows: list[Any]) -> list[R]:
        """Results for ``rows``, computed in a shared forward pass with other queued rows."""
        if not rows:
            return []
        job: _ScoreJob[R] = _ScoreJob(rows)
        self._queue.put(job)
        return job.future.result()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread, alone, and return its result."""
        job = _CallJob(fn)
        self._queue.put(job)
        result: T = job.future.result()
        return result

    def merge(self, key: Any, item: Any, fn: Callable[[list[Any]], list[Any]], *, size: int = 1) -> Any:
        """``fn([item, ...])[i]`` for this item, where the list holds every queued item with an
        equal ``key`` (up to ``max_batch`` in total ``size``) -- generation requests with the same
        settings decode together, one forward pass per step for all of them."""
        job = _MergeJob(key, (item, size), fn)
        self._queue.put(job)
        return job.future.result()

    def close(self) -> None:
        """Finish queued work and stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        pending: Any = None
        while True:
            job = pending if pending is not None else self._queue.get()
            pending = None
            if job is _STOP:
                return
            if isinstance(job, _CallJob):
                self._run_call(job)
                continue
            if isinstance(job, _MergeJob):
                pending = self._run_merged(job)
                continue
            # a score job: any queued score jobs join it, whatever their size
            group, pending = self._gather(job, len(job.rows), self.window_s,
                                          lambda nxt, _size: len(nxt.rows) if isinstance(nxt, _ScoreJob) else None)
            self._run_scores(group)

    def _gather(self, first: Any, size: int, window_s: float,
                joins: Callable[[Any, int], int | None]) -> tuple[list[Any], Any]:
        """``first`` and the queued jobs that join it within ``window_s``, while the rows so far are
        under ``max_batch``. ``joins(job, size)`` is the job's row count, or None when it cannot join;
        that job is returned as pending (it runs next)."""
        group = [first]
        deadline = time.monotonic() + window_s
        while window_s > 0 and size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                # Past the deadline, still take what is already queued, without waiting.
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            rows = joins(nxt, size)
            if rows is None:
                return group, nxt
            group.append(nxt)
            size += rows
        return group, None

    def _run_call(self, job: _CallJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request thread
            job.future.set_exception(exc)

    def _run_merged(self, first: _MergeJob) -> Any:
        """Collect queued jobs with ``first``'s key for up to ``merge_window_s``, run them in one ``fn``
        call; returns a job taken from the queue that could not join (to run next)."""
        def joins(nxt: Any, size: int) -> int | None:
            fits = isinstance(nxt, _MergeJob) and nxt.key == first.key and size + nxt.item[1] <= self.max_batch
            return nxt.item[1] if fits else None

        group, pending = self._gather(first, first.item[1], self.merge_window_s, joins)
        group = [job for job in group if job.future.set_running_or_notify_cancel()]
        if len(group) > 1:
            self.merged_jobs += len(group)
        try:
            results = first.fn([job.item[0] for job in group]) if group else []
        except BaseException as exc:  # noqa: BLE001 - retried per job below
            if len(group) == 1:
                group[0].future.set_exception(exc)
            else:  # one bad job must not fail the others it was merged with
                for job in group:
                    try:
                        job.future.set_result(job.fn([job.item[0]])[0])
                    except BaseException as one:  # noqa: BLE001
                        job.future.set_exception(one)
            return pending
        for job, result in zip(group, results):
            job.future.set_result(result)
        return pending

    def _run_scores(self, group: list[_ScoreJob[R]]) -> None:
        try:
            results = self._forward_sorted([row for job in group for row in job.rows])
        except BaseException as exc:  # noqa: BLE001 - retried per job below
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            # Run each job alone so one bad job cannot fail the others it was merged with.
            for job in group:
                self._run_scores([job])
            return
        start = 0
        for job in group:
            job.future.set_result(results[start : start + len(job.rows)])
            start += len(job.rows)

    def _chunks(self, rows: list[Any]) -> list[list[int]]:
        if self._plan is not None:
            return self._plan(rows, self.max_batch)
        order = sorted(range(len(rows)), key=lambda i: self._length(rows[i]))
        return [order[start : start + self.max_batch] for start in range(0, len(order), self.max_batch)]

    def _forward_sorted(self, rows: list[Any]) -> list[R]:
        results: list[Any] = [None] * len(rows)
        for chunk in self._chunks(rows):
            self.forward_calls += 1
            for index, result in zip(chunk, self._forward([rows[i] for i in chunk])):
                results[index] = result
        return results
