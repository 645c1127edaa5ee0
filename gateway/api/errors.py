"""The one place that turns exceptions into HTTP answers with the JSON error body.

Caller mistakes (`GatewayError`) keep their status and code; transient dependency failures
that outlived the retry policy become 503 with Retry-After; anything else is a bug: 500,
logged with its traceback, never leaking internals to the caller.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web

from gateway.api.keys import METRICS
from gateway.api.responses import json_response
from gateway.domain.errors import GatewayError
from gateway.services.database import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: ("not_found", "no such endpoint; see /openapi.json"),
    405: ("method_not_allowed", "method not allowed on this endpoint; see /openapi.json"),
    413: ("payload_too_large", "request body is too large; split the batch"),
}


def error_response(
    status: int, code: str, message: str, headers: dict | None = None, details: dict | None = None
) -> web.Response:
    """The one error body: `{"error": {"code", "message"}}`, plus an error's machine-readable details."""
    return json_response(
        {"error": {"code": code, "message": message, **(details or {})}}, status=status, headers=headers
    )


def _counted(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: dict | None = None,
    details: dict | None = None,
) -> web.Response:
    """An error answer, counted by its code (driftgate_errors_total)."""
    request.app[METRICS].errors.labels(code).inc()
    return error_response(status, code, message, headers, details)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        # a remote provider's outage says how long to wait (`retry_after`); whole seconds, at least 1
        wait = max(1, math.ceil(getattr(exc, "retry_after", 1)))
        headers = {"Retry-After": str(wait)} if exc.status == 503 else None
        return _counted(request, exc.status, exc.code, exc.message, headers, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        # keep headers such as Allow (405) that the status obliges us to send
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return _counted(request, exc.status, code, message, kept or None)
    except TRANSIENT_ERRORS as exc:
        log.warning("database unavailable for %s %s: %r", request.method, request.path, exc)
        return _counted(
            request, 503, "database_unavailable", "the database is unavailable; retry shortly", {"Retry-After": "1"}
        )
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return _counted(request, 500, "internal_error", "internal error; it has been logged")
