"""Classifier models behind the local server: ``POST /v1/bbox/classify`` and their model cards.

``bbox-lfm serve --zoo DIR`` hosts every model of a zoo folder (:mod:`bbox_lfm.zoo`), alone
(no language model is loaded, nor torch imported) or beside a language model. A request::

    POST /v1/bbox/classify
    {"model": "digits-api-00", "inputs": {"shape": [rows, 1, 8, 8], "dtype": "float32", "data": base64},
     "output": "probabilities" | "logits" | "top1"}

answers ``{"object": "classification", "model", "output", "classes", "outputs": {shape, dtype,
data}, "usage"}``: ``[rows, classes]`` float32 probabilities or logits, or ``[rows]`` class
indices for ``top1``. ``/v1/models`` lists each model with ``metadata.kind = "classifier"``,
its ``classes`` (digit labels in output order) and ``input_shape``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from ..errors import ConfigError
from ..tensors import decode, encode
from ..zoo import Zoo, load_zoo
from .errors import InvalidRequest

__all__ = ["ClassifyRequest", "ZooService", "mount_zoo"]


class ClassifyRequest(BaseModel):
    """The body of ``POST /v1/bbox/classify``."""

    model: str
    inputs: dict[str, Any]
    output: Literal["top1", "probabilities", "logits"] = "probabilities"


class ZooService:
    """What the classify route does, independent of the web framework."""

    def __init__(self, zoo: Zoo) -> None:
        self.zoo = zoo
        self.created = int(time.time())

    @classmethod
    def from_dir(cls, root: str) -> ZooService:
        """Load the zoo folder ``root``."""
        return cls(load_zoo(root))

    def has(self, model_id: str) -> bool:
        """True when ``model_id`` is one of the zoo's models."""
        return model_id in self.zoo.models

    def model_card(self, model_id: str) -> dict[str, Any]:
        """The OpenAI model object of one classifier, with its classes and input shape."""
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "bbox-lfm",
                "metadata": {**self.zoo.card(model_id), "capabilities": {"classify": "logits"}}}

    def model_cards(self) -> list[dict[str, Any]]:
        """Every classifier's card, in id order."""
        return [self.model_card(m) for m in sorted(self.zoo.models)]

    def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        """Run one classifier on every row of the request."""
        if not self.has(req.model):
            raise InvalidRequest(f"The model '{req.model}' does not exist; this zoo serves {sorted(self.zoo.models)}",
                                 param="model", status=404, code="model_not_found")
        try:
            x = decode(req.inputs)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"inputs must be a float32 tensor {{shape, dtype, data}}: {exc}",
                                 param="inputs") from exc
        shape = self.zoo.input_shape
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
            raise InvalidRequest(f"inputs must have shape [rows >= 1, {', '.join(map(str, shape))}]; "
                                 f"got {list(x.shape)}", param="inputs")
        if not np.isfinite(x).all():
            raise InvalidRequest("inputs must be finite (no NaN or inf)", param="inputs")
        model = self.zoo.models[req.model]
        z = model.logits(x)
        if req.output == "top1":
            out = z.argmax(axis=1).astype(np.float32)
        elif req.output == "logits":
            out = z
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return {"object": "classification", "model": req.model, "output": req.output, "classes": list(model.classes),
                "outputs": encode(out), "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def mount_zoo(app: Any, service: ZooService) -> None:
    """Add ``POST /v1/bbox/classify`` to the FastAPI ``app``."""

    @app.post("/v1/bbox/classify")
    def classify(req: ClassifyRequest) -> dict[str, Any]:
        return service.classify(req)
