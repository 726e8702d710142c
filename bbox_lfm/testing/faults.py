"""A loopback HTTP proxy that injects the faults real providers show, for reliability tests.

    with FaultProxy(server.base_url, every=5) as proxy:
        client = Client.local(proxy.base_url, ...)   # one request in five gets a fault

Kinds of fault, taken in turn (so a short run meets every kind):

* ``429``: Too Many Requests with ``Retry-After`` (not forwarded);
* ``500`` and ``503``: an error in OpenAI's shape (not forwarded);
* ``truncated``: forwarded, and the upstream's 200 answer is cut in half on the way back, with a
  ``Content-Length`` that matches the cut body (the client cannot tell it from a whole one but
  by parsing it);
* ``close``: the connection is closed once the request has been read, with no answer;
* ``stall``: nothing is answered for ``stall_s`` seconds (set it past the client's timeout),
  then the connection is closed.

The proxy counts what reached the upstream by request (method, path and body), so a test can
tell whether any query was answered twice. ``/health`` passes through untouched.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlparse

__all__ = ["KINDS", "FaultProxy"]

KINDS = ("429", "500", "503", "truncated", "close", "stall")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a killed run, a timed-out request) is routine here, not an error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FaultProxy:
    """Forward ``upstream`` (a base URL such as ``http://127.0.0.1:8000/v1``) on a free loopback
    port, injecting a fault into every ``every``-th request (``every=5``: 20 %; 0: none).

    Counters: ``injected`` (faults by kind), ``forwarded`` (requests that reached the upstream),
    ``answered`` (upstream answers by request digest), ``requests`` (all requests seen).
    """

    def __init__(self, upstream: str, *, every: int = 5, kinds: tuple[str, ...] = KINDS, stall_s: float = 3.0,
                 retry_after_s: float = 0.05, offset: int = 2):
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}; got {kinds!r}")
        u = urlparse(upstream)
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or 80
        self.prefix = u.path.rstrip("/")  # "/v1"
        self.every = every
        self.kinds = tuple(kinds)
        self.stall_s = stall_s
        self.retry_after_s = retry_after_s
        self.offset = offset
        self.injected: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.forwarded = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._n_faults = 0
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}{self.prefix}"
        self._thread: threading.Thread | None = None

    # -- running --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve from a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """The counters as plain JSON (``repeated``: requests the upstream answered more than once)."""
        with self._lock:
            return {"requests": self.requests, "forwarded": self.forwarded, "injected": dict(self.injected),
                    "faults": sum(self.injected.values()),
                    "repeated": sum(n - 1 for n in self.answered.values() if n > 1)}

    # -- the decision -----------------------------------------------------------------------------

    def _fault(self, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            if path.endswith("/health") or not self.every or (self.requests - self.offset) % self.every:
                return None
            kind = self.kinds[self._n_faults % len(self.kinds)]
            self._n_faults += 1
            self.injected[kind] += 1
            return kind

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS], data
        finally:
            conn.close()

    def _count(self, method: str, path: str, body: bytes) -> None:
        digest = hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()
        with self._lock:
            self.forwarded += 1
            self.answered[digest] += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counters
                return

            def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, extra: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
                body = json.dumps({"error": {"message": message, "type": "injected_fault", "param": None,
                                             "code": None}}).encode()
                self._reply(status, body, [("Content-Type", "application/json"), *extra])

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = proxy._fault(self.path)
                if kind == "close":
                    self.close_connection = True
                    return
                if kind == "stall":
                    time.sleep(proxy.stall_s)
                    self.close_connection = True
                    return
                if kind == "429":
                    self._error(429, "injected: rate limited", [("Retry-After", f"{proxy.retry_after_s:g}")])
                    return
                if kind in ("500", "503"):
                    self._error(int(kind), f"injected: HTTP {kind}")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                status, out_headers, data = proxy._forward(self.command, self.path, headers, body)
                proxy._count(self.command, self.path, body)
                if kind == "truncated" and status == 200 and len(data) > 1:
                    data = data[: len(data) // 2]
                self._reply(status, data, out_headers)

            do_GET = do_POST = _handle

        return Handler
