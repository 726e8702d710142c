"""A distilled student beside its teacher: accuracy of each, how often they agree, and speed.

:func:`student_vs_teacher` asks the teacher (through the client, so its answers come from the
cache where they are stored) and the student (locally) about the same examples. Speed is
seconds per example with one example at a time on each side: the teacher's is the provider's
answer time for that request (a cached answer keeps the time it took when it was fetched, so a
replay reports the recording's teacher), the student's is measured here, now, with its
embedding cache off, on one CPU thread: one short text gains nothing from more, and on a busy
machine two intra-op threads contend (measured on the project's shared 2-core machine at a load
of 25: 1.67 s an example on two threads, 0.07 s on one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import check
from .teacher import as_input

__all__ = ["TeacherComparison", "student_vs_teacher"]


@dataclass(frozen=True)
class TeacherComparison:
    """Student and teacher on ``n`` examples: accuracies, agreement (same predicted label) and
    seconds per example, one example at a time (``teacher_cached``: the teacher's times are
    those recorded with its cached answers)."""

    n: int
    teacher_accuracy: float
    student_accuracy: float
    agreement: float
    teacher_s_per_example: float
    student_s_per_example: float
    teacher_cached: bool

    @property
    def speedup(self) -> float:
        """How many times faster the student answers one example than the teacher."""
        return self.teacher_s_per_example / self.student_s_per_example

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON (the speedup included)."""
        return {**asdict(self), "speedup": self.speedup}


def student_vs_teacher(method: Any, client: Any, examples: Sequence[Any], *, task: Any = None) -> TeacherComparison:
    """Compare a fitted :class:`~bbox_lfm.methods.distill.Distill` with its teacher on labelled
    ``examples`` (see the module docstring). The teacher gets one request at a time; ``task`` is
    needed only for a loaded method (one fitted in this process knows its teacher)."""
    check(getattr(method, "student_", None) is not None, "method", "a fitted (or loaded) distill method",
          type(method).__name__)
    check(len(examples) > 0, "examples", "at least one labelled example", 0)
    teacher = getattr(method, "teacher_", None)
    if teacher is None:  # a loaded method: its teacher is the same template on ``task``
        check(task is not None, "task", "the task the method was distilled on (a loaded method has no teacher_)",
              task)
        teacher = method.teacher(task)
    inputs = [as_input(ex) for ex in examples]
    y = np.array([ex.label for ex in examples])
    hits_before = client.budget.cache_hits
    lp, _misses, latencies = teacher.label_timed(client, inputs, max_concurrency=1)
    cached = client.budget.cache_hits - hits_before == len(inputs)
    from ..students.minilm import _one_thread

    student = method.student_
    times = []
    preds = []
    with _one_thread():
        student.predict_proba(inputs[:1], progress=False, cache=False)  # warm-up: the encoder is loaded once
        for x in inputs:
            t0 = time.perf_counter()
            preds.append(int(student.predict_proba([x], progress=False, cache=False).argmax()))
            times.append(time.perf_counter() - t0)
    t_pred, s_pred = lp.argmax(axis=1), np.array(preds)
    return TeacherComparison(n=len(inputs), teacher_accuracy=float(np.mean(t_pred == y)),
                             student_accuracy=float(np.mean(s_pred == y)), agreement=float(np.mean(s_pred == t_pred)),
                             teacher_s_per_example=float(np.mean(latencies)),
                             student_s_per_example=float(np.mean(times)), teacher_cached=cached)
