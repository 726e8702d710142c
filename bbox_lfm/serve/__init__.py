"""The local provider: an OpenAI-compatible server for Hugging Face causal LMs.

Routes: ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` and
``/v1/bbox/hidden_stats``. Extensions travel in the request body (the ``openai`` client's
``extra_body``): ``soft_prompt`` ([n, D] float32, base64), ``deep_prompt`` ([L, n, D]) and
``label_words`` (exact log-probabilities of continuations, returned as ``label_logprobs``).

Importing this package is cheap: torch, transformers and FastAPI load only when a server
starts (`start_local`, `cli_main`).
"""

from .cli import cli_main
from .config import DEFAULT_MODEL_ID, ServeConfig
from .local import LocalServer, start_local
from .tensors import encode_tensor

__all__ = [
    "DEFAULT_MODEL_ID",
    "LocalServer",
    "ServeConfig",
    "cli_main",
    "encode_tensor",
    "start_local",
]
