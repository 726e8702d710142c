"""A zoo of small classifier APIs, built from scikit-learn's bundled digits (8x8, 10 classes).

BiDf-MKD learns from many black-box classifiers, each trained on a task of its own. The zoo
here is its small-scale stand-in: ``n_models`` MLPs, each on a seeded random ``way``-class
subset of the meta-training classes 0-5; classes 6-9 never reach any API and are kept for
meta-testing. A zoo is a folder::

    zoo.json              manifest: input shape, class split, one entry per model
    <model id>.safetensors the weights (no pickle)

``bbox-lfm zoo build DIR`` writes one; ``bbox-lfm serve --zoo DIR`` serves it
(:mod:`bbox_lfm.serve.zoo`). The forward pass is numpy (float64), so serving needs no torch;
:func:`torch_classifier` rebuilds the same network in torch for the white-box ablation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, check

__all__ = ["INPUT_SHAPE", "META_TEST_CLASSES", "META_TRAIN_CLASSES", "Zoo", "ZooModel", "build_zoo", "digits",
           "load_zoo", "torch_classifier", "zoo_namespace"]

INPUT_SHAPE = (1, 8, 8)
META_TRAIN_CLASSES = (0, 1, 2, 3, 4, 5)
META_TEST_CLASSES = (6, 7, 8, 9)
MANIFEST = "zoo.json"


def digits(classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every digits image of ``classes`` as float32 ``[n, 1, 8, 8]`` in [0, 1], and its digit label."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, list(classes))
    x = (data.data[keep] / 16.0).astype(np.float32).reshape(-1, *INPUT_SHAPE)
    return x, data.target[keep].astype(np.int64)


@dataclass(frozen=True)
class ZooModel:
    """One classifier: an MLP over the flattened input, answering over ``classes`` (digit labels,
    in output order). ``weights`` maps ``w0, b0, w1, b1, ...`` to float32 arrays (``w`` is
    [out, in], as torch's Linear)."""

    id: str
    classes: tuple[int, ...]
    weights: dict[str, np.ndarray] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> int:
        """Number of linear layers."""
        return len(self.weights) // 2

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``[rows, len(classes)]`` logits in float64 (ReLU between the layers)."""
        h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for i in range(self.layers):
            h = h @ self.weights[f"w{i}"].astype(np.float64).T + self.weights[f"b{i}"].astype(np.float64)
            if i < self.layers - 1:
                h = np.maximum(h, 0.0)
        return h


@dataclass(frozen=True)
class Zoo:
    """A loaded zoo: its folder, input shape, class split and models by id."""

    root: Path
    input_shape: tuple[int, ...]
    meta_train_classes: tuple[int, ...]
    meta_test_classes: tuple[int, ...]
    models: dict[str, ZooModel]

    def card(self, model_id: str) -> dict[str, Any]:
        """What ``/v1/models`` says about one model."""
        m = self.models[model_id]
        return {"kind": "classifier", "classes": list(m.classes), "num_classes": len(m.classes),
                "input_shape": list(self.input_shape), "input_range": [0.0, 1.0], **m.info}


def load_zoo(root: str | Path) -> Zoo:
    """Read a zoo folder written by :func:`build_zoo`."""
    from safetensors.numpy import load_file

    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"zoo must be a folder holding {MANIFEST} (from `bbox-lfm zoo build`); got {str(root)!r}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    models = {}
    for entry in manifest["models"]:
        weights = load_file(str(root / entry["file"]))
        info = {k: v for k, v in entry.items() if k not in ("id", "classes", "file")}
        models[entry["id"]] = ZooModel(id=entry["id"], classes=tuple(entry["classes"]), weights=weights, info=info)
    check(len(models) > 0, "zoo", "a folder with at least one model", str(root))
    return Zoo(root=root, input_shape=tuple(manifest["input_shape"]),
               meta_train_classes=tuple(manifest["meta_train_classes"]),
               meta_test_classes=tuple(manifest["meta_test_classes"]), models=models)


def zoo_namespace(root: str | Path) -> str:
    """The cache namespace of a zoo's APIs: its manifest's hash, so answers recorded against one
    server (any port) replay against another serving the same zoo, or offline."""
    import hashlib

    digest = hashlib.sha256((Path(root) / MANIFEST).read_bytes()).hexdigest()[:16]
    return f"bbox-lfm-zoo:{digest}"


def torch_classifier(model: ZooModel) -> Any:
    """The same network as a torch module (float32, eval mode): the API opened up."""
    import torch

    layers: list[Any] = [torch.nn.Flatten()]
    for i in range(model.layers):
        w = torch.from_numpy(np.array(model.weights[f"w{i}"], dtype=np.float32))
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(torch.from_numpy(np.array(model.weights[f"b{i}"], dtype=np.float32)))
        layers.append(lin)
        if i < model.layers - 1:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def build_zoo(root: str | Path, *, n_models: int = 20, way: int = 3, hidden: int = 64, epochs: int = 300,
              seed: int = 0, progress: bool = False) -> Zoo:
    """Train ``n_models`` classifiers, each on a seeded random ``way``-class subset of 0-5.

    Each model sees 80 % of its classes' images (a seeded split) and reports its accuracy on the
    other 20 % as ``heldout_accuracy``. Full-batch Adam (lr 1e-2, ``epochs`` steps).
    """
    import torch
    from safetensors.numpy import save_file
    from tqdm.auto import tqdm

    check(n_models >= 1, "n_models", ">= 1", n_models)
    check(2 <= way <= len(META_TRAIN_CLASSES), "way", f"in 2..{len(META_TRAIN_CLASSES)}", way)
    check(hidden >= 1, "hidden", ">= 1", hidden)
    check(epochs >= 1, "epochs", ">= 1", epochs)
    torch.set_num_threads(1)  # nets this small run slower on more threads
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    x_all, y_all = digits(META_TRAIN_CLASSES)
    rng = np.random.default_rng(seed)
    entries = []
    for k in tqdm(range(n_models), desc="zoo build", unit="model", disable=not progress):
        classes = tuple(int(c) for c in sorted(rng.choice(META_TRAIN_CLASSES, size=way, replace=False)))
        keep = np.isin(y_all, classes)
        x, y = x_all[keep], np.searchsorted(classes, y_all[keep])
        order = rng.permutation(len(x))
        cut = int(0.8 * len(x))
        tr, te = order[:cut], order[cut:]
        torch.manual_seed(seed * 1000 + k)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x.shape[1] * x.shape[2] * x.shape[3], hidden),
                                  torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, way))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
        for _ in range(epochs):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(torch.from_numpy(x[te])).argmax(1).numpy() == y[te]).mean())
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        weights = {}
        for i, lin in enumerate(linears):
            weights[f"w{i}"] = lin.weight.detach().numpy().astype(np.float32)
            weights[f"b{i}"] = lin.bias.detach().numpy().astype(np.float32)
        model_id = f"digits-api-{k:02d}"
        save_file(weights, str(root / f"{model_id}.safetensors"))
        entries.append({"id": model_id, "classes": list(classes), "file": f"{model_id}.safetensors",
                        "hidden": hidden, "epochs": epochs, "heldout_accuracy": round(acc, 4)})
    manifest = {"name": root.name, "dataset": "sklearn.datasets.load_digits", "input_shape": list(INPUT_SHAPE),
                "meta_train_classes": list(META_TRAIN_CLASSES), "meta_test_classes": list(META_TEST_CLASSES),
                "way": way, "seed": seed, "models": entries}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return load_zoo(root)
