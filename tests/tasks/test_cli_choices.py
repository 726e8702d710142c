"""The CLI's choices come from the registries: a method or student registered is offered at once."""

from __future__ import annotations

import argparse

from bbox_lfm.cli import build_parser
from bbox_lfm.methods import names
from bbox_lfm.methods.baselines import baseline_names
from bbox_lfm.methods.distill import SELECTIONS, SIGNALS, TRANSFERS
from bbox_lfm.students import STUDENTS


def _choices(command: str, dest: str) -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if a.dest == dest)
    assert action.choices is not None
    return list(action.choices)


def test_choices_are_the_registries() -> None:
    assert _choices("tune", "method") == names()
    assert _choices("eval", "method") == baseline_names() == ["best-of-n", "calibrated", "icl", "zero-shot"]
    assert _choices("distill", "student") == sorted(STUDENTS)
    assert _choices("distill", "transfer") == list(TRANSFERS)
    assert _choices("distill", "selection") == list(SELECTIONS)
    assert _choices("distill", "teacher_signal") == list(SIGNALS)
