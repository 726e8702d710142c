"""The start-point flags ``tune``, ``eval`` and ``distill`` share (see :mod:`bbox_lfm.tasks.start`).

    --template "Review: {text}\\nSentiment:" --label-words negative positive
    --template-index 0                 # the task's first template: the papers' own, for reproductions
    --prompt-from runs/best-of-n.json  # an earlier run: its template, label words and prompt

Without any of them a run starts from the task's best manual template as measured
(``task.best_template``), else its first template.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import check

__all__ = ["add_start_args", "start_from_args"]


def add_start_args(p: argparse.ArgumentParser, *, template_help: str | None = None) -> None:
    """``--template``, ``--label-words``, ``--template-index``, ``--prompt-from``."""
    g = p.add_argument_group("start prompt (default: the task's best manual template as measured)")
    g.add_argument("--template", default=None,
                   help=template_help or "a template of your own with {text} (and {text_pair}, {prompt})")
    g.add_argument("--label-words", nargs="+", default=None,
                   help="one word per label, scored right after the template (a leading space is added when "
                        "missing); default: the template's own")
    g.add_argument("--template-index", type=int, default=None,
                   help="one of the task's manual templates (0 = its first, the papers' template)")
    g.add_argument("--prompt-from", default=None,
                   help="a results JSON of an earlier run (best-of-n, zero-shot, icl, bdpl, bbt, ...): start from "
                        "its template, label words and prompt")


def start_from_args(args: argparse.Namespace, task: Any, *, announce: bool = True) -> Any:
    """The :class:`~bbox_lfm.tasks.Start` the flags name, printed to stderr when ``announce``."""
    from ..tasks import start_point

    given = [f for f, v in (("--template", args.template), ("--template-index", args.template_index),
                            ("--prompt-from", args.prompt_from)) if v is not None]
    check(len(given) <= 1, "--template / --template-index / --prompt-from", "at most one of them", given)
    start = start_point(task, template=args.template, label_words=args.label_words,
                        template_index=args.template_index, prompt_from=args.prompt_from)
    if announce:
        print(f"start: {start.template!r} with {list(start.label_words)} ({start.origin})", file=sys.stderr,
              flush=True)
    return start
