"""SQL for migration plans: read-only statistics and a random sample of a collection's texts."""

from __future__ import annotations

import asyncpg

from gateway.store.collections import documents_table


async def document_stats(conn: asyncpg.Connection, collection: str) -> tuple[int, int]:
    """(documents, total characters of their texts)."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum(char_length(content)), 0) AS chars FROM {documents_table(collection)}"
    )
    return int(row["n"]), int(row["chars"])


async def sample_texts(conn: asyncpg.Connection, collection: str, limit: int) -> list[str]:
    rows = await conn.fetch(f"SELECT content FROM {documents_table(collection)} ORDER BY random() LIMIT $1", limit)
    return [r["content"] for r in rows]
