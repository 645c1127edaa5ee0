"""What the HTTP transport bounds beyond aiohttp's defaults, in one place.

- Compressed request bodies are not inflated (`auto_decompress=False`) and the API refuses
  any `Content-Encoding` (see `content_encoding_middleware`): inflating a 64 MiB gzip bomb on
  the event loop stalls every other request, admin routes and /healthz included.
- A connection that has not sent a complete request within `server.header_timeout_s` is
  closed (aiohttp's keep-alive timer, which starts when the connection opens, does this),
  so slow-header clients cannot hold sockets open.
- At most `server.max_connections` connections; the next one is answered 503 and closed.
- A request aiohttp cannot even parse (a 10 kB URL, a malformed header) gets the documented
  JSON error body and one log line, not a plain-text library message and a traceback.
- A client that disconnects cancels its handler (`handler_cancellation=True`), so the work it
  queued is dropped instead of computed for nobody.
- An error after a streamed answer has started (its status line and part of its body are
  already sent) aborts the connection (`streamed_answer_middleware`): the client sees a
  truncated answer and a reset, never a second status line written inside the body.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.config import ServerConfig
from gateway.logs import escape_control

log = logging.getLogger(__name__)

SERVER = "driftgate"  # the Server header of every answer: no Python or aiohttp version for scanners


def runner_options(config: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for `GatewayRunner` (and the tests' server) that the gateway always uses."""
    return {
        "auto_decompress": False,
        "handler_cancellation": True,
        "keepalive_timeout": config.header_timeout_s,
        "max_connections": config.max_connections,
        "access_log": None,
    }


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler with a connection cap and JSON errors for unparsable requests."""

    def __init__(self, manager: web.Server, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._max_connections = max_connections

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self._server.connections) > self._max_connections:
            body = _error_body("too_many_connections", "the gateway has too many open connections; retry shortly")
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nServer: " + SERVER.encode() + b"\r\n"
                b"Content-Type: application/json\r\nRetry-After: 1\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.force_close()
            transport.close()

    def handle_error(
        self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request aiohttp could not parse: one log line, and the documented JSON error body."""
        if _answer_started(request):  # as aiohttp's own handler: no second answer on a started one
            raise ConnectionError(f"error after the answer started; the connection is closed ({status})")
        reason = type(exc).__name__ if exc is not None else HTTPStatus(status).phrase
        log.warning("malformed request from %s: %d %s", escape_control(str(request.remote)), status, reason)
        if status == HTTPStatus.REQUEST_URI_TOO_LONG or isinstance(exc, LineTooLong):
            code, text = "request_too_large", "the request line or a header is too long (limit 8190 bytes)"
        elif status >= 500:
            code, text = "internal_error", "internal error; it has been logged"
        else:
            code, text = "bad_request", "the request is not valid HTTP/1.1; check the request line and headers"
        response = web.Response(status=status, body=_error_body(code, text), content_type="application/json")
        response.headers["Server"] = SERVER
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's low-level server, making `GatewayRequestHandler`s."""

    max_connections: int = 1024

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, max_connections=self.max_connections, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose server applies the gateway's connection guards."""

    def __init__(self, app: web.Application, *, max_connections: int = 1024, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no hook for the handler class: the started server becomes our subclass
        server.__class__ = GatewayServer
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        return server


@web.middleware
async def content_encoding_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Refuse compressed request bodies before anything reads them (see the module docstring)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return web.json_response(
            {
                "error": {
                    "code": "unsupported_content_encoding",
                    "message": "compressed request bodies are not accepted; send the body uncompressed",
                }
            },
            status=415,
        )
    return await handler(request)


def _answer_started(request: web.BaseRequest) -> bool:
    writer = getattr(request, "_payload_writer", None)  # request.writer raises on an unparsed request
    return writer is not None and writer.output_size > 0


@web.middleware
async def streamed_answer_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Abort the connection when a handler fails after its answer started (see the module docstring).

    Placed inside the error middleware: an exception before anything was sent still becomes the
    documented JSON error; after, there is no way to tell the client but to cut the connection.
    """
    try:
        return await handler(request)
    except Exception:
        if not _answer_started(request):
            raise
        log.exception("error after the answer to %s %s started; aborting the connection", request.method, request.path)
        if request.transport is not None:
            request.transport.abort()
        # what aiohttp gets back: writing it fails on the aborted transport, which aiohttp takes as
        # a client that went away; the metrics count it as the 500 it is
        return web.Response(status=500)
