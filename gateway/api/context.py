"""Request ids: accepted from X-Request-Id or generated, echoed, and put on every log line."""

from __future__ import annotations

import os

from aiohttp import web

from gateway.logs import request_id_var


def new_request_id() -> str:
    """A random version-4 UUID as 32 hex digits, as `new_request_id()` writes it, without
    building the UUID object (its int arithmetic is most of a request id's cost)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    return raw.hex()


def _valid(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isprintable() and value.isascii()


@web.middleware
async def request_id_middleware(request: web.Request, handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _valid(given) else new_request_id()
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    finally:
        request_id_var.reset(token)
    response.headers["X-Request-Id"] = request_id
    return response
