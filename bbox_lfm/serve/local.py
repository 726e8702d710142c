"""`start_local`: the server on a free loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .config import Device, Dtype, ServeConfig

if TYPE_CHECKING:
    import uvicorn

    from .app import ServerApp

__all__ = ["LocalServer", "start_local"]


class LocalServer:
    """A running in-process server; use as a context manager or call `stop`.

    ``base_url`` ends with ``/v1`` and can be given to ``openai.OpenAI(base_url=...)``.
    """

    def __init__(self, *, config: ServeConfig, app: ServerApp, server: uvicorn.Server, port: int) -> None:
        self.config = config
        self.app = app
        self.port = port
        self.host = config.host
        self.model_id = app.service.engine.model_id if app.service is not None else None
        self.api_key = config.api_key
        self.base_url = f"http://{config.host}:{port}/v1"
        self._server = server
        self._thread: threading.Thread | None = None

    def _serve(self, sock: socket.socket) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="bbox-lfm-serve", daemon=True
        )
        self._thread.start()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.port}/health"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError("the bbox-lfm server thread exited before answering /health")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{url} did not answer within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving, wait for the thread, and stop the model worker."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.app.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer(base_url={self.base_url!r}, model_id={self.model_id!r})"


def start_local(
    model: str | None = None,
    *,
    port: int | None = None,
    api_key: str | None = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_logprobs: int = 20,
    startup_timeout: float = 60.0,
    **kw: Any,
) -> LocalServer:
    """Load ``model`` and serve it from a background thread; returns once /health answers.

    ``port=None`` takes a free loopback port. Further keywords are `ServeConfig` fields
    (``batch_window_ms``, ``max_batch``, ``max_body_bytes``, ``served_model_name``, ``host``).
    """
    import uvicorn

    from .app import build_app

    config = ServeConfig(
        model=model,
        api_key=api_key,
        device=device,
        dtype=dtype,
        max_logprobs=max_logprobs,
        **kw,
    )
    # Binding here (port 0 = any free one) and handing the socket to uvicorn leaves no window
    # in which another process could take the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, port or 0))
    config = replace(config, port=sock.getsockname()[1])
    app = build_app(config)
    server = uvicorn.Server(uvicorn.Config(app.asgi, log_level="warning", access_log=False, lifespan="off"))
    local = LocalServer(config=config, app=app, server=server, port=config.port)
    local._serve(sock)
    local._wait_healthy(startup_timeout)
    return local
