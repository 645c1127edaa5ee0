"""SQL of the backfill: planned chunks (the checkpoint), claiming, version-safe writes, errors.

A chunk row is claimed with FOR UPDATE SKIP LOCKED inside the transaction that also writes
its embeddings and marks it done, so one chunk is one transaction: a worker killed at any
moment rolls back, its lock goes away, and another worker takes the chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from gateway.domain.backfill import BackfillState, Chunk
from gateway.store.collections import documents_table, model_table
from gateway.store.vector_codec import Vector, halfvec_range


@dataclass(frozen=True)
class ClaimedChunk:
    chunk_no: int
    lo: str
    hi: str


async def document_ids(conn: asyncpg.Connection, collection: str) -> list[str]:
    rows = await conn.fetch(f"SELECT id FROM {documents_table(collection)} ORDER BY id")
    return [r["id"] for r in rows]


async def incomplete_document_ids(conn: asyncpg.Connection, collection: str, model_key: str) -> list[str]:
    """Live documents without an embedding at their current version, excluding recorded errors."""
    rows = await conn.fetch(
        f"""SELECT d.id FROM {documents_table(collection)} d
            LEFT JOIN {model_table(collection, model_key)} e ON e.doc_id = d.id
            WHERE (e.doc_id IS NULL OR e.source_version < d.version)
              AND NOT EXISTS (SELECT 1 FROM driftgate.backfill_errors x
                              WHERE x.collection = $1 AND x.model_key = $2 AND x.doc_id = d.id
                                AND x.doc_version = d.version)
            ORDER BY d.id""",
        collection,
        model_key,
    )
    return [r["id"] for r in rows]


async def plan_round(
    conn: asyncpg.Connection, collection: str, model_key: str, chunks: Sequence[Chunk], round_no: int
) -> None:
    start = await conn.fetchval(
        "SELECT coalesce(max(chunk_no), 0) FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2",
        collection,
        model_key,
    )
    await conn.executemany(
        """INSERT INTO driftgate.backfill_chunks (collection, model_key, chunk_no, round, lo, hi, docs)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(collection, model_key, start + i + 1, round_no, c.lo, c.hi, c.docs) for i, c in enumerate(chunks)],
    )


async def current_round(conn: asyncpg.Connection, collection: str, model_key: str) -> int:
    return await conn.fetchval(
        "SELECT coalesce(max(round), 0) FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2",
        collection,
        model_key,
    )


async def claim_chunk(conn: asyncpg.Connection, collection: str, model_key: str) -> ClaimedChunk | None:
    """Lock the next unfinished chunk for this transaction, skipping chunks other workers hold."""
    row = await conn.fetchrow(
        """SELECT chunk_no, lo, hi FROM driftgate.backfill_chunks
           WHERE collection = $1 AND model_key = $2 AND NOT done
           ORDER BY chunk_no LIMIT 1 FOR UPDATE SKIP LOCKED""",
        collection,
        model_key,
    )
    return ClaimedChunk(row["chunk_no"], row["lo"], row["hi"]) if row else None


async def chunk_documents(
    conn: asyncpg.Connection, collection: str, model_key: str, chunk: ClaimedChunk, limit: int | None = None
) -> list[asyncpg.Record]:
    """Documents in the chunk's id range that lack an up-to-date embedding in the model's table.

    Documents whose embedding failed at their current version are left out (they are counted
    as errors, and the operator's `resume` retries them); `limit` takes the first ones only,
    so a chunk can be worked in steps, each its own transaction.
    """
    return await conn.fetch(
        f"""SELECT d.id, d.content, d.version FROM {documents_table(collection)} d
            LEFT JOIN {model_table(collection, model_key)} e ON e.doc_id = d.id
            WHERE d.id BETWEEN $1 AND $2 AND (e.doc_id IS NULL OR e.source_version < d.version)
              AND NOT EXISTS (SELECT 1 FROM driftgate.backfill_errors x
                              WHERE x.collection = $4 AND x.model_key = $5 AND x.doc_id = d.id
                                AND x.doc_version = d.version)
            ORDER BY d.id
            LIMIT $3""",
        chunk.lo,
        chunk.hi,
        limit,
        collection,
        model_key,
    )


async def write_if_current(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    ids: Sequence[str],
    vectors: np.ndarray,
    versions: Sequence[int],
) -> int:
    """Write embeddings only for documents that still exist at the version embedded.

    The join re-checks each document under a KEY SHARE lock: a concurrent delete makes the
    row vanish (never resurrected), a concurrent update changes its version (skipped), and
    ON CONFLICT keeps a fresher dual-written embedding. Returns how many rows were written.
    """
    with halfvec_range(model_key):
        status = await conn.execute(
            f"""INSERT INTO {model_table(collection, model_key)} AS e (doc_id, embedding, source_version)
                SELECT u.id, u.embedding, u.version
                FROM unnest($1::text[], $2::vector[], $3::bigint[]) AS u (id, embedding, version)
                JOIN {documents_table(collection)} d ON d.id = u.id AND d.version = u.version
                FOR KEY SHARE OF d
                ON CONFLICT (doc_id) DO UPDATE
                   SET embedding = excluded.embedding, source_version = excluded.source_version, embedded_at = now()
                   WHERE e.source_version < excluded.source_version""",
            list(ids),
            [Vector(v) for v in vectors],
            list(versions),
        )
        return int(status.rsplit(" ", 1)[-1])


async def record_step(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    chunk_no: int,
    *,
    processed: int,
    written: int,
    worker: str,
    done: bool,
) -> None:
    """Count a step of a chunk (its documents processed and written); `done` closes the chunk.

    The step is also logged with its time, so the rate over the last seconds is what was
    committed in them, whatever the chunk size (old entries are pruned here). One statement,
    one round trip: a backfill takes a step per few hundred documents.
    """
    await conn.execute(
        """WITH chunk AS (
               UPDATE driftgate.backfill_chunks
               SET processed = processed + $4, written = written + $5, worker = $6, done = $7,
                   done_at = clock_timestamp()
               WHERE collection = $1 AND model_key = $2 AND chunk_no = $3),
           step AS (
               INSERT INTO driftgate.backfill_steps (collection, model_key, docs)
               SELECT $1, $2, $4 WHERE $4 > 0)
           DELETE FROM driftgate.backfill_steps
           WHERE $4 > 0 AND collection = $1 AND model_key = $2
             AND at < clock_timestamp() - interval '2 minutes'""",
        collection,
        model_key,
        chunk_no,
        processed,
        written,
        worker,
        done,
    )


async def record_error(
    conn: asyncpg.Connection, collection: str, model_key: str, doc_id: str, version: int, reason: str
) -> None:
    await conn.execute(
        """INSERT INTO driftgate.backfill_errors (collection, model_key, doc_id, doc_version, reason)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (collection, model_key, doc_id) DO UPDATE
              SET doc_version = excluded.doc_version, reason = excluded.reason,
                  attempts = driftgate.backfill_errors.attempts + 1, last_at = now()""",
        collection,
        model_key,
        doc_id,
        version,
        reason[:500],
    )


async def clear_errors(conn: asyncpg.Connection, collection: str, model_key: str) -> int:
    status = await conn.execute(
        "DELETE FROM driftgate.backfill_errors WHERE collection = $1 AND model_key = $2", collection, model_key
    )
    return int(status.rsplit(" ", 1)[-1])


async def list_errors(conn: asyncpg.Connection, collection: str, model_key: str, limit: int = 20) -> list[dict]:
    rows = await conn.fetch(
        """SELECT doc_id, doc_version, reason, attempts FROM driftgate.backfill_errors
           WHERE collection = $1 AND model_key = $2 ORDER BY doc_id LIMIT $3""",
        collection,
        model_key,
        limit,
    )
    return [dict(r) for r in rows]


async def progress(conn: asyncpg.Connection, collection: str, model_key: str) -> dict:
    """Chunks done and documents processed, overall and in the last 30 s (for the rate)."""
    row = await conn.fetchrow(
        """SELECT count(*) AS chunks,
                  count(*) FILTER (WHERE done) AS chunks_done,
                  coalesce(sum(docs), 0) AS total,
                  coalesce(sum(CASE WHEN done THEN docs ELSE least(processed, docs) END), 0) AS done,
                  coalesce(sum(written), 0) AS written,
                  (SELECT coalesce(sum(s.docs), 0) FROM driftgate.backfill_steps s
                   WHERE s.collection = $1 AND s.model_key = $2 AND s.at > now() - interval '30 seconds')
                      AS done_recent,
                  (SELECT extract(epoch FROM now() - c.backfill_started_at) FROM driftgate.collections c
                   WHERE c.name = $1) AS running_s,
                  (SELECT count(*) FROM driftgate.backfill_errors x
                   WHERE x.collection = $1 AND x.model_key = $2) AS errors
           FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2""",
        collection,
        model_key,
    )
    return dict(row)


@dataclass(frozen=True)
class BackfillSettings:
    """A collection's backfill as the operator set it: which model, its state, its rate cap."""

    to_model: str | None
    state: BackfillState
    max_rate: float | None


async def backfill_settings(conn: asyncpg.Connection, collection: str) -> BackfillSettings | None:
    row = await conn.fetchrow(
        "SELECT to_model, backfill_state, backfill_max_rate FROM driftgate.collections WHERE name = $1",
        collection,
    )
    if row is None:
        return None
    return BackfillSettings(row["to_model"], BackfillState(row["backfill_state"]), row["backfill_max_rate"])


async def clear_chunks(conn: asyncpg.Connection, collection: str, model_key: str) -> None:
    """Forget a model's planned chunks (its migration ended: retired, aborted or restarted)."""
    for table in ("backfill_chunks", "backfill_steps"):
        await conn.execute(
            f"DELETE FROM driftgate.{table} WHERE collection = $1 AND model_key = $2", collection, model_key
        )


async def active_backfills(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(collection, model) pairs whose backfill should be worked on now."""
    rows = await conn.fetch(
        """SELECT name, to_model FROM driftgate.collections
           WHERE backfill_state = 'running' AND to_model IS NOT NULL ORDER BY name"""
    )
    return [(r["name"], r["to_model"]) for r in rows]


async def migrations_in_flight(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch("SELECT name, to_model FROM driftgate.collections WHERE to_model IS NOT NULL ORDER BY name")
    return [(r["name"], r["to_model"]) for r in rows]
