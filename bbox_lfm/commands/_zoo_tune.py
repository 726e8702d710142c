"""``bbox-lfm tune bidf-mkd --zoo DIR``: methods that learn from a zoo of classifier APIs.

    bbox-lfm zoo build zoo/
    bbox-lfm tune bidf-mkd --zoo zoo/ --budget 400 --out r.json --save-model meta.json
    bbox-lfm tune bidf-mkd --zoo zoo/ --budget 400 --out r.json --cache-mode replay   # sends nothing

Without ``--base-url`` the zoo is served in-process for the run (no language model is loaded);
with ``--cache-mode replay`` nothing is served at all. ``--zoo`` also names the cache namespace
(the manifest's hash), so answers replay whatever port served them. After meta-training, the
meta-model is tested on ``--episodes`` 3-way 1-shot and 5-shot episodes of digits 6-9; the
results file is the shared format, ``eval.accuracy`` being the 1-shot mean (both settings with
their 95 % intervals under ``eval.settings``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..budget import Budget
from ..errors import check
from ._common import LOCAL_REPLAY_URL

__all__ = ["add_args", "is_zoo_method", "run"]


def run(args: argparse.Namespace, method_class: Any, sets: dict[str, Any]) -> int:
    """Meta-train, meta-test, write the results (and the meta-model with ``--save-model``)."""
    from ..client import Client
    from ..results import RunResult, write_result
    from ..zoo import zoo_namespace

    check(args.task is None and args.task_spec is None, "--task / --task-spec",
          f"absent for {method_class.name} (it learns from the --zoo APIs)", args.task or args.task_spec)
    check(args.zoo is not None, "--zoo", f"a zoo folder for {method_class.name} (`bbox-lfm zoo build DIR`)", None)
    if sets.get("true_gradient"):
        sets.setdefault("zoo_dir", args.zoo)
    method = method_class(budget=args.budget, seed=args.seed, **sets)
    print(f"{method.name} ({method.variant}) on zoo {args.zoo}, seed {args.seed}: projected calls "
          f"{method.projected_calls()} (budget {args.budget}; one call = one classification request)", flush=True)
    server = None
    kw: dict[str, Any] = {"provider": args.provider or "bbox-lfm", "cache": args.cache, "cache_mode": args.cache_mode,
                          "api_key": args.api_key, "cache_namespace": zoo_namespace(args.zoo),
                          "max_concurrency": args.max_concurrency}
    t0 = time.perf_counter()
    try:
        if args.base_url:
            client = Client(args.base_url, **kw)
        elif args.cache_mode == "replay":
            client = Client(LOCAL_REPLAY_URL, **kw)  # nothing is sent: a slipped query fails at once
        else:
            from ..serve import start_local

            server = start_local(zoo=args.zoo, lm=False)
            client = Client(server.base_url, **kw)
        with client:
            method.fit(client, progress=not args.no_progress)
            settings = [method.meta_test(way=method.way_, shot=shot, episodes=args.episodes, seed=0)
                        for shot in (1, 5)]
            result = RunResult(
                method=method.name, config=method.get_config(), task=f"digits 6-9, {method.way_}-way meta-test",
                seed=args.seed, provider=client.profile.name, model=f"zoo {args.zoo} ({len(method.apis_)} APIs)",
                budget_spent=dict(method.budget_spent_), eval_spent=Budget().summary(),
                wall_s=round(time.perf_counter() - t0, 3),
                dev={"accuracy": method.curve_[-1].get("dev_accuracy") if method.curve_ else None, "f1": None,
                     "meaning": "adapted meta-model's agreement with the API on the last recovered query set"},
                eval={"accuracy": settings[0]["accuracy"], "f1": None, "ci95": settings[0]["ci95"],
                      "settings": settings},
                curve=list(method.curve_), prompt=None,
                extra={"method": dict(method.extra_), "calls_meaning": method.extra_["calls_meaning"]})
            write_result(args.out, result)
            if args.save_model:
                method.save(args.save_model)
            print(" | ".join(f"{s['way']}-way {s['shot']}-shot {s['accuracy']:.2f} ± {s['ci95']:.2f}"
                             for s in settings) + f"; calls sent {result.budget_spent['calls']} (cache hits "
                  f"{result.budget_spent['cache_hits']}); wall {result.wall_s:.1f}s -> {args.out}")
    finally:
        if server is not None:
            server.stop()
    return 0


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags only zoo methods read."""
    g = p.add_argument_group("classifier zoo (bidf-mkd)")
    g.add_argument("--zoo", default=None, metavar="DIR", help="zoo folder (`bbox-lfm zoo build`); served "
                   "in-process unless --base-url names a server already serving it")
    g.add_argument("--episodes", type=int, default=600, help="meta-test episodes per setting (default 600)")
    g.add_argument("--save-model", default=None, metavar="PATH", help="write the meta-model (JSON, no pickle)")


def is_zoo_method(method_class: Any) -> bool:
    """True for methods that learn from classifier APIs rather than a text task."""
    return getattr(method_class, "task_kind", "text") == "classifier-zoo"
