"""SQL for collections: their state rows and their per-collection schema and tables."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from enum import Enum

import asyncpg

from gateway.domain.audit import AuditAction
from gateway.domain.identifiers import collection_schema, embedding_table, quote_ident
from gateway.domain.phases import Phase
from gateway.domain.state import CollectionState, ReadMode
from gateway.domain.storage import Storage

_STATE_COLUMNS = (
    "name, phase, read_model, write_models, shadow_model, shadow_sample_rate, state_version, "
    "from_model, to_model, noise_floor_rate, read_mode, translate_vectors, adapter_version"
)


def _state(row: asyncpg.Record) -> CollectionState:
    return CollectionState(
        name=row["name"],
        phase=Phase(row["phase"]),
        read_model=row["read_model"],
        write_models=tuple(row["write_models"]),
        shadow_model=row["shadow_model"],
        shadow_sample_rate=row["shadow_sample_rate"],
        state_version=row["state_version"],
        from_model=row["from_model"],
        to_model=row["to_model"],
        noise_floor_rate=row["noise_floor_rate"],
        read_mode=ReadMode(row["read_mode"]),
        translate_vectors=row["translate_vectors"],
        adapter_version=row["adapter_version"],
    )


def documents_table(collection: str) -> str:
    return f"{quote_ident(collection_schema(collection))}.documents"


def model_table(collection: str, model_key: str) -> str:
    return f"{quote_ident(collection_schema(collection))}.{quote_ident(embedding_table(model_key))}"


async def get_state(conn: asyncpg.Connection, name: str, *, lock: str | None = None) -> CollectionState | None:
    """The state row; `lock="SHARE"` holds it against concurrent state changes until commit."""
    suffix = {None: "", "SHARE": " FOR SHARE", "UPDATE": " FOR UPDATE"}[lock]
    row = await conn.fetchrow(f"SELECT {_STATE_COLUMNS} FROM driftgate.collections WHERE name = $1{suffix}", name)
    return _state(row) if row else None


async def create_collection(
    conn: asyncpg.Connection,
    name: str,
    model_key: str,
    dim: int,
    *,
    with_index: bool = True,
    storage: Storage = Storage.VECTOR,
) -> CollectionState | None:
    """Create the state row, schema, documents table and the model's table, in the caller's transaction.

    Returns None when the collection already exists (the caller compares its model). An
    adopted collection is bulk-loaded first and indexed afterwards (`with_index=False`).
    """
    inserted = await conn.fetchrow(
        f"""INSERT INTO driftgate.collections (name, phase, read_model, write_models)
            VALUES ($1, $2, $3, ARRAY[$3]) ON CONFLICT (name) DO NOTHING RETURNING {_STATE_COLUMNS}""",
        name,
        Phase.STEADY.value,
        model_key,
    )
    if inserted is None:
        return None
    # other replicas hear of it at once, and load its model before its first request
    await conn.execute("SELECT pg_notify($1, $2)", STATE_CHANNEL, f"{name}:{inserted['state_version']}")
    schema = quote_ident(collection_schema(name))
    await conn.execute(
        f"""CREATE SCHEMA {schema};
            CREATE SEQUENCE {schema}.versions;
            CREATE TABLE {schema}.documents (
                id         text COLLATE "C" PRIMARY KEY,
                content    text NOT NULL,
                metadata   jsonb NOT NULL DEFAULT '{{}}',
                version    bigint NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX ON {schema}.documents USING gin (metadata jsonb_path_ops);"""
    )
    await create_model_table(conn, name, model_key, dim, with_index=with_index, storage=storage)
    return _state(inserted)


async def create_model_table(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    dim: int,
    *,
    with_index: bool = True,
    storage: Storage = Storage.VECTOR,
) -> None:
    """One embedding table per (collection, model), with its own dimension and storage type.

    A new collection gets its HNSW cosine index at once; a migration's target table gets it
    after the bulk backfill (`build_index`), which is much faster than maintaining it per row.
    Writes send float32 vectors either way: PostgreSQL casts them to a `halfvec` column's type,
    and a search's query vector takes the column's type (its parameter is left untyped).
    """
    table = model_table(collection, model_key)
    await conn.execute(
        f"""CREATE TABLE {table} (
                doc_id         text COLLATE "C" PRIMARY KEY REFERENCES {documents_table(collection)} (id) ON DELETE CASCADE,
                embedding      {storage.column_type(dim)} NOT NULL,
                source_version bigint NOT NULL,
                embedded_at    timestamptz NOT NULL DEFAULT now())"""
    )
    if with_index:
        await conn.execute(_index_sql(collection, model_key, storage, concurrently=False))
    await conn.execute(
        """INSERT INTO driftgate.embedding_tables (collection, model_key, table_name, dim, index_ready, storage)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        collection,
        model_key,
        embedding_table(model_key),
        dim,
        with_index,
        storage.value,
    )


async def table_storage(conn: asyncpg.Connection, collection: str, model_key: str) -> Storage:
    """The storage type of a model's table (`vector` for a table the catalog does not know)."""
    value = await conn.fetchval(
        "SELECT storage FROM driftgate.embedding_tables WHERE collection = $1 AND model_key = $2",
        collection,
        model_key,
    )
    return Storage(value or Storage.VECTOR)


def _index_sql(
    collection: str, model_key: str, storage: Storage, *, concurrently: bool, ef_construction: int | None = None
) -> str:
    index = quote_ident(embedding_table(model_key) + "_hnsw")
    how = "CONCURRENTLY " if concurrently else ""
    options = f" WITH (ef_construction = {int(ef_construction)})" if ef_construction else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {index} ON {model_table(collection, model_key)} "
        f"USING hnsw (embedding {storage.cosine_ops}){options}"
    )


INDEX_BUILD_TIMEOUT_S = 6 * 3600
INDEX_LOCK_POLL_S = 0.5  # how often a second builder looks whether the first has finished


async def build_index(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    *,
    maintenance_work_mem_mb: int = 256,
    parallel_workers: int | None = None,
    ef_construction: int | None = None,
) -> None:
    """Build the HNSW index without blocking writes (outside any transaction), then mark it ready.

    `parallel_workers` sets max_parallel_maintenance_workers for this build (None: the server's
    setting; PostgreSQL then picks up to that many by the table's size, pgvector builds the graph
    with them); `ef_construction` is pgvector's build-quality knob (None: its default, 64).
    """
    index = embedding_table(model_key) + "_hnsw"
    schema = collection_schema(collection)
    # one build of a table at a time, whoever asks (the backfill's end, a bulk load's end, an
    # operator): the second caller waits, then finds the index there and only marks it ready
    async with index_lock(conn, collection, model_key):
        valid = await conn.fetchval(
            """SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2""",
            schema,
            index,
        )
        if valid is False:  # a CONCURRENTLY build that was interrupted leaves an INVALID index: drop it
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(schema)}.{quote_ident(index)}")
        if not valid:
            await _create_index(conn, collection, model_key, maintenance_work_mem_mb, parallel_workers, ef_construction)
        await conn.execute(
            "UPDATE driftgate.embedding_tables SET index_ready = true WHERE collection = $1 AND model_key = $2",
            collection,
            model_key,
        )


@contextlib.asynccontextmanager
async def index_lock(conn: asyncpg.Connection, collection: str, model_key: str) -> AsyncIterator[None]:
    """Hold the session advisory lock of one embedding table's index (build or drop).

    Waited for by polling, not by a blocking pg_advisory_lock: a session blocked in that call
    holds a snapshot, and the holder's CREATE INDEX CONCURRENTLY waits for old snapshots to
    end, which would be a deadlock.
    """
    name = f"driftgate-index:{collection}:{model_key}"
    while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name):
        await asyncio.sleep(INDEX_LOCK_POLL_S)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)


async def drop_index(conn: asyncpg.Connection, collection: str, model_key: str) -> bool:
    """Drop a table's HNSW index for a bulk load (searches turn exact); whether there was one.

    Marked not ready first, so nothing reads the flag as "indexed" while the drop waits for
    queries that use the index to finish (CONCURRENTLY: outside any transaction).
    """
    index = embedding_table(model_key) + "_hnsw"
    schema = collection_schema(collection)
    async with index_lock(conn, collection, model_key):
        status = await conn.execute(
            """UPDATE driftgate.embedding_tables SET index_ready = false
               WHERE collection = $1 AND model_key = $2 AND index_ready""",
            collection,
            model_key,
        )
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(schema)}.{quote_ident(index)}")
    return status != "UPDATE 0"


async def _create_index(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    maintenance_work_mem_mb: int,
    parallel_workers: int | None,
    ef_construction: int | None,
) -> None:
    # a large build outlives the pool's command timeout; it gets hours, and memory to keep the
    # graph in RAM (a build that spills is several times slower)
    storage = await table_storage(conn, collection, model_key)
    await conn.execute(f"SET maintenance_work_mem = '{int(maintenance_work_mem_mb)}MB'")
    if parallel_workers is not None:
        await conn.execute(f"SET max_parallel_maintenance_workers = {int(parallel_workers)}")
    try:
        await conn.execute(
            _index_sql(collection, model_key, storage, concurrently=True, ef_construction=ef_construction),
            timeout=INDEX_BUILD_TIMEOUT_S,
        )
    finally:
        await conn.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")


async def index_build_progress(conn: asyncpg.Connection, collection: str, model_key: str) -> dict | None:
    """Progress of a running CREATE INDEX on the model's table, from pg_stat_progress_create_index."""
    row = await conn.fetchrow(
        """SELECT p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total
           FROM pg_stat_progress_create_index p
           JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = $2""",
        collection_schema(collection),
        embedding_table(model_key),
    )
    return dict(row) if row else None


async def drop_model_table(conn: asyncpg.Connection, collection: str, model_key: str) -> None:
    """Drop a model's table and its backfill plan. The plan goes first: that waits for a
    backfill chunk in flight (it holds its chunk row) to commit before the table is locked."""
    await conn.execute(
        "DELETE FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2", collection, model_key
    )
    await conn.execute(
        "DELETE FROM driftgate.embedding_tables WHERE collection = $1 AND model_key = $2", collection, model_key
    )
    await conn.execute(f"DROP TABLE IF EXISTS {model_table(collection, model_key)}")


async def model_tables(conn: asyncpg.Connection, collection: str) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT * FROM driftgate.embedding_tables WHERE collection = $1 ORDER BY created_at", collection
    )
    return {r["model_key"]: r for r in rows}


async def coverage(conn: asyncpg.Connection, collection: str, model_key: str) -> dict:
    """How complete a model's table is: rows, and live documents missing or at an old version."""
    row = await conn.fetchrow(
        f"""SELECT count(*) AS documents,
                   count(e.doc_id) AS rows,
                   count(*) FILTER (WHERE e.doc_id IS NULL) AS missing,
                   count(*) FILTER (WHERE e.source_version <> d.version) AS stale
            FROM {documents_table(collection)} d
            LEFT JOIN {model_table(collection, model_key)} e ON e.doc_id = d.id"""
    )
    documents, missing, stale = row["documents"], row["missing"], row["stale"]
    complete = documents - missing - stale
    return {
        "documents": documents,
        "rows": row["rows"],
        "missing": missing,
        "stale": stale,
        "coverage": 1.0 if documents == 0 else complete / documents,
    }


async def incomplete_ids(conn: asyncpg.Connection, collection: str, model_key: str, limit: int) -> dict:
    """Ids of documents missing from, or stale in, a model's table (at most `limit` of each)."""
    docs, table = documents_table(collection), model_table(collection, model_key)
    missing = await conn.fetch(
        f"""SELECT d.id FROM {docs} d WHERE NOT EXISTS (SELECT 1 FROM {table} e WHERE e.doc_id = d.id)
            ORDER BY d.id LIMIT $1""",
        limit,
    )
    stale = await conn.fetch(
        f"""SELECT d.id FROM {docs} d JOIN {table} e ON e.doc_id = d.id
            WHERE e.source_version <> d.version ORDER BY d.id LIMIT $1""",
        limit,
    )
    return {"missing": [r["id"] for r in missing], "stale": [r["id"] for r in stale]}


async def save_verification(conn: asyncpg.Connection, collection: str, model_key: str, report: dict) -> None:
    await conn.execute(
        """UPDATE driftgate.embedding_tables SET verification = $3::jsonb, verified_ok = $4, verified_at = now()
           WHERE collection = $1 AND model_key = $2""",
        collection,
        model_key,
        json.dumps(report),
        bool(report["passed"]),
    )


# -- state changes: one transaction each, with an audit row and a NOTIFY --------------------

STATE_CHANNEL = "driftgate_state"


async def change_state(
    conn: asyncpg.Connection,
    before: CollectionState,
    *,
    action: AuditAction,
    actor: str | None,
    replica: str | None,
    forced: bool = False,
    detail: dict | None = None,
    **changes: object,
) -> CollectionState:
    """Apply `changes` to the state row (locked FOR UPDATE by the caller), bump state_version,
    record the audit row and NOTIFY every replica, all in the caller's transaction."""
    columns = {k: (v.value if isinstance(v, Enum) else v) for k, v in changes.items()}
    assignments = ", ".join(f"{quote_ident(k)} = ${i + 2}" for i, k in enumerate(columns))
    prefix = f"{assignments}, " if assignments else ""
    row = await conn.fetchrow(
        f"""UPDATE driftgate.collections SET {prefix}state_version = state_version + 1, updated_at = now()
            WHERE name = $1 RETURNING {_STATE_COLUMNS}""",
        before.name,
        *columns.values(),
    )
    after = _state(row)
    await conn.execute(
        """INSERT INTO driftgate.audit (collection, action, actor, replica, forced, before, after, detail)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb)""",
        before.name,
        action,
        actor,
        replica,
        forced,
        json.dumps(before.as_dict()),
        json.dumps(after.as_dict()),
        json.dumps(detail or {}),
    )
    await conn.execute("SELECT pg_notify($1, $2)", STATE_CHANNEL, f"{after.name}:{after.state_version}")
    return after


async def audit_log(conn: asyncpg.Connection, collection: str, limit: int = 50) -> list[dict]:
    rows = await conn.fetch(
        "SELECT * FROM driftgate.audit WHERE collection = $1 ORDER BY id DESC LIMIT $2", collection, limit
    )
    return [
        {
            **dict(r),
            "before": json.loads(r["before"]),
            "after": json.loads(r["after"]),
            "detail": json.loads(r["detail"]),
            "at": r["at"].isoformat(),
        }
        for r in rows
    ]


async def state_versions(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        r["name"]: r["state_version"] for r in await conn.fetch("SELECT name, state_version FROM driftgate.collections")
    }


async def count_documents(conn: asyncpg.Connection, collection: str) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM {documents_table(collection)}")


ESTIMATE_ABOVE_ROWS = 100_000  # tables the planner believes larger than this are not counted row by row


async def about_how_many_documents(conn: asyncpg.Connection, collection: str) -> int:
    """The collection's document count, exact for small tables; for a table the planner believes
    holds more than ESTIMATE_ABOVE_ROWS, its estimate (pg_class.reltuples, kept by ANALYZE and
    index builds): counting millions of rows would take seconds."""
    estimate = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", documents_table(collection)
    )
    if estimate is not None and estimate > ESTIMATE_ABOVE_ROWS:
        return int(estimate)
    return await count_documents(conn, collection)


async def drop_collection(conn: asyncpg.Connection, name: str) -> None:
    """Drop a collection's schema and every row about it (scratch collections of `evaluate`)."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(collection_schema(name))} CASCADE")
    for table in ("backfill_chunks", "backfill_steps", "backfill_errors", "replicas", "shadow_samples", "audit"):
        await conn.execute(f"DELETE FROM driftgate.{table} WHERE collection = $1", name)
    await conn.execute("DELETE FROM driftgate.collections WHERE name = $1", name)
