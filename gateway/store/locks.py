"""Session-level advisory locks: one holder at a time across every gateway and worker process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg


@contextlib.asynccontextmanager
async def try_lock(conn: asyncpg.Connection, name: str) -> AsyncIterator[bool]:
    """Hold the advisory lock `name` on `conn` for the block if nobody else does; yields whether it got it."""
    acquired = bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name))
    try:
        yield acquired
    finally:
        if acquired:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)
