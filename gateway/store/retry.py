"""The one retry policy for dependency failures, declared once.

Transient database trouble (a dropped connection, a restart, a serialisation conflict) is
retried with exponential backoff and jitter for a bounded time; what still fails after that
reaches the API middleware, which answers 503 with Retry-After.

Every pooled connection in gateway/ is taken here (`with_connection`, `in_transaction`); the one
other place is `store/session.py`'s `read_only`, whose first attempt skips tenacity and falls
back to `with_connection`. tests/test_code_rules.py fails on a raw `pool.acquire()` elsewhere.
The state listener's LISTEN connection is its own `asyncpg.connect`, outside the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    # raised while a pool resets a connection the server just dropped (seen on a restart)
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]


def db_retrying(max_seconds: float = 5.0) -> AsyncRetrying:
    """`async for attempt in db_retrying(): with attempt: ...` retries transient failures."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),  # full jitter
        stop=stop_after_delay(max_seconds) | stop_after_attempt(8),
        reraise=True,
    )


async def with_connection(pool: asyncpg.Pool, work: Work[T], *, max_seconds: float = 5.0) -> T:
    """`await work(conn)` on a pooled connection, retried as a whole on a transient failure."""
    async for attempt in db_retrying(max_seconds):
        with attempt:
            async with pool.acquire() as conn:
                return await work(conn)
    raise AssertionError("unreachable: the retry policy re-raises the last failure")


async def in_transaction(pool: asyncpg.Pool, work: Work[T], *, max_seconds: float = 5.0, **options: Any) -> T:
    """`await work(conn)` in one transaction (asyncpg `transaction(**options)`), retried as a
    whole on a transient failure: a retried attempt starts from a fresh transaction."""
    async for attempt in db_retrying(max_seconds):
        with attempt:
            async with pool.acquire() as conn, conn.transaction(**options):
                return await work(conn)
    raise AssertionError("unreachable: the retry policy re-raises the last failure")
