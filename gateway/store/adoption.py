"""SQL of adoption: the source table seen through the catalog, the adoption row, and the
chunked import (follow mode's triggers and queue: store/follow.py).

Every source name is a validated identifier (domain/adoption.py) and is used quoted; the id
column's type comes from the catalog (`format_type`), never from a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from gateway.domain.adoption import (
    ACTIVE_STATES,
    BUSY_STATES,
    SAFE_ID_TYPES,
    AdoptionState,
    RowFilter,
    SourceSpec,
    effective_state,
    retry_delay,
)
from gateway.domain.errors import AdoptionBroken, GatewayError, InvalidRequest, NotFound
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


async def inspect_source(conn: asyncpg.Connection, spec: SourceSpec, *, follow: bool = False) -> SourceTable:
    """Check that the table and columns exist with types the gateway can read safely, and that
    the gateway's role may read the table (and, to follow it, put triggers on it); 4xx naming
    what is wrong. Run again before every chunk and batch (`check_unchanged`), because the
    table's owner can alter it at any time."""
    table = await conn.fetchrow(
        """SELECT c.oid, c.relrowsecurity, has_table_privilege(c.oid, 'SELECT') AS can_read,
                  has_table_privilege(c.oid, 'TRIGGER') AS can_trigger
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')""",
        spec.schema,
        spec.table,
    )
    if table is None:
        raise NotFound(
            f"table {spec.qualified!r} does not exist in the gateway's database; name an existing "
            "table as schema.table",
            code="table_not_found",
        )
    _check_access(spec, table, follow)
    oid = table["oid"]
    rows = await conn.fetch(
        """SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod) AS type, t.typname, a.atttypmod,
                  t.typtype::text AS typtype, t.typnamespace = 'pg_catalog'::regnamespace AS builtin,
                  t.typnamespace = (SELECT extnamespace FROM pg_extension WHERE extname = 'vector') AS pgvector
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
    if vector["typname"] == "halfvec" and vector["pgvector"]:
        raise InvalidRequest(
            f"column {spec.vector_column!r} is {vector['type']}: adoption reads pgvector `vector` columns only. "
            f"Convert it first (ALTER TABLE {spec.qualified} ALTER COLUMN {spec.vector_column} TYPE "
            f"{vector['type'].replace('halfvec', 'vector')}), then adopt; a migration can move the collection "
            "to a halfvec table afterwards",
            code="invalid_column_type",
        )
    if not (vector["typname"] == "vector" and vector["typtype"] == "b" and vector["pgvector"]):
        raise InvalidRequest(
            f"column {spec.vector_column!r} is {vector['type']}, not a pgvector `vector`", code="invalid_column_type"
        )
    _check_types(spec, columns)
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


def _check_access(spec: SourceSpec, table: asyncpg.Record, follow: bool) -> None:
    """The gateway's role must be able to read the table, and create triggers to follow it;
    row-level security would run the owner's policy expressions with the gateway's rights."""
    if not table["can_read"] or (follow and not table["can_trigger"]):
        raise InvalidRequest(
            f"the gateway's database role may not {'read' if not table['can_read'] else 'create triggers on'} "
            f"{spec.qualified!r}; grant it SELECT on the table, and TRIGGER for follow "
            f"(GRANT SELECT, TRIGGER ON {spec.qualified} TO <gateway role>)",
            code="insufficient_privilege",
        )
    if table["relrowsecurity"]:
        raise InvalidRequest(
            f"table {spec.qualified!r} has row-level security enabled: its policies would run with the "
            "gateway's rights and could hide rows from the import; disable it, or adopt a copy of the table",
            code="row_security",
        )


def _check_types(spec: SourceSpec, columns: dict[str, asyncpg.Record]) -> None:
    """Only PostgreSQL's own types are read: a cast or operator of a type the table's owner
    created (an enum, a domain, a composite) would run the owner's code with the gateway's rights."""
    id_col = columns[spec.id_column]
    if not (id_col["builtin"] and id_col["typtype"] == "b" and id_col["typname"] in SAFE_ID_TYPES):
        raise InvalidRequest(
            f"column {spec.id_column!r} is of type {id_col['type']}, which cannot be an adopted id; use a column "
            "of type text, varchar, char, smallint, integer, bigint, numeric or uuid (not a domain, enum or "
            "composite type): add such a column, or adopt a copy of the table with one",
            code="unsafe_column_type",
        )
    others = (spec.metadata_json_column, spec.row_filter.column if spec.row_filter else None)
    for name in (spec.text_column, *spec.metadata_columns, *(c for c in others if c)):
        col = columns[name]
        if not (col["builtin"] and col["typtype"] == "b"):
            raise InvalidRequest(
                f"column {name!r} is of type {col['type']}, a type created in this database (domain, enum, composite "
                "or extension type); the gateway reads only PostgreSQL's built-in types: cast the column to text",
                code="unsafe_column_type",
            )


LOCK_WAIT_S = 5


async def check_unchanged(conn: asyncpg.Connection, source: SourceTable, *, follow: bool) -> None:
    """Lock the table against ALTER until the caller's transaction ends, then check that its
    columns still have the (safe) types the adoption recorded; raises `AdoptionBroken`."""
    try:
        # bounded: an owner's session holding the table (an open ALTER) fails this adoption alone
        await conn.execute(
            f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'; LOCK TABLE {source.relation} IN ACCESS SHARE MODE; "
            "SET LOCAL lock_timeout TO DEFAULT"
        )
        fresh = await inspect_source(conn, source.spec, follow=follow)
    except asyncpg.LockNotAvailableError:
        raise AdoptionBroken(
            f"table {source.spec.qualified!r} stayed locked by another session for {LOCK_WAIT_S} s (an ALTER TABLE or "
            "a long transaction holding it); the adoption retries by itself"
        ) from None
    except asyncpg.UndefinedTableError:
        raise AdoptionBroken(
            f"table {source.spec.qualified!r} was dropped or renamed; restore it (the adoption retries by itself)"
        ) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise AdoptionBroken(
            f"the gateway may no longer read {source.spec.qualified!r} ({exc}); grant its role SELECT on the "
            "table again (the adoption retries by itself)"
        ) from None
    except GatewayError as exc:
        raise AdoptionBroken(
            f"table {source.spec.qualified!r} changed since it was adopted: {exc.message}. Put it back as it "
            "was: the adoption retries by itself"
        ) from None
    if fresh.id_type != source.id_type:
        raise AdoptionBroken(
            f"column {source.spec.id_column!r} of {source.spec.qualified!r} changed type from {source.id_type} to "
            f"{fresh.id_type}; change it back (the adoption retries), or adopt the table again into a new collection"
        )


# a stored vector the import keeps: one with a direction. A zero vector's cosine distance is NaN, and
# so is a tiny one's (pgvector sums squares in float32, which underflow below ~1e-23 per element; a
# norm above 1e-18 keeps the largest element above that). NaN and infinity never get into a vector:
# pgvector refuses them on input.
USABLE = "vector_norm({vec}) > 1e-18"


async def count_rows(conn: asyncpg.Connection, source: SourceTable) -> int:
    return await conn.fetchval(
        f"SELECT count(*) FROM {source.relation} s WHERE true{source.where_sql(1)}", *source.where_args()
    )


async def sample_rows(conn: asyncpg.Connection, source: SourceTable, n: int) -> list[asyncpg.Record]:
    """A random sample of rows that have both a text and a usable (non-zero) vector: (id, content, embedding)."""
    s = source.spec
    text, vec = f"{source.col(s.text_column)}::text", source.col(s.vector_column)
    return await conn.fetch(
        f"""SELECT {source.col(s.id_column)}::text AS id, {text} AS content, {vec} AS embedding
            FROM {source.relation} s
            WHERE {vec} IS NOT NULL AND {USABLE.format(vec=vec)} AND {text} IS NOT NULL AND btrim({text}) <> ''{source.where_sql(2)}
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


async def busy_adoption(conn: asyncpg.Connection, collection: str) -> AdoptionState | None:
    """The adoption step that still owns the collection's backfill (importing or indexing), if any."""
    row = await conn.fetchrow("SELECT state, failed_state FROM driftgate.adoptions WHERE collection = $1", collection)
    if row is None:
        return None
    step = effective_state(row["state"], row["failed_state"])
    return step if step in BUSY_STATES else None


async def adoptions_due(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The adoptions the runner works on now: the active ones, and the failed ones due a retry."""
    return await conn.fetch(
        """SELECT * FROM driftgate.adoptions
           WHERE state = ANY($1::text[]) AND (state <> 'failed' OR retry_at <= now()) ORDER BY collection""",
        [s.value for s in ACTIVE_STATES],
    )


async def set_state(conn: asyncpg.Connection, collection: str, state: AdoptionState, **fields: object) -> None:
    """Move an adoption to `state` (clearing any failure), setting the named columns (fixed
    names from this package)."""
    names = list(fields)
    sets = "".join(f", {quote_ident(k)} = ${i + 3}" for i, k in enumerate(names))
    await conn.execute(
        f"""UPDATE driftgate.adoptions SET state = $2, updated_at = now(), error = NULL, failed_state = NULL,
                failures = 0, retry_at = NULL{sets} WHERE collection = $1""",
        collection,
        state.value,
        *fields.values(),
    )


async def record_failure(conn: asyncpg.Connection, collection: str, step: AdoptionState, error: str) -> int:
    """Mark the adoption `failed` in `step` with the reason and the time of the next try (backoff,
    see domain/adoption.py); returns how many times in a row it has failed."""
    failures = await conn.fetchval(
        """UPDATE driftgate.adoptions SET state = 'failed', failed_state = $2, error = $3, failures = failures + 1,
               updated_at = now() WHERE collection = $1 RETURNING failures""",
        collection,
        step.value,
        error[:2000],
    )
    if failures is None:
        return 0  # the collection was deleted meanwhile
    await conn.execute(
        "UPDATE driftgate.adoptions SET retry_at = now() + make_interval(secs => $2) WHERE collection = $1",
        collection,
        retry_delay(failures),
    )
    return failures


async def recover(conn: asyncpg.Connection, collection: str) -> bool:
    """A failed adoption's retry succeeded: back to the step it was in. True when it was failed."""
    status = await conn.execute(
        """UPDATE driftgate.adoptions SET state = failed_state, failed_state = NULL, error = NULL, failures = 0,
               retry_at = NULL, updated_at = now() WHERE collection = $1 AND state = 'failed'""",
        collection,
    )
    return status != "UPDATE 0"


# -- the import ----------------------------------------------------------------------------------


async def chunk_documents(
    conn: asyncpg.Connection, source: SourceTable, cursor: str | None, limit: int
) -> list[asyncpg.Record]:
    """(id, content) of the next `limit` rows after `cursor`: what `import_chunk` copies next
    (read in the same REPEATABLE READ transaction, so both see the same rows)."""
    s = source.spec
    id_ = source.col(s.id_column)
    return await conn.fetch(
        f"""SELECT {id_}::text AS id, {source.col(s.text_column)}::text AS content FROM {source.relation} s
            WHERE ($1::text IS NULL OR {id_} > CAST($1::text AS {source.id_type})){source.where_sql(3)}
            ORDER BY {id_} LIMIT $2""",
        cursor,
        limit,
        *source.where_args(),
    )


async def import_chunk(
    conn: asyncpg.Connection,
    collection: str,
    model_key: str,
    dim: int,
    source: SourceTable,
    cursor: str | None,
    limit: int,
    skip: list[str],
) -> tuple[str | None, int]:
    """Copy the next `limit` rows after `cursor` (in id order) into the documents and the model's
    table with one statement, and advance the cursor, in the caller's transaction.

    Rows in `skip` (the caller's verdict with the write path's rule: a NULL or blank text, an id
    that is not a valid document id) are skipped and counted; a NULL vector leaves the document without an embedding for the backfill to make,
    and so does an unusable one (zero, or of another dimension), counted in `vectors_unusable`.
    Returns (new cursor, rows read); 0 rows: the end.
    """
    s = source.spec
    id_, text, vec = source.col(s.id_column), f"{source.col(s.text_column)}::text", source.col(s.vector_column)
    docs = documents_table(collection)
    versions = quote_ident(collection_schema(collection)) + ".versions"
    row = await conn.fetchrow(
        f"""WITH src AS MATERIALIZED (
                SELECT {id_} AS key, {id_}::text AS id, {text} AS content, {source.metadata_sql()} AS metadata,
                       {vec} IS NOT NULL AS stored,
                       CASE WHEN vector_dims({vec}) = $3 AND {USABLE.format(vec=vec)} THEN {vec} END AS embedding
                FROM {source.relation} s
                WHERE ($1::text IS NULL OR {id_} > CAST($1::text AS {source.id_type})){source.where_sql(4)}
                ORDER BY {id_} LIMIT $2),
            docs AS (
                INSERT INTO {docs} (id, content, metadata, version)
                SELECT id, content, metadata, nextval('{versions}') FROM src
                WHERE content IS NOT NULL AND NOT (id = ANY(${4 + len(source.where_args())}::text[]))
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
                   (SELECT count(*) FROM emb) AS with_vector,
                   (SELECT count(*) FROM docs d JOIN src ON src.id = d.id
                    WHERE src.stored AND src.embedding IS NULL) AS unusable""",
        cursor,
        limit,
        dim,
        *source.where_args(),
        skip,
    )
    read, imported = row["read"], row["imported"]
    if read:
        await conn.execute(
            """UPDATE driftgate.adoptions SET cursor = $2, rows_read = rows_read + $3,
                   rows_imported = rows_imported + $4, rows_skipped = rows_skipped + $3 - $4,
                   rows_to_embed = rows_to_embed + $4 - $5, vectors_unusable = vectors_unusable + $6,
                   updated_at = now()
               WHERE collection = $1""",
            collection,
            row["last"],
            read,
            imported,
            row["with_vector"],
            row["unusable"],
        )
    return (row["last"] if read else cursor), read


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
