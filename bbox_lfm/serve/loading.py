"""The served model's loading, which lives in :mod:`bbox_lfm.models` (shared with the methods
that run a model in-process); re-exported here for the server's modules."""

from ..models import LoadedModel, converted_dir, default_gguf, load_model, resolve_device, resolve_dtype

__all__ = ["LoadedModel", "converted_dir", "default_gguf", "load_model", "resolve_device", "resolve_dtype"]
