"""SQL of adoption: the source table seen through the catalog, the chunked import, and the
trigger-fed queue that follows the table's legacy writers.

Every source name is a validated identifier (domain/adoption.py) and is used quoted; the id
column's type comes from the catalog (`format_type`), never from a request.

Follow mode: statement-level triggers on the source table write the ids of changed rows into
`dgc_<c>.follow_queue` inside the writer's own transaction, so a change and its queue entry
commit (or roll back) together. The queue holds *which* rows changed, not their values: the
applier claims entries, re-reads those rows as committed now, and makes the collection match.
Entries are deleted when applied, never passed by a cursor, so a transaction that commits after
a later-numbered one is still applied when it becomes visible; and because the applier reads
the committed row under one lock per collection, the collection moves through the table's
states in commit order and ends on the latest committed value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from gateway.domain.adoption import AdoptionState, RowFilter, SourceSpec
from gateway.domain.errors import InvalidRequest, NotFound
from gateway.domain.identifiers import collection_schema, quote_ident
from gateway.store.collections import documents_table, model_table


@dataclass(frozen=True)
class SourceTable:
    """A source table as the catalog describes it."""

    spec: SourceSpec
    id_type: str  # format_type() of the id column, e.g. "bigint" or "character varying(40)"
    vector_dim: int | None  # the vector column's declared dimension; None when undeclared
    filter_type: str | None = None  # format_type() of the row filter's column

    @property
    def relation(self) -> str:
        return f"{quote_ident(self.spec.schema)}.{quote_ident(self.spec.table)}"

    def col(self, name: str) -> str:
        return "s." + quote_ident(name)

    def metadata_sql(self) -> str:
        """A jsonb object: the metadata json column's object (a non-object value is kept under the
        column's name), then the metadata columns (names are validated identifiers: safe literals)."""
        parts = []
        if self.spec.metadata_json_column:
            name, value = self.spec.metadata_json_column, f"{self.col(self.spec.metadata_json_column)}::jsonb"
            parts.append(
                f"(CASE WHEN {value} IS NULL OR jsonb_typeof({value}) = 'null' THEN '{{}}'::jsonb "
                f"WHEN jsonb_typeof({value}) = 'object' THEN {value} ELSE jsonb_build_object('{name}', {value}) END)"
            )
        if self.spec.metadata_columns:
            pairs = ", ".join(f"'{c}', {self.col(c)}" for c in self.spec.metadata_columns)
            parts.append(f"jsonb_strip_nulls(jsonb_build_object({pairs}))")
        return " || ".join(parts) or "'{}'::jsonb"

    def where_sql(self, param: int) -> str:
        """`AND <row filter>` with its value as parameter `$param` (see `where_args`), or nothing."""
        if self.spec.row_filter is None:
            return ""
        return f" AND {self.col(self.spec.row_filter.column)} = CAST(${param}::text AS {self.filter_type})"

    def where_args(self) -> tuple[str, ...]:
        return (self.spec.row_filter.value,) if self.spec.row_filter else ()


async def inspect_source(conn: asyncpg.Connection, spec: SourceSpec) -> SourceTable:
    """Check that the table and columns exist with usable types; 4xx naming what is wrong."""
    oid = await conn.fetchval(
        """SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')""",
        spec.schema,
        spec.table,
    )
    if oid is None:
        raise NotFound(
            f"table {spec.qualified!r} does not exist in the gateway's database; name an existing "
            "table as schema.table",
            code="table_not_found",
        )
    rows = await conn.fetch(
        """SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod) AS type, t.typname, a.atttypmod
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped""",
        oid,
    )
    columns = {r["attname"]: r for r in rows}
    for name in spec.columns:
        if name not in columns:
            raise InvalidRequest(
                f"table {spec.qualified!r} has no column {name!r} (columns: {', '.join(sorted(columns))})",
                code="column_not_found",
            )
    vector = columns[spec.vector_column]
    if vector["typname"] != "vector":
        raise InvalidRequest(
            f"column {spec.vector_column!r} is {vector['type']}, not a pgvector `vector`", code="invalid_column_type"
        )
    unique = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique
                          AND i.indnkeyatts = 1 AND i.indkey[0] = $2 AND i.indpred IS NULL)""",
        oid,
        columns[spec.id_column]["attnum"],
    )
    if not unique:
        raise InvalidRequest(
            f"column {spec.id_column!r} is not the table's primary key or a unique column; document ids must be unique",
            code="id_not_unique",
        )
    if spec.metadata_json_column and columns[spec.metadata_json_column]["typname"] not in ("json", "jsonb"):
        raise InvalidRequest(
            f"column {spec.metadata_json_column!r} is {columns[spec.metadata_json_column]['type']}, not json or "
            "jsonb; name a json column as the metadata, or list plain columns as metadata columns",
            code="invalid_column_type",
        )
    filter_type = await _check_row_filter(conn, spec.row_filter, columns)
    dim = vector["atttypmod"]
    return SourceTable(spec, columns[spec.id_column]["type"], dim if dim > 0 else None, filter_type)


async def _check_row_filter(conn: asyncpg.Connection, row_filter: RowFilter | None, columns: dict) -> str | None:
    """The filter column's type, once its value is known to be a valid value of that type."""
    if row_filter is None:
        return None
    column = columns[row_filter.column]
    try:
        await conn.fetchval(f"SELECT CAST($1::text AS {column['type']})", row_filter.value)
    except (asyncpg.DataError, asyncpg.InvalidTextRepresentationError) as exc:
        raise InvalidRequest(
            f"row filter value {row_filter.value!r} is not a valid {column['type']} for column "
            f"{row_filter.column!r} ({exc})",
            code="invalid_row_filter",
        ) from None
    return column["type"]


async def count_rows(conn: asyncpg.Connection, source: SourceTable) -> int:
    return await conn.fetchval(
        f"SELECT count(*) FROM {source.relation} s WHERE true{source.where_sql(1)}", *source.where_args()
    )


async def sample_rows(conn: asyncpg.Connection, source: SourceTable, n: int) -> list[asyncpg.Record]:
    """A random sample of rows that have both a text and a vector: (id, content, embedding)."""
    s = source.spec
    text = f"{source.col(s.text_column)}::text"
    return await conn.fetch(
        f"""SELECT {source.col(s.id_column)}::text AS id, {text} AS content, {source.col(s.vector_column)} AS embedding
            FROM {source.relation} s
            WHERE {source.col(s.vector_column)} IS NOT NULL AND {text} IS NOT NULL AND btrim({text}) <> ''{source.where_sql(2)}
            ORDER BY random() LIMIT $1""",
        n,
        *source.where_args(),
    )


# -- the adoption row (state, cursor, counters) ------------------------------------------------


async def create_adoption(
    conn: asyncpg.Connection, collection: str, source: SourceTable, model_key: str, follow: bool, sample: dict
) -> None:
    s = source.spec
    await conn.execute(
        """INSERT INTO driftgate.adoptions (collection, source_schema, source_table, id_column, text_column,
               vector_column, metadata_columns, id_type, model_key, follow, state, sample,
               metadata_json_column, filter_column, filter_value, filter_type)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16)""",
        collection,
        s.schema,
        s.table,
        s.id_column,
        s.text_column,
        s.vector_column,
        list(s.metadata_columns),
        source.id_type,
        model_key,
        follow,
        AdoptionState.IMPORTING.value,
        json.dumps(sample),
        s.metadata_json_column,
        s.row_filter.column if s.row_filter else None,
        s.row_filter.value if s.row_filter else None,
        source.filter_type,
    )


async def get_adoption(conn: asyncpg.Connection, collection: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM driftgate.adoptions WHERE collection = $1", collection)


def source_of(row: asyncpg.Record) -> SourceTable:
    spec = SourceSpec(
        row["source_schema"],
        row["source_table"],
        row["id_column"],
        row["text_column"],
        row["vector_column"],
        tuple(row["metadata_columns"]),
        row["metadata_json_column"],
        RowFilter(row["filter_column"], row["filter_value"]) if row["filter_column"] else None,
    )
    return SourceTable(spec, row["id_type"], None, row["filter_type"])


async def adoptions_in(conn: asyncpg.Connection, states: tuple[AdoptionState, ...]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM driftgate.adoptions WHERE state = ANY($1::text[]) ORDER BY collection", [s.value for s in states]
    )


async def set_state(conn: asyncpg.Connection, collection: str, state: AdoptionState, **fields: object) -> None:
    """Move an adoption to `state`, setting the named columns (fixed names from this package)."""
    names = list(fields)
    sets = "".join(f", {quote_ident(k)} = ${i + 3}" for i, k in enumerate(names))
    await conn.execute(
        f"UPDATE driftgate.adoptions SET state = $2, updated_at = now(){sets} WHERE collection = $1",
        collection,
        state.value,
        *fields.values(),
    )


# -- the import ----------------------------------------------------------------------------------


async def import_chunk(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    dim: int,
    source: SourceTable,
    cursor: str | None,
    limit: int,
) -> tuple[str | None, int]:
    """Copy the next `limit` rows after `cursor` (in id order) into the documents and the model's
    table with one statement, and advance the cursor, in the caller's transaction.

    Rows with a NULL or blank text, or an id that is not a valid document id, are skipped and
    counted; a NULL vector (or one of another dimension) leaves the document without an
    embedding for the backfill to make. Returns (new cursor, rows read); 0 rows: the end.
    """
    s = source.spec
    id_, text, vec = source.col(s.id_column), f"{source.col(s.text_column)}::text", source.col(s.vector_column)
    docs = documents_table(collection)
    versions = quote_ident(collection_schema(collection)) + ".versions"
    row = await conn.fetchrow(
        f"""WITH src AS MATERIALIZED (
                SELECT {id_} AS key, {id_}::text AS id, {text} AS content, {source.metadata_sql()} AS metadata,
                       CASE WHEN vector_dims({vec}) = $3 THEN {vec} END AS embedding
                FROM {source.relation} s
                WHERE ($1::text IS NULL OR {id_} > CAST($1::text AS {source.id_type})){source.where_sql(4)}
                ORDER BY {id_} LIMIT $2),
            docs AS (
                INSERT INTO {docs} (id, content, metadata, version)
                SELECT id, content, metadata, nextval('{versions}') FROM src
                WHERE content IS NOT NULL AND btrim(content) <> '' AND length(id) BETWEEN 1 AND 256
                ON CONFLICT (id) DO NOTHING
                RETURNING id, version),
            emb AS (
                INSERT INTO {model_table(collection, model_key)} (doc_id, embedding, source_version)
                SELECT d.id, src.embedding, d.version FROM docs d JOIN src ON src.id = d.id
                WHERE src.embedding IS NOT NULL
                RETURNING 1)
            SELECT (SELECT k.key FROM src k ORDER BY k.key DESC LIMIT 1)::text AS last,
                   (SELECT count(*) FROM src) AS read,
                   (SELECT count(*) FROM docs) AS imported,
                   (SELECT count(*) FROM emb) AS with_vector""",
        cursor,
        limit,
        dim,
        *source.where_args(),
    )
    read, imported = row["read"], row["imported"]
    if read:
        await conn.execute(
            """UPDATE driftgate.adoptions SET cursor = $2, rows_read = rows_read + $3,
                   rows_imported = rows_imported + $4, rows_skipped = rows_skipped + $3 - $4,
                   rows_to_embed = rows_to_embed + $4 - $5, updated_at = now()
               WHERE collection = $1""",
            collection,
            row["last"],
            read,
            imported,
            row["with_vector"],
        )
    return (row["last"] if read else cursor), read


# -- follow mode: triggers and the queue -----------------------------------------------------------


def _queue(collection: str) -> str:
    return f"{quote_ident(collection_schema(collection))}.follow_queue"


def _function(collection: str) -> str:
    return f"{quote_ident(collection_schema(collection))}.follow_capture"


def _trigger(collection: str, event: str) -> str:
    return quote_ident(f"dgf_{collection}_{event}")


_EVENTS = {  # trigger suffix -> (event, transition tables)
    "ins": ("INSERT", "REFERENCING NEW TABLE AS new_rows"),
    "upd": ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    "del": ("DELETE", "REFERENCING OLD TABLE AS old_rows"),
    "trn": ("TRUNCATE", ""),
}


async def install_follow(conn: asyncpg.Connection, collection: str, source: SourceTable) -> None:
    """Create the queue, the capture function and the triggers on the source table.

    SECURITY DEFINER lets the legacy writers' role fill the queue without any grant on
    driftgate's schemas; the search path is pinned so the function cannot be redirected.
    """
    queue, key = _queue(collection), quote_ident(source.spec.id_column)
    await conn.execute(
        f"""CREATE TABLE {queue} (
                seq         bigserial PRIMARY KEY,
                doc_id      text,
                op          "char" NOT NULL,
                enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp());
            CREATE FUNCTION {_function(collection)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
            SET search_path = pg_catalog, pg_temp AS $fn$
            BEGIN
                IF TG_OP = 'INSERT' THEN
                    INSERT INTO {queue} (doc_id, op) SELECT n.{key}::text, 'I' FROM new_rows n;
                ELSIF TG_OP = 'UPDATE' THEN
                    INSERT INTO {queue} (doc_id, op)
                        SELECT o.{key}::text, 'U' FROM old_rows o
                        UNION SELECT n.{key}::text, 'U' FROM new_rows n;
                ELSIF TG_OP = 'DELETE' THEN
                    INSERT INTO {queue} (doc_id, op) SELECT o.{key}::text, 'D' FROM old_rows o;
                ELSE
                    INSERT INTO {queue} (doc_id, op) VALUES (NULL, 'T');
                END IF;
                RETURN NULL;
            END $fn$;"""
    )
    for suffix, (event, referencing) in _EVENTS.items():
        await conn.execute(
            f"CREATE TRIGGER {_trigger(collection, suffix)} AFTER {event} ON {source.relation} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_function(collection)}()"
        )


async def remove_triggers(conn: asyncpg.Connection, collection: str, source: SourceTable) -> None:
    for event in _EVENTS:
        await conn.execute(f"DROP TRIGGER IF EXISTS {_trigger(collection, event)} ON {source.relation}")


async def drop_queue(conn: asyncpg.Connection, collection: str) -> None:
    await conn.execute(f"DROP FUNCTION IF EXISTS {_function(collection)}(); DROP TABLE IF EXISTS {_queue(collection)}")


async def lock_follow(conn: asyncpg.Connection, collection: str) -> None:
    """Serialise queue work on one collection across replicas, until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"driftgate-follow:{collection}")


async def queue_exists(conn: asyncpg.Connection, collection: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _queue(collection))


async def claim_changes(conn: asyncpg.Connection, collection: str, limit: int) -> list[asyncpg.Record]:
    """Take (delete) the oldest visible queue entries, in the caller's transaction."""
    queue = _queue(collection)
    return await conn.fetch(
        f"""DELETE FROM {queue} WHERE seq IN (SELECT seq FROM {queue} ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
            RETURNING seq, doc_id, op""",
        limit,
    )


async def current_rows(conn: asyncpg.Connection, source: SourceTable, ids: list[str]) -> list[asyncpg.Record]:
    """The committed rows for these ids now: (id, content, metadata); absent ids were deleted."""
    s = source.spec
    return await conn.fetch(
        f"""SELECT {source.col(s.id_column)}::text AS id, {source.col(s.text_column)}::text AS content,
                   {source.metadata_sql()} AS metadata
            FROM {source.relation} s
            WHERE {source.col(s.id_column)} = ANY(CAST($1::text[] AS {source.id_type}[])){source.where_sql(2)}""",
        ids,
        *source.where_args(),
    )


async def delete_documents(conn: asyncpg.Connection, collection: str, ids: list[str]) -> int:
    status = await conn.execute(f"DELETE FROM {documents_table(collection)} WHERE id = ANY($1::text[])", ids)
    return int(status.rsplit(" ", 1)[-1])


async def delete_absent(conn: asyncpg.Connection, collection: str, source: SourceTable) -> int:
    """After a TRUNCATE of the source: drop every document whose row is gone."""
    s = source.spec
    status = await conn.execute(
        f"""DELETE FROM {documents_table(collection)} d WHERE NOT EXISTS (
                SELECT 1 FROM {source.relation} s WHERE {source.col(s.id_column)}::text = d.id{source.where_sql(1)})""",
        *source.where_args(),
    )
    return int(status.rsplit(" ", 1)[-1])


async def record_applied(conn: asyncpg.Connection, collection: str, changes: int) -> None:
    await conn.execute(
        """UPDATE driftgate.adoptions SET changes_applied = changes_applied + $2, applied_at = now(),
               updated_at = now() WHERE collection = $1""",
        collection,
        changes,
    )


async def queue_lag(conn: asyncpg.Connection, collection: str) -> dict:
    """Entries waiting and the age of the oldest one (0 when the queue is empty)."""
    row = await conn.fetchrow(
        f"""SELECT count(*) AS pending,
                   coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0)::float8 AS lag_s
            FROM {_queue(collection)}"""
    )
    return {"pending": row["pending"], "lag_s": round(row["lag_s"], 3)}


async def follow_triggers(conn: asyncpg.Connection, source: SourceTable) -> list[str]:
    """Names of driftgate's triggers on the source table (what `stop` must leave empty)."""
    rows = await conn.fetch(
        """SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname LIKE 'dgf\\_%' AND NOT t.tgisinternal""",
        source.spec.schema,
        source.spec.table,
    )
    return [r["tgname"] for r in rows]


async def set_rows_total(conn: asyncpg.Connection, collection: str, total: int) -> None:
    await conn.execute("UPDATE driftgate.adoptions SET rows_total = $2 WHERE collection = $1", collection, total)


async def exists_and_follows(conn: asyncpg.Connection, collection: str) -> tuple[bool, bool]:
    """Whether the collection exists, and whether it follows a legacy table."""
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM driftgate.collections WHERE name = $1),
                  EXISTS (SELECT 1 FROM driftgate.adoptions WHERE collection = $1 AND follow)""",
        collection,
    )
    return bool(row[0]), bool(row[1])
