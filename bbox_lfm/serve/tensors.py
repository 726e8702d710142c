"""Decode and validate the soft/deep prompt tensors that travel as base64 float32."""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from ..tensors import to_wire
from .errors import InvalidRequest
from .protocol import TensorPayload
from .tokenization import PromptTensors

__all__ = ["decode_tensor", "encode_tensor", "prompt_tensors"]


def encode_tensor(array: np.ndarray) -> dict[str, object]:
    """The wire form of ``array``: ``{"shape", "dtype": "float32", "data": base64}`` (unchecked)."""
    return to_wire(array)


def decode_tensor(payload: TensorPayload, name: str, expected: list[int | str]) -> np.ndarray:
    """The float32 array in ``payload``, checked against ``expected`` (str entries are free).

    Errors name the field, what it must be and what it got, e.g.
    ``soft_prompt.shape must be [n, 576]; got [3, 10]``.
    """
    shape = payload.shape
    if (
        len(shape) != len(expected)
        or any(d < 1 for d in shape)
        or any(isinstance(e, int) and d != e for d, e in zip(shape, expected))
    ):
        raise InvalidRequest(
            f"{name}.shape must be [{', '.join(map(str, expected))}] with positive sizes; got {shape}",
            param=f"{name}.shape",
        )
    if payload.dtype != "float32":
        raise InvalidRequest(f"{name}.dtype must be 'float32'; got {payload.dtype!r}", param=f"{name}.dtype")
    try:
        raw = base64.b64decode(payload.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{name}.data is not valid base64: {exc}", param=f"{name}.data") from exc
    needed = math.prod(shape) * 4
    if len(raw) != needed:
        raise InvalidRequest(
            f"{name}.data must hold {needed} bytes (float32 of shape {shape}); got {len(raw)}",
            param=f"{name}.data",
        )
    array = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidRequest(f"{name}.data contains NaN or infinite values", param=f"{name}.data")
    return array


def _check_options(payload: TensorPayload, name: str, n: int, vocab_size: int) -> None:
    if payload.base_ids is not None:
        if len(payload.base_ids) != n:
            raise InvalidRequest(
                f"{name}.base_ids must list {n} token ids (one per soft position); got {len(payload.base_ids)}",
                param=f"{name}.base_ids",
            )
        if any(not 0 <= i < vocab_size for i in payload.base_ids):
            raise InvalidRequest(f"{name}.base_ids must be token ids in [0, {vocab_size})", param=f"{name}.base_ids")
    if payload.placeholder is not None and not payload.placeholder:
        raise InvalidRequest(f"{name}.placeholder must be a non-empty string", param=f"{name}.placeholder")


def prompt_tensors(
    soft: TensorPayload | None,
    deep: TensorPayload | None,
    *,
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
) -> PromptTensors | None:
    """Combine the request's ``soft_prompt`` and ``deep_prompt`` into one `PromptTensors`.

    A deep prompt alone inserts n zero vectors (plus its own base_ids if given), as a soft
    prompt of zeros would.
    """
    if soft is None and deep is None:
        return None
    values = deep_values = None
    if soft is not None:
        values = decode_tensor(soft, "soft_prompt", ["n", hidden_size])
        _check_options(soft, "soft_prompt", values.shape[0], vocab_size)
    if deep is not None:
        deep_values = decode_tensor(deep, "deep_prompt", [num_layers, "n", hidden_size])
        n_deep = deep_values.shape[1]
        if values is not None and values.shape[0] != n_deep:
            raise InvalidRequest(
                f"deep_prompt.shape must be [{num_layers}, {values.shape[0]}, {hidden_size}] "
                f"to match soft_prompt's {values.shape[0]} positions; got {deep.shape}",
                param="deep_prompt.shape",
            )
        _check_options(deep, "deep_prompt", n_deep, vocab_size)
        if soft is not None and (
            (deep.base_ids is not None and deep.base_ids != soft.base_ids)
            or (deep.placeholder is not None and deep.placeholder != soft.placeholder)
        ):
            raise InvalidRequest(
                "deep_prompt.base_ids and deep_prompt.placeholder must be left out (or equal "
                "soft_prompt's) when soft_prompt is given",
                param="deep_prompt",
            )
    options = soft if soft is not None else deep
    assert options is not None
    if values is None:
        assert deep_values is not None
        values = np.zeros((deep_values.shape[1], hidden_size), dtype=np.float32)
    return PromptTensors(
        n=values.shape[0],
        values=values,
        base_ids=tuple(options.base_ids) if options.base_ids is not None else None,
        placeholder=options.placeholder,
        deep=deep_values,
    )
