"""``bbox-lfm zoo build DIR``: train a zoo of classifier APIs from scikit-learn's digits.

    bbox-lfm zoo build zoo/ --models 20 --seed 0
    bbox-lfm serve --zoo zoo/            # serves them alone (no language model is loaded)
"""

from __future__ import annotations

import argparse

from ._common import print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the command."""
    p = sub.add_parser("zoo", help="build a zoo of classifier APIs (digits) to serve with `serve --zoo`")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    b = zsub.add_parser("build", help="train N small classifiers, each on a random subset of digits 0-5")
    b.add_argument("dir", help="output folder (zoo.json + one .safetensors per model)")
    b.add_argument("--models", type=int, default=20, help="number of classifiers (default 20)")
    b.add_argument("--way", type=int, default=3, help="classes per classifier (default 3)")
    b.add_argument("--hidden", type=int, default=64, help="hidden width of each MLP (default 64)")
    b.add_argument("--epochs", type=int, default=300, help="full-batch Adam steps per model (default 300)")
    b.add_argument("--seed", type=int, default=0, help="seed of the class subsets, splits and inits (default 0)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Train the zoo and print its models."""
    from ..zoo import build_zoo

    zoo = build_zoo(args.dir, n_models=args.models, way=args.way, hidden=args.hidden, epochs=args.epochs,
                    seed=args.seed, progress=not args.no_progress)
    print_json({"dir": str(zoo.root), "input_shape": list(zoo.input_shape),
                "models": {m.id: {"classes": list(m.classes), "heldout_accuracy": m.info.get("heldout_accuracy")}
                           for m in zoo.models.values()}})
    return 0
