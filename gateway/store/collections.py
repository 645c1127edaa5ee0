"""SQL for collections: their state rows and their per-collection schema and tables."""

from __future__ import annotations

import asyncpg

from gateway.domain.identifiers import collection_schema, embedding_table, quote_ident
from gateway.domain.state import CollectionState, Phase

_STATE_COLUMNS = "name, phase, read_model, write_models, shadow_model, shadow_sample_rate, state_version"


def _state(row: asyncpg.Record) -> CollectionState:
    return CollectionState(
        name=row["name"],
        phase=Phase(row["phase"]),
        read_model=row["read_model"],
        write_models=tuple(row["write_models"]),
        shadow_model=row["shadow_model"],
        shadow_sample_rate=row["shadow_sample_rate"],
        state_version=row["state_version"],
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


async def list_states(conn: asyncpg.Connection) -> list[CollectionState]:
    rows = await conn.fetch(f"SELECT {_STATE_COLUMNS} FROM driftgate.collections ORDER BY name")
    return [_state(r) for r in rows]


async def create_collection(conn: asyncpg.Connection, name: str, model_key: str, dim: int) -> CollectionState | None:
    """Create the state row, schema, documents table and the model's table, in the caller's transaction.

    Returns None when the collection already exists (the caller compares its model).
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
    schema = quote_ident(collection_schema(name))
    await conn.execute(
        f"""CREATE SCHEMA {schema};
            CREATE SEQUENCE {schema}.versions;
            CREATE TABLE {schema}.documents (
                id         text PRIMARY KEY,
                content    text NOT NULL,
                metadata   jsonb NOT NULL DEFAULT '{{}}',
                version    bigint NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX ON {schema}.documents USING gin (metadata jsonb_path_ops);"""
    )
    await create_model_table(conn, name, model_key, dim)
    return _state(inserted)


async def create_model_table(conn: asyncpg.Connection, collection: str, model_key: str, dim: int) -> None:
    """One embedding table per (collection, model), with its own dimension and an HNSW cosine index."""
    table = model_table(collection, model_key)
    await conn.execute(
        f"""CREATE TABLE {table} (
                doc_id         text PRIMARY KEY REFERENCES {documents_table(collection)} (id) ON DELETE CASCADE,
                embedding      vector({int(dim)}) NOT NULL,
                source_version bigint NOT NULL,
                embedded_at    timestamptz NOT NULL DEFAULT now());
            CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops);"""
    )
    await conn.execute(
        """INSERT INTO driftgate.embedding_tables (collection, model_key, table_name, dim, index_ready)
           VALUES ($1, $2, $3, $4, true)""",
        collection,
        model_key,
        embedding_table(model_key),
        dim,
    )


async def count_documents(conn: asyncpg.Connection, collection: str) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM {documents_table(collection)}")
