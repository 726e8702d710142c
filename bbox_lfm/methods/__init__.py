"""Methods: one readable module per method, all named in one registry.

``get(name)`` returns a method class; ``names()`` lists them. A module registers its class with
``@register``; the registry imports the modules listed in ``_MODULES`` on first use, so
``import bbox_lfm.methods`` stays light.
"""

from __future__ import annotations

import importlib

from .base import Method, register, registry

__all__ = ["Method", "get", "names", "register"]

_MODULES = ("baselines", "bbt", "bbtv2", "bdpl", "bidf_mkd", "distill", "promptboosting", "rlprompt")


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":
                raise


def names() -> list[str]:
    """Every registered method name, sorted."""
    _load_all()
    return sorted(registry)


def get(name: str) -> type[Method]:
    """The method class registered as ``name``."""
    _load_all()
    if name not in registry:
        from ..errors import ConfigError

        raise ConfigError(f"method must be one of {sorted(registry)}; got {name!r}")
    return registry[name]
