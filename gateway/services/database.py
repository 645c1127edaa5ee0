"""The services' side of the database: open the pool, name this replica, check that it answers.

The API layer talks to services only; this is where it learns about the database. Which
failures count as transient (retried, then answered 503) is decided once, in store/retry.py.
"""

from __future__ import annotations

import asyncio

import asyncpg

from gateway.config import DatabaseConfig
from gateway.store import database as database_sql
from gateway.store.retry import TRANSIENT_ERRORS

__all__ = ["TRANSIENT_ERRORS", "close_pool", "database_answers", "open_pool", "replica_id"]


async def open_pool(dsn: str, config: DatabaseConfig) -> asyncpg.Pool:
    """A connection pool on `dsn` with driftgate's schema applied."""
    return await database_sql.open_database(dsn, config)


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 10.0) -> bool:
    """Close gracefully; past `timeout_s`, terminate the connections. True if it closed cleanly."""
    try:
        await asyncio.wait_for(pool.close(), timeout=timeout_s)
        return True
    except TimeoutError:
        pool.terminate()
        return False


def replica_id(configured: str | None) -> str:
    return database_sql.replica_id(configured)


async def database_answers(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    """Whether the database answers a trivial query within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await database_sql.ping(pool)
    except TRANSIENT_ERRORS:
        return False
