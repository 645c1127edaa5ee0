"""SQL of follow mode: the triggers on an adopted table, the queue they feed, and what the
applier reads and writes (services/follow.py).

Statement-level triggers on the source table write the ids of changed rows into
`dgc_<c>.follow_queue` inside the writer's own transaction, so a change and its queue entry
commit (or roll back) together. The queue holds *which* rows changed, not their values: the
applier reads entries, re-reads those rows as committed now, makes the collection match and
deletes the entries it applied, in one transaction.
Entries are deleted when applied, never passed by a cursor, so a transaction that commits after
a later-numbered one is still applied when it becomes visible; and because the applier reads
the committed row under one lock per collection, the collection moves through the table's
states in commit order and ends on the latest committed value.

The capture function runs with the writer's rights (SECURITY INVOKER, pinned search_path) and
touches only the queue: nothing the table's owner controls runs with the gateway's rights.
"""

from __future__ import annotations

import asyncpg

from gateway.domain.errors import AdoptionBroken
from gateway.domain.identifiers import collection_schema, quote_ident
from gateway.store.adoption import SourceTable
from gateway.store.collections import documents_table


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


async def install_follow(conn: asyncpg.Connection, collection: str, source: SourceTable) -> list[str]:
    """Create the queue, the capture function and the triggers on the source table; returns the
    roles granted the right to fill the queue (see `_capture_function`)."""
    await conn.execute(
        f"""CREATE TABLE {_queue(collection)} (
                seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                doc_id      text,
                op          "char" NOT NULL,
                enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
    )
    roles = await _capture_function(conn, collection, source)
    for suffix, (event, referencing) in _EVENTS.items():
        await conn.execute(
            f"CREATE TRIGGER {_trigger(collection, suffix)} AFTER {event} ON {source.relation} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_function(collection)}()"
        )
    return roles


async def _capture_function(conn: asyncpg.Connection, collection: str, source: SourceTable) -> list[str]:
    """(Re)create the capture function and grant the table's writers what it needs.

    The function is SECURITY INVOKER: it runs with the rights of whoever writes the table, never
    the gateway's, so nothing the table's owner controls (a cast of the id column's type, say)
    runs as the gateway. Its search path is pinned, it only inserts into the queue, and the
    table's writers get exactly that: USAGE on the collection's schema and INSERT on the queue
    (USAGE on its sequence too: a bigserial queue of earlier versions needs it). See `writer_roles`.
    """
    queue, key, function = _queue(collection), quote_ident(source.spec.id_column), _function(collection)
    await conn.execute(
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER
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
            END $fn$;
            REVOKE ALL ON FUNCTION {function}() FROM PUBLIC;"""
    )
    roles = await writer_roles(conn, source)
    if roles:
        grantees = ", ".join(roles)
        schema = quote_ident(collection_schema(collection))
        await conn.execute(
            f"GRANT USAGE ON SCHEMA {schema} TO {grantees}; GRANT INSERT ON {queue} TO {grantees}; "
            f"GRANT EXECUTE ON FUNCTION {function}() TO {grantees}"
        )
        serial = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'seq')", queue)
        if serial is not None:  # returned quoted where it must be
            await conn.execute(f"GRANT USAGE ON SEQUENCE {serial} TO {grantees}")
    return roles


async def secure_capture(conn: asyncpg.Connection, collection: str, source: SourceTable) -> bool:
    """Replace a capture function that runs with the gateway's rights (SECURITY DEFINER, as
    versions before this one made it) by the invoker-rights one. True when it did."""
    definer = await conn.fetchval(
        "SELECT prosecdef FROM pg_proc WHERE oid = to_regprocedure($1)", f"{_function(collection)}()"
    )
    if not definer:
        return False
    await _capture_function(conn, collection, source)
    return True


async def writer_roles(conn: asyncpg.Connection, source: SourceTable) -> list[str]:
    """Who may change the table now, quoted for a GRANT: its owner and every role (or PUBLIC)
    holding INSERT, UPDATE, DELETE or TRUNCATE on it. Members of those roles inherit the grant;
    a role given write access later needs `GRANT INSERT ON dgc_<c>.follow_queue` too (docs)."""
    rows = await conn.fetch(
        """SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS role
           FROM pg_class c
           CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           LEFT JOIN pg_roles r ON r.oid = a.grantee
           WHERE c.oid = $1::regclass AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
           UNION SELECT quote_ident(r.rolname) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
           WHERE c.oid = $1::regclass
           ORDER BY 1""",
        source.relation,
    )
    return [r["role"] for r in rows]


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


async def queued_changes(conn: asyncpg.Connection, collection: str, limit: int | None) -> list[asyncpg.Record]:
    """The oldest visible queue entries (all of them with `limit` None), locked until the caller's
    transaction ends; `delete_changes` removes the ones applied, in the same transaction."""
    queue = _queue(collection)
    return await conn.fetch(
        f"SELECT seq, doc_id, op FROM {queue} ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )


async def delete_changes(conn: asyncpg.Connection, collection: str, seqs: list[int]) -> None:
    await conn.execute(f"DELETE FROM {_queue(collection)} WHERE seq = ANY($1::bigint[])", seqs)


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


async def delete_absent(conn: asyncpg.Connection, collection: str, source: SourceTable) -> int:
    """After a TRUNCATE of the source: drop every document whose row is gone."""
    s = source.spec
    status = await conn.execute(
        f"""DELETE FROM {documents_table(collection)} d WHERE NOT EXISTS (
                SELECT 1 FROM {source.relation} s WHERE {source.col(s.id_column)}::text = d.id{source.where_sql(1)})""",
        *source.where_args(),
    )
    return int(status.rsplit(" ", 1)[-1])


async def record_applied(conn: asyncpg.Connection, collection: str, changes: int, skipped: int = 0) -> None:
    """Count applied changes, and changed rows skipped as not valid documents (in `rows_skipped`)."""
    await conn.execute(
        """UPDATE driftgate.adoptions SET changes_applied = changes_applied + $2, applied_at = now(),
               rows_skipped = rows_skipped + $3, updated_at = now() WHERE collection = $1""",
        collection,
        changes,
        skipped,
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
    """Names of driftgate's enabled triggers on the source table (what `stop` must leave empty)."""
    rows = await conn.fetch(
        """SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname LIKE 'dgf\\_%' AND NOT t.tgisinternal
                 AND t.tgenabled <> 'D'""",
        source.spec.schema,
        source.spec.table,
    )
    return [r["tgname"] for r in rows]


async def check_capturing(conn: asyncpg.Connection, collection: str, source: SourceTable) -> None:
    """A followed table must still have all four enabled capture triggers; else changes are lost."""
    expected = {_trigger(collection, event).strip('"') for event in _EVENTS}
    missing = expected - set(await follow_triggers(conn, source))
    if missing:
        raise AdoptionBroken(
            f"the capture triggers {', '.join(sorted(missing))} on {source.spec.qualified!r} were dropped or "
            "disabled: changes to the table are no longer captured; delete the collection and adopt the table "
            "again (ALTER TABLE ... ENABLE TRIGGER restores a disabled one, but changes made meanwhile are missed)"
        )
