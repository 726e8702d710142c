"""Settings of the local provider server, shared by the CLI, `start_local` and the app."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import check
from ..models import DEFAULT_MODEL_ID, Device, Dtype

__all__ = ["DEFAULT_MODEL_ID", "Device", "Dtype", "ServeConfig"]


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Everything that shapes one server process.

    ``model`` is None for the embedded SmolLM2 GGUF, a local Hugging Face model directory, or a
    path to a ``.gguf`` file. ``dtype="auto"`` means float32: on a CPU without bfloat16 matrix
    units bfloat16 is slower than float32 and moves log-probabilities beyond the tolerance
    accepted for a default (``benchmarks/server.py`` measures both; docs/benchmarks.md has the
    figures).
    ``batch_window_ms=0`` switches cross-request batching off; ``max_batch`` caps the rows of
    one forward pass (1 = every sequence alone).
    """

    model: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: Device = "auto"
    dtype: Dtype = "auto"
    max_logprobs: int = 20
    batch_window_ms: float = 5.0
    max_batch: int = 64
    max_body_bytes: int = 64 * 1024 * 1024
    tokenizer_cache_size: int = 65536
    #: a zoo folder of classifier models to serve (``bbox-lfm zoo build``); ``lm=False`` serves it alone
    zoo: str | None = None
    lm: bool = True

    def __post_init__(self) -> None:
        check(self.device in ("auto", "cpu", "cuda"), "device", "one of auto, cpu, cuda", self.device)
        check(self.dtype in ("auto", "float32", "bfloat16"), "dtype", "one of auto, float32, bfloat16", self.dtype)
        check(self.max_logprobs >= 0, "max_logprobs", ">= 0", self.max_logprobs)
        check(self.batch_window_ms >= 0, "batch_window_ms", ">= 0", self.batch_window_ms)
        check(self.max_batch >= 1, "max_batch", ">= 1", self.max_batch)
        check(self.max_body_bytes >= 1, "max_body_bytes", ">= 1", self.max_body_bytes)
        check(self.lm or bool(self.zoo), "lm", "True unless a zoo is served", self.lm)
        check(0 <= self.port < 65536, "port", "in 0..65535", self.port)
