"""SQL of the optional raw shadow samples: a bounded table for offline analysis."""

from __future__ import annotations

import asyncpg


async def keep_sample(conn: asyncpg.Connection, collection: str, row: dict, keep: int) -> None:
    """Insert one sample and trim the table to the newest `keep` rows."""
    await conn.execute(
        """INSERT INTO driftgate.shadow_samples (collection, pairing, read_model, shadow_model, query_hash,
               query_text, k, overlap, rbo, kendall_tau, top1, score_shift, read_ms, shadow_ms,
               read_ids, shadow_ids)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
        collection,
        row["pairing"],
        row["read_model"],
        row["shadow_model"],
        row["query_hash"],
        row["query_text"],
        row["k"],
        row["overlap"],
        row["rbo"],
        row["kendall_tau"],
        row["top1"],
        row["score_shift"],
        row["read_ms"],
        row["shadow_ms"],
        row["read_ids"],
        row["shadow_ids"],
    )
    await conn.execute(
        "DELETE FROM driftgate.shadow_samples WHERE id <= (SELECT max(id) FROM driftgate.shadow_samples) - $1",
        keep,
    )
