"""Start llama-cpp-python's OpenAI-compatible server on a GGUF, for tests and benchmarks.

``llama-cpp-python`` is not a dependency of bbox-lfm (the ``llama-cpp`` extra installs it; it
builds from source, ``CMAKE_ARGS="-DGGML_NATIVE=OFF"`` for a portable build): :func:`available`
says whether it is importable, and tests skip when it is not.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["available", "llama_cpp_server"]


def available() -> bool:
    """True when ``llama_cpp`` (with its server) can be imported."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_cpp_server(model: str | Path | None = None, *, port: int | None = None, n_ctx: int = 2048,
                     timeout_s: float = 180.0, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Run ``python -m llama_cpp.server --model MODEL`` on a free port; yield its base URL
    (``http://127.0.0.1:PORT/v1``; ``port`` default: a free one); stop it on exit. ``model`` defaults to the embedded
    SmolLM2 GGUF. The server's output goes to a temporary log file, quoted on a failed start."""
    import httpx

    if model is None:
        from ..serve.loading import default_gguf

        model = default_gguf()
    port = port or _free_port()
    log = tempfile.NamedTemporaryFile(prefix="llama-cpp-server-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), *extra_args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: "
                                   f"{Path(log.name).read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)
