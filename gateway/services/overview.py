"""What the console shows beyond one status report: every collection, and a collection's timeline."""

from __future__ import annotations

import asyncpg

from gateway.services.collections import CollectionService
from gateway.store import collections as collections_sql
from gateway.store import registry as registry_sql
from gateway.store.retry import with_connection

TIMELINE_LIMIT = 100


async def collection_names(pool: asyncpg.Pool) -> list[str]:
    """Every collection's name, sorted."""
    return sorted(await with_connection(pool, collections_sql.state_versions))


async def phase_timeline(
    pool: asyncpg.Pool, collections: CollectionService, name: str, limit: int = TIMELINE_LIMIT
) -> list[dict]:
    """The collection's audit log, oldest first: every state change, who made it and the phase it led to."""
    await collections.state(name)  # validates the name; 404 for an unknown collection
    rows = await with_connection(pool, lambda conn: collections_sql.audit_log(conn, name, limit))
    return [
        {
            "at": row["at"],
            "action": row["action"],
            "actor": row["actor"],
            "forced": row["forced"],
            "phase_before": row["before"].get("phase"),
            "phase": row["after"].get("phase"),
            "read_model": row["after"].get("read_model"),
        }
        for row in reversed(rows)
    ]


async def registered_models(pool: asyncpg.Pool) -> dict[str, registry_sql.RegisteredModel]:
    """Every model key the database has pinned (its fingerprint at registration), by key."""
    return {model.key: model for model in await with_connection(pool, registry_sql.all_models)}
