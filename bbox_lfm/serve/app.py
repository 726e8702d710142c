"""The FastAPI application: routes, bearer-key check, body-size limit and OpenAI error shape."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import Batcher
from .config import ServeConfig
from .engine import Engine, Sequence
from .errors import InvalidRequest
from .loading import load_model
from .protocol import ChatRequest, CompletionRequest, HiddenStatsRequest
from .service import Service
from .zoo import ZooService, mount_zoo

__all__ = ["BodySizeLimit", "ServerApp", "build_app"]

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error(exc: InvalidRequest) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


class BodySizeLimit:
    """ASGI wrapper answering 413 for request bodies over ``max_bytes``.

    It reads the body before the app does (the app would buffer it anyway), so a chunked
    upload without Content-Length is bounded too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        exc = InvalidRequest(
            f"request body exceeds the limit of {self.max_bytes} bytes",
            status=413,
            code="request_too_large",
        )
        payload = json.dumps(exc.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class ServerApp:
    """The ASGI app to serve, and what must be closed when the server stops."""

    asgi: ASGIApp
    service: Service | None  # None when only a zoo of classifiers is served
    batcher: Batcher[Any] | None
    zoo: ZooService | None = None

    def close(self) -> None:
        """Stop the batcher's worker thread."""
        if self.batcher is not None:
            self.batcher.close()


def build_app(config: ServeConfig) -> ServerApp:
    """Load the model named by ``config`` (unless ``config.lm`` is off) and the zoo it names,
    and build the app serving them."""
    zoo = ZooService.from_dir(config.zoo) if config.zoo else None
    if not config.lm:
        app = FastAPI(title="bbox-lfm local provider", version="1")
        return _routes(app, config, None, zoo, None)
    loaded = load_model(
        config.model,
        device=config.device,
        dtype=config.dtype,
        served_model_name=config.served_model_name,
    )
    engine = Engine(loaded, tokenizer_cache_size=config.tokenizer_cache_size)

    def length(seq: Sequence) -> int:
        return len(seq.ids)

    batcher: Batcher[Any] = Batcher(
        engine.logprobs,
        length=length,
        window_s=config.batch_window_ms / 1000,
        max_batch=config.max_batch,
        plan=engine.plan,
    )
    service = Service(engine, batcher, config)
    app = FastAPI(title="bbox-lfm local provider", version="1")
    return _routes(app, config, service, zoo, batcher)


def _routes(app: FastAPI, config: ServeConfig, service: Service | None, zoo: ZooService | None,
            batcher: Batcher[Any] | None) -> ServerApp:

    @app.exception_handler(InvalidRequest)
    async def invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            return _error(InvalidRequest("request body is not valid JSON", status=400))
        message = (
            f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", "invalid request body"))
        )
        return _error(InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(InvalidRequest(str(exc.detail), status=exc.status_code))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("request failed")
        return _error(InvalidRequest(f"internal error: {exc}", status=500, type="server_error"))

    @app.middleware("http")
    async def bearer(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        if config.api_key is not None and request.url.path != "/health":
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                token.strip().encode(), config.api_key.encode()
            ):
                return _error(
                    InvalidRequest(
                        "missing or wrong API key (send 'Authorization: Bearer <key>')",
                        status=401,
                        code="invalid_api_key",
                    )
                )
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        lm = [service.model_card()] if service is not None else []
        return {"object": "list", "data": lm + (zoo.model_cards() if zoo is not None else [])}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str) -> dict[str, Any]:
        if zoo is not None and (service is None or zoo.has(model_id)):
            if zoo.has(model_id):
                return zoo.model_card(model_id)
            raise InvalidRequest(f"The model '{model_id}' does not exist", param="model", status=404,
                                 code="model_not_found")
        assert service is not None
        service.check_model(model_id)
        return service.model_card()

    if zoo is not None:
        mount_zoo(app, zoo)
    if service is None:
        return ServerApp(asgi=BodySizeLimit(app, config.max_body_bytes), service=None, batcher=None, zoo=zoo)

    # Plain `def` routes: FastAPI runs them in its thread pool, where they block on the batcher.
    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> dict[str, Any]:
        return service.completions(req)

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        return service.chat(req)

    @app.post("/v1/bbox/hidden_stats")
    def hidden_stats(req: HiddenStatsRequest) -> dict[str, Any]:
        return service.hidden_stats(req)

    return ServerApp(asgi=BodySizeLimit(app, config.max_body_bytes), service=service, batcher=batcher, zoo=zoo)
