"""Request ids: accepted from X-Request-Id or generated, echoed, and put on every log line."""

from __future__ import annotations

import contextvars
import logging
import uuid

from aiohttp import web

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


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


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (tasks started inside a request inherit it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
