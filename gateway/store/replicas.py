"""SQL for replica heartbeats: which state_version each gateway has applied, and when."""

from __future__ import annotations

import asyncpg


async def heartbeat(
    conn: asyncpg.Connection, replica_id: str, applied: dict[str, int], read_p99_ms: float | None
) -> None:
    if not applied:
        return
    await conn.execute(
        """INSERT INTO driftgate.replicas (replica_id, collection, applied_state_version, read_p99_ms, seen_at)
           SELECT $1, c, v, $4, now() FROM unnest($2::text[], $3::bigint[]) AS u (c, v)
           ON CONFLICT (replica_id, collection) DO UPDATE
              SET applied_state_version = excluded.applied_state_version,
                  read_p99_ms = excluded.read_p99_ms, seen_at = now()""",
        replica_id,
        list(applied),
        list(applied.values()),
        read_p99_ms,
    )


async def list_replicas(conn: asyncpg.Connection, collection: str, max_age_s: float = 60.0) -> list[dict]:
    rows = await conn.fetch(
        """SELECT replica_id, applied_state_version, read_p99_ms, seen_at,
                  extract(epoch FROM now() - seen_at) AS age_s
           FROM driftgate.replicas
           WHERE collection = $1 AND seen_at > now() - make_interval(secs => $2)
           ORDER BY replica_id""",
        collection,
        max_age_s,
    )
    return [
        {
            "id": r["replica_id"],
            "applied_state_version": r["applied_state_version"],
            "read_p99_ms": r["read_p99_ms"],
            "seen_at": r["seen_at"].isoformat(),
            "seen_s_ago": round(float(r["age_s"]), 1),
        }
        for r in rows
    ]


async def forget(conn: asyncpg.Connection, replica_id: str) -> None:
    """Remove a replica's heartbeats: it stopped cleanly and serves nothing any more."""
    await conn.execute("DELETE FROM driftgate.replicas WHERE replica_id = $1", replica_id)


async def max_read_p99_ms(conn: asyncpg.Connection, max_age_s: float = 10.0) -> float | None:
    """The worst read p99 any live replica reported (the backfill throttle watches it)."""
    return await conn.fetchval(
        "SELECT max(read_p99_ms) FROM driftgate.replicas WHERE seen_at > now() - make_interval(secs => $1)",
        max_age_s,
    )
