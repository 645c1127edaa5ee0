"""Read-only work on a pooled connection: no reset round trip, no retry machinery on success.

asyncpg's pool resets every connection it takes back (`SELECT pg_advisory_unlock_all(); CLOSE
ALL; UNLISTEN *; RESET ALL`): one more round trip to PostgreSQL, and one more statement for it
to run, after every query. For a k-NN search that doubles the requests the server sees. A
single SELECT outside a transaction cannot leave a lock, a cursor, a LISTEN or a setting
behind, so work run through `read_only` skips that reset; everything else still gets it
(`reset_connection` is the pool's `reset` hook). asyncpg itself still rolls back a transaction
left open before calling the hook.

`read_only` also runs the first attempt directly and falls back to the full retry policy
(`with_connection`) only on a transient failure, so the common case pays for neither
tenacity's iterator nor its attempt objects.
"""

from __future__ import annotations

from contextvars import ContextVar

import asyncpg

from gateway.store.retry import TRANSIENT_ERRORS, T, Work, with_connection

# set only around `read_only` work; the pool's release runs in a task that copies this context
_session_untouched: ContextVar[bool] = ContextVar("driftgate_session_untouched", default=False)


async def reset_connection(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: asyncpg's own reset query, unless the work was read-only."""
    if _session_untouched.get():
        return
    await conn.execute(conn.get_reset_query())


async def read_only(pool: asyncpg.Pool, work: Work[T], *, max_seconds: float = 5.0) -> T:
    """`await work(conn)` for work that only reads with plain statements (no SET, no LISTEN, no
    session advisory lock, no cursor kept): the connection goes back without a reset."""
    token = _session_untouched.set(True)
    try:
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        except TRANSIENT_ERRORS:
            pass  # the same work again, under the retry policy
        return await with_connection(pool, work, max_seconds=max_seconds)
    finally:
        _session_untouched.reset(token)
