"""Request ids: accepted from X-Request-Id or generated, echoed, and put on every log line."""

from __future__ import annotations

import uuid

from aiohttp import web

from gateway.logs import request_id_var


def _valid(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isprintable() and value.isascii()


@web.middleware
async def request_id_middleware(request: web.Request, handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _valid(given) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    finally:
        request_id_var.reset(token)
    response.headers["X-Request-Id"] = request_id
    return response
