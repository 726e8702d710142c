"""Float tensors as the local server's request fields: ``{shape, dtype, data}``.

``data`` is base64 of the little-endian float32 bytes in C order. The encoding is exact and
byte-stable: the same array gives the same string in every process, so a request carrying a
tensor has one cache key and replays.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ConfigError, check

__all__ = ["decode", "encode", "to_wire"]

_DTYPE = "float32"


def to_wire(array: Any) -> dict[str, Any]:
    """The wire form ``{"shape", "dtype": "float32", "data": base64 of little-endian bytes}``,
    unchecked (the server's tests use it to send NaN on purpose)."""
    a = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
    return {"shape": list(a.shape), "dtype": _DTYPE, "data": base64.b64encode(a.tobytes()).decode("ascii")}


def encode(array: Any, **fields: Any) -> dict[str, Any]:
    """``array`` as ``{"shape", "dtype": "float32", "data"}`` plus any extra ``fields``
    (the server's ``base_ids`` or ``placeholder``); NaN and inf are refused."""
    check(bool(np.isfinite(np.asarray(array, dtype=np.float64)).all()), "array", "finite values only", "NaN or inf")
    return {**to_wire(array), **fields}


def decode(spec: Mapping[str, Any]) -> np.ndarray:
    """The float32 array that :func:`encode` wrote."""
    check(spec.get("dtype", _DTYPE) == _DTYPE, "dtype", f"{_DTYPE!r}", spec.get("dtype"))
    shape = tuple(int(s) for s in spec["shape"])
    raw = base64.b64decode(spec["data"], validate=True)
    if len(raw) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise ConfigError(f"data must hold {int(np.prod(shape))} float32 values for shape {list(shape)}; "
                          f"got {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
