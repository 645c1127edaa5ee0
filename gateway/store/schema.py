"""Versioned schema of driftgate's own tables, applied at start-up under an advisory lock.

Two replicas starting together both call `apply_schema`; the advisory lock serialises them
and the second finds every version already recorded. Migrations are append-only: never edit
a released entry, add a new one.
"""

from __future__ import annotations

import asyncpg

SCHEMA_LOCK_ID = 7355608002

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE driftgate.models (
            key           text PRIMARY KEY,
            name          text NOT NULL,
            revision      text NOT NULL,
            dim           integer NOT NULL CHECK (dim > 0),
            fingerprint   text NOT NULL,
            probe_texts   text[] NOT NULL,
            probe_vectors jsonb NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE driftgate.collections (
            name               text PRIMARY KEY,
            phase              text NOT NULL,
            read_model         text NOT NULL REFERENCES driftgate.models (key),
            write_models       text[] NOT NULL,
            shadow_model       text REFERENCES driftgate.models (key),
            shadow_sample_rate double precision NOT NULL DEFAULT 0,
            state_version      bigint NOT NULL DEFAULT 1,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE driftgate.embedding_tables (
            collection  text NOT NULL REFERENCES driftgate.collections (name) ON DELETE CASCADE,
            model_key   text NOT NULL REFERENCES driftgate.models (key),
            table_name  text NOT NULL,
            dim         integer NOT NULL,
            index_ready boolean NOT NULL DEFAULT false,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, model_key)
        );
        """,
    ),
    (
        2,
        """
        ALTER TABLE driftgate.collections
            ADD COLUMN source_model text,
            ADD COLUMN target_model text,
            ADD COLUMN backfill_state text NOT NULL DEFAULT 'idle',
            ADD COLUMN backfill_max_rate double precision,
            ADD COLUMN backfill_started_at timestamptz;
        ALTER TABLE driftgate.embedding_tables
            ADD COLUMN verification jsonb,
            ADD COLUMN verified_ok boolean NOT NULL DEFAULT false,
            ADD COLUMN verified_at timestamptz;
        CREATE TABLE driftgate.audit (
            id         bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT now(),
            collection text NOT NULL,
            action     text NOT NULL,
            actor      text,
            replica    text,
            forced     boolean NOT NULL DEFAULT false,
            before     jsonb,
            after      jsonb,
            detail     jsonb
        );
        CREATE TABLE driftgate.replicas (
            replica_id            text NOT NULL,
            collection            text NOT NULL,
            applied_state_version bigint NOT NULL,
            read_p99_ms           double precision,
            seen_at               timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (replica_id, collection)
        );
        CREATE TABLE driftgate.backfill_chunks (
            collection text NOT NULL,
            model_key  text NOT NULL,
            chunk_no   integer NOT NULL,
            round      integer NOT NULL,
            lo         text NOT NULL,
            hi         text NOT NULL,
            docs       integer NOT NULL,
            done       boolean NOT NULL DEFAULT false,
            written    integer NOT NULL DEFAULT 0,
            worker     text,
            done_at    timestamptz,
            PRIMARY KEY (collection, model_key, chunk_no)
        );
        CREATE TABLE driftgate.backfill_errors (
            collection  text NOT NULL,
            model_key   text NOT NULL,
            doc_id      text NOT NULL,
            doc_version bigint NOT NULL,
            reason      text NOT NULL,
            attempts    integer NOT NULL DEFAULT 1,
            last_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, model_key, doc_id)
        );
        """,
    ),
    (
        3,
        """
        ALTER TABLE driftgate.collections
            ADD COLUMN noise_floor_rate double precision NOT NULL DEFAULT 0;
        CREATE TABLE driftgate.shadow_samples (
            id            bigserial PRIMARY KEY,
            at            timestamptz NOT NULL DEFAULT now(),
            collection    text NOT NULL,
            kind          text NOT NULL,
            primary_model text NOT NULL,
            shadow_model  text NOT NULL,
            query_hash    text NOT NULL,
            query_text    text,
            k             integer NOT NULL,
            overlap       double precision NOT NULL,
            rbo           double precision NOT NULL,
            kendall_tau   double precision,
            top1          boolean NOT NULL,
            score_shift   double precision,
            primary_ms    double precision NOT NULL,
            shadow_ms     double precision NOT NULL,
            primary_ids   text[] NOT NULL,
            shadow_ids    text[] NOT NULL
        );
        """,
    ),
    (
        4,
        """
        -- one name per concept: a migration goes from one model to another, and a shadow
        -- sample pairs the read model with another model (ab) or with exact search (aa)
        ALTER TABLE driftgate.collections RENAME COLUMN source_model TO from_model;
        ALTER TABLE driftgate.collections RENAME COLUMN target_model TO to_model;
        ALTER TABLE driftgate.shadow_samples RENAME COLUMN kind TO pairing;
        ALTER TABLE driftgate.shadow_samples RENAME COLUMN primary_model TO read_model;
        ALTER TABLE driftgate.shadow_samples RENAME COLUMN primary_ms TO read_ms;
        ALTER TABLE driftgate.shadow_samples RENAME COLUMN primary_ids TO read_ids;
        """,
    ),
    (
        5,
        """
        CREATE TABLE driftgate.adoptions (
            collection       text PRIMARY KEY REFERENCES driftgate.collections (name) ON DELETE CASCADE,
            source_schema    text NOT NULL,
            source_table     text NOT NULL,
            id_column        text NOT NULL,
            text_column      text NOT NULL,
            vector_column    text NOT NULL,
            metadata_columns text[] NOT NULL DEFAULT '{}',
            id_type          text NOT NULL,
            model_key        text NOT NULL,
            follow           boolean NOT NULL,
            state            text NOT NULL,
            cursor           text,
            rows_total       bigint NOT NULL DEFAULT 0,
            rows_read        bigint NOT NULL DEFAULT 0,
            rows_imported    bigint NOT NULL DEFAULT 0,
            rows_skipped     bigint NOT NULL DEFAULT 0,
            rows_to_embed    bigint NOT NULL DEFAULT 0,
            changes_applied  bigint NOT NULL DEFAULT 0,
            applied_at       timestamptz,
            sample           jsonb,
            started_at       timestamptz NOT NULL DEFAULT now(),
            imported_at      timestamptz,
            finished_at      timestamptz,
            updated_at       timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        6,
        """
        -- a rate-capped or remote backfill commits a chunk in steps: progress counts them
        ALTER TABLE driftgate.backfill_chunks ADD COLUMN processed integer NOT NULL DEFAULT 0;
        CREATE TABLE driftgate.backfill_steps (
            collection text NOT NULL,
            model_key  text NOT NULL,
            at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            docs       integer NOT NULL
        );
        CREATE INDEX backfill_steps_recent ON driftgate.backfill_steps (collection, model_key, at);
        """,
    ),
    (
        7,
        r"""
        -- the filter language's dates (store/filters.py): an ISO-8601 string as a timestamp, NULL for
        -- any other text. The pattern is domain/filters.py's ISO_DATE; a date without an offset is UTC
        CREATE FUNCTION driftgate.iso_timestamp(value text) RETURNS timestamptz
            LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
            SET timezone = 'UTC' SET datestyle = 'ISO, YMD'
        AS $$
        BEGIN
            IF value !~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$' THEN
                RETURN NULL;
            END IF;
            RETURN value::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END
        $$;
        """,
    ),
    (
        8,
        """
        -- adoption of a shared table (LangChain's langchain_pg_embedding): a row filter
        -- (column = value, cast to the column's type) and a json column that is the metadata
        ALTER TABLE driftgate.adoptions
            ADD COLUMN metadata_json_column text,
            ADD COLUMN filter_column        text,
            ADD COLUMN filter_value         text,
            ADD COLUMN filter_type          text;
        """,
    ),
    (
        9,
        """
        -- an adoption fails alone (state 'failed' with the reason, retried with backoff), and
        -- counts the stored vectors it could not use (zero, or of another dimension)
        ALTER TABLE driftgate.adoptions
            ADD COLUMN error            text,
            ADD COLUMN failed_state     text,
            ADD COLUMN failures         integer NOT NULL DEFAULT 0,
            ADD COLUMN retry_at         timestamptz,
            ADD COLUMN vectors_unusable bigint NOT NULL DEFAULT 0;
        """,
    ),
    (
        10,
        """
        -- a learned map between a migration's two models (store/adapters.py): one row per
        -- collection and pair of fingerprints; a new fit replaces it and bumps its version
        CREATE TABLE driftgate.adapters (
            collection       text NOT NULL REFERENCES driftgate.collections (name) ON DELETE CASCADE,
            from_model       text NOT NULL,
            to_model         text NOT NULL,
            from_fingerprint text NOT NULL,
            to_fingerprint   text NOT NULL,
            version          bigint NOT NULL DEFAULT 1,
            adapt_kind       text NOT NULL,
            translate_kind   text NOT NULL,
            from_dim         integer NOT NULL,
            to_dim           integer NOT NULL,
            adapt_weights    bytea NOT NULL,
            adapt_bias       bytea NOT NULL,
            translate_weights bytea NOT NULL,
            translate_bias   bytea NOT NULL,
            validation       jsonb NOT NULL,
            fitted_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, from_fingerprint, to_fingerprint)
        );
        ALTER TABLE driftgate.collections
            ADD COLUMN read_mode text NOT NULL DEFAULT 'native',
            ADD COLUMN translate_vectors boolean NOT NULL DEFAULT false,
            ADD COLUMN adapter_version bigint;
        """,
    ),
    (
        11,
        """
        -- the element type of a model's table: 'vector' (float32) or 'halfvec' (float16, half the
        -- size of table and index); chosen when the table is created (domain/storage.py)
        ALTER TABLE driftgate.embedding_tables
            ADD COLUMN storage text NOT NULL DEFAULT 'vector' CHECK (storage IN ('vector', 'halfvec'));
        """,
    ),
)


async def apply_schema(conn: asyncpg.Connection) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied by this call."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
        await conn.execute("CREATE SCHEMA IF NOT EXISTS driftgate")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS driftgate.schema_migrations (
                   version integer PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM driftgate.schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO driftgate.schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied
