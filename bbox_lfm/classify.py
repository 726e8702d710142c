"""Classification queries: classifier models behind the same client as language models.

A classification is a :class:`~bbox_lfm.types.Query` with ``endpoint="classify"``: the rows go
out as one float32 tensor (:mod:`bbox_lfm.tensors`, exact and byte-stable, so a repeated query
has one cache key), and the answer is one tensor of probabilities, logits or top-1 indices. It
passes through cache, budget, rate limit and retry like every other query: one request is one
call, and each row is one sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CapabilityError, MalformedResponseError, check
from .tensors import decode, encode
from .types import CLASSIFY_OUTPUTS, Query

if TYPE_CHECKING:
    from .client import Client

__all__ = ["classify", "classify_query"]


def classify_query(inputs: Any, *, model: str | None, output: str = "probabilities") -> Query:
    """The query that classifies every row of ``inputs`` (shape ``[rows, *input_shape]``)."""
    check(output in CLASSIFY_OUTPUTS, "output", f"one of {CLASSIFY_OUTPUTS}", output)
    x = np.asarray(inputs, dtype=np.float32)
    check(x.ndim >= 2 and x.shape[0] >= 1, "inputs", "an array [rows >= 1, *input_shape]", list(x.shape))
    return Query(endpoint="classify", model=model, max_tokens=0, extra={"inputs": encode(x), "output": output})


def classify(client: Client, inputs: Any, *, model: str | None = None, output: str = "probabilities") -> np.ndarray:
    """:meth:`Client.classify`: send one classification query and decode its answer."""
    caps = client.capabilities
    if not caps.classify_allows(output):
        raise CapabilityError(f"classify={output!r}", client.profile.name, needed_by="a classification query",
                              hint=(f"it answers classifications with at most {caps.classify!r}" if caps.classify
                                    else "bbox-lfm's local server with a zoo (`bbox-lfm serve --zoo DIR`) has it"))
    query = classify_query(inputs, model=model, output=output)
    response = client.send(query)
    extra = response.choices[0].extra if response.choices else {}
    try:
        out = decode(extra["outputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponseError(f"the classify answer of model {query.model!r} has no outputs tensor") from exc
    rows = query.sequences
    if out.shape[0] != rows or (output == "top1") != (out.ndim == 1):
        raise MalformedResponseError(f"the classify answer of model {query.model!r} must have {rows} rows of "
                                     f"{output!r}; got shape {list(out.shape)}")
    return out
