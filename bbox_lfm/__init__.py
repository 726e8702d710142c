"""bbox-lfm: learn from models that can only be queried.

``import bbox_lfm`` is fast and offline: names are imported on first use, and torch,
transformers and the ``openai`` SDK only where they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Budget": "bbox_lfm.budget",
    "Capabilities": "bbox_lfm.types",
    "Choice": "bbox_lfm.types",
    "Client": "bbox_lfm.client",
    "MockAdapter": "bbox_lfm.adapters.mock",
    "ProviderProfile": "bbox_lfm.profiles",
    "Query": "bbox_lfm.types",
    "Response": "bbox_lfm.types",
    "Scores": "bbox_lfm.scoring",
    "TokenLogprobs": "bbox_lfm.types",
    "Usage": "bbox_lfm.types",
    "load_profile": "bbox_lfm.profiles",
}

__all__ = sorted([*_EXPORTS, "__version__"])  # noqa: PLE0605 -- the lazy exports, listed once in _EXPORTS


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bbox_lfm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
