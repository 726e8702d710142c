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

from ..errors import check
from ._common import LOCAL_REPLAY_URL

__all__ = ["add_args", "is_zoo_method", "run"]


def run(args: argparse.Namespace, method_class: Any, sets: dict[str, Any]) -> int:
    """Meta-train, meta-test, write the results (and the meta-model with ``--save-model``)."""
    from ..client import Client
    from ..methods.bidf_mkd import meta_test_result
    from ..results import write_result
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
            result = meta_test_result(method, settings, provider=client.profile.name,
                                      model=f"zoo {args.zoo} ({len(method.apis_)} APIs)",
                                      wall_s=time.perf_counter() - t0)
            write_result(args.out, result)
            if args.save_model:
                method.save(args.save_model)
            print(" | ".join(f"{s['way']}-way {s['shot']}-shot {100 * s['accuracy']:.1f} ± {100 * s['ci95']:.1f} %"
                             for s in settings) + f"; calls {result.budget_spent['calls']}, requests sent "
                  f"{result.budget_spent['requests']} (cache hits {result.budget_spent['cache_hits']}); wall {result.wall_s:.1f}s -> {args.out}")
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
