"""The deadline of the request being served, for code far below the HTTP layer.

The API's timeout middleware sets it (event-loop time); a remote encoder reads it so its
retries and Retry-After waits never run past the moment the caller stops waiting. Work
outside a request (the backfill, the drift watch) has no deadline and uses its own budget.
"""

from __future__ import annotations

from contextvars import ContextVar

request_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)
