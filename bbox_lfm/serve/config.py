"""Settings of the local provider server, shared by the CLI, `start_local` and the app."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import DEFAULT_MODEL_ID, Device, Dtype

__all__ = ["DEFAULT_MODEL_ID", "Device", "Dtype", "ServeConfig"]


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Everything that shapes one server process.

    ``model`` is None for the embedded SmolLM2 GGUF, a local Hugging Face model directory, or a
    path to a ``.gguf`` file. ``dtype="auto"`` means float32: on the 2-core AVX2 CPU this was
    built on (no AMX), bfloat16 ran at 0.15-0.55x the speed of float32 and its log-probabilities
    differed by up to 0.39 nats (0.10 on label words), beyond the 0.05 tolerance we accept for a
    default (``benchmarks/server.py`` measures both).
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
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be one of auto, cpu, cuda; got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be one of auto, float32, bfloat16; got {self.dtype!r}")
        if self.max_logprobs < 0:
            raise ValueError(f"max_logprobs must be >= 0; got {self.max_logprobs}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0; got {self.batch_window_ms}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {self.max_batch}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1; got {self.max_body_bytes}")
        if not self.lm and not self.zoo:
            raise ValueError("lm must be True unless a zoo is served; got lm=False and no zoo")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535; got {self.port}")
