"""Adopted and followed tables belong to someone else: security and reliability (issue 23).

The legacy tables here are owned by a separate, non-superuser role, as in production, and
that role attacks the gateway the way a table owner can: by changing its own table. Real
PostgreSQL throughout; the roles are created by the test server's superuser.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pytest

from gateway.domain.adoption import AdoptionState, effective_state, retry_delay
from gateway.store.collections import documents_table, model_table
from tests.helpers import L3, L6, TOKEN
from tests.test_adopt import admin, adopt_body, adopt_settings, connect, settled, wait_for


@pytest.fixture
def dsn(empty_dsn: str) -> str:
    """An empty database: a gateway here may run as a plain role, so it creates driftgate's schema
    itself (as on a new database) instead of finding one that the superuser owns."""
    return empty_dsn


DIM = 384


def as_role(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.split("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}:@{netloc}"))


async def make_role(dsn: str, *, gateway: bool = False) -> str:
    """A fresh LOGIN role without superuser. The legacy owner gets its own schema `legacy`; a
    gateway role gets what a production gateway gets: CREATE on the database (its schemas)."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER")
        database = await conn.fetchval("SELECT current_database()")
        if gateway:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO {role}')
        else:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS legacy AUTHORIZATION {role}")
    finally:
        await conn.close()
    return role


async def legacy_table(dsn: str, owner: str, table: str, n: int, *, zero: tuple[int, ...] = ()) -> None:
    """`legacy.<table>(id bigint, body text, embedding vector(384))` owned by `owner`, with
    random unit vectors (adopted with `sample: 0`) and zero vectors at the ids in `zero`."""
    rng = np.random.default_rng(n)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in zero:
        vectors[i] = 0
    conn = await connect(as_role(dsn, owner))
    try:
        await conn.execute(f"CREATE TABLE legacy.{table} (id bigint PRIMARY KEY, body text, embedding vector({DIM}))")
        await conn.executemany(
            f"INSERT INTO legacy.{table} VALUES ($1, $2, $3)",
            [(i, f"legacy row {i} about topic {i % 5}", vectors[i]) for i in range(n)],
        )
    finally:
        await conn.close()


def body_for(table: str, **extra) -> dict:
    return adopt_body(table=f"legacy.{table}", metadata_columns=[], sample=0, **extra)


async def run_sql(dsn: str, *statements: str):
    conn = await asyncpg.connect(dsn)
    try:
        result = None
        for statement in statements:
            result = await conn.fetch(statement)
        return result
    finally:
        await conn.close()


async def adoption_of(client, name: str) -> dict:
    status, body = await admin(client, "GET", f"{name}/status")
    assert status == 200, body
    return body["adoption"]


async def until_failed(client, name: str) -> dict:
    async def check():
        adoption = await adoption_of(client, name)
        return (adoption if adoption["state"] == "failed" else None), (adoption["state"], adoption["changes_applied"])

    return await wait_for(check, f"adoption of {name} failing")


# -- 1. privilege escalation through a followed table ------------------------------------------------


async def test_a_table_owner_who_retypes_the_followed_id_with_an_evil_cast_never_becomes_superuser(make_client, dsn):
    owner = await make_role(dsn)
    client = await make_client(adopt_settings(), admin_token=TOKEN)  # the gateway connects as a superuser
    await legacy_table(dsn, owner, "items", 12)

    # id columns of the owner's own types are refused up front, naming the column and the type
    await run_sql(
        as_role(dsn, owner),
        "CREATE TYPE legacy.color AS ENUM ('red', 'green')",
        f"CREATE TABLE legacy.enum_ids (id legacy.color PRIMARY KEY, body text, embedding vector({DIM}))",
        "CREATE DOMAIN legacy.label AS text",
        f"CREATE TABLE legacy.domain_text (id int PRIMARY KEY, body legacy.label, embedding vector({DIM}))",
    )
    for table, column, kind in (("enum_ids", "id", "legacy.color"), ("domain_text", "body", "legacy.label")):
        status, body = await admin(client, "POST", "refused/adopt", body_for(table, follow=True))
        assert (status, body["error"]["code"]) == (400, "unsafe_column_type"), body
        assert repr(column) in body["error"]["message"] and kind in body["error"]["message"]

    status, body = await admin(client, "POST", "docs/adopt", body_for("items", follow=True))
    assert status == 202, body
    await settled(client)
    legacy = await connect(as_role(dsn, owner))
    try:
        # the trigger runs as the writer, who was granted exactly the queue: its writes are followed
        await legacy.execute("INSERT INTO legacy.items (id, body) VALUES (100, 'written by the owner')")
        await settled(client)
        capture = "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'dgc_docs.follow_capture'::regproc"
        function = await legacy.fetchrow(capture)
        assert function["prosecdef"] is False and function["proconfig"] == ["search_path=pg_catalog, pg_temp"]
        # a follow set up by an earlier version (SECURITY DEFINER) is put right by the runner
        await run_sql(dsn, "ALTER FUNCTION dgc_docs.follow_capture() SECURITY DEFINER")

        async def repaired():
            return (await legacy.fetchrow(capture))["prosecdef"] is False, None

        await wait_for(repaired, "the capture function losing SECURITY DEFINER")

        # the attack: the id becomes an enum whose cast to text promotes the owner when run by anyone else
        await legacy.execute(
            f"""CREATE TYPE legacy.idenum AS ENUM ({", ".join(f"'{i}'" for i in range(200))});
                CREATE FUNCTION legacy.evil(v legacy.idenum) RETURNS text LANGUAGE plpgsql AS $$
                BEGIN
                    IF current_user <> '{owner}' THEN EXECUTE 'ALTER ROLE {owner} SUPERUSER'; END IF;
                    RETURN format('%s', v);
                END $$;
                CREATE CAST (legacy.idenum AS text) WITH FUNCTION legacy.evil(legacy.idenum);
                ALTER TABLE legacy.items ALTER COLUMN id TYPE legacy.idenum USING id::text::legacy.idenum"""
        )
        await legacy.execute("INSERT INTO legacy.items (id, body) VALUES ('150', 'inserted after the attack')")
        failed = await until_failed(client, "docs")  # the applier looked at the table, and refused it
        assert "changed since it was adopted: column 'id' is of type legacy.idenum" in failed["error"], failed
        assert await legacy.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False

        # stop is all or nothing: refused while the table cannot be read safely, triggers and queue kept
        status, body = await admin(client, "POST", "docs/adopt/stop")
        assert (status, body["error"]["code"]) == (409, "adoption_broken"), body
        triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'legacy.items'::regclass AND NOT tgisinternal"
        assert await legacy.fetchval(triggers) == 4
        metrics = await (await client.get("/metrics")).text()
        assert 'driftgate_adoption_failures_total{collection="docs"}' in metrics

        # the owner puts the id back: the follow recovers by itself and nothing written meanwhile is lost
        await legacy.execute(
            "ALTER TABLE legacy.items ALTER COLUMN id TYPE bigint USING id::text::bigint; "
            "DROP CAST (legacy.idenum AS text)"
        )
        await settled(client)
        assert await _doc(dsn, "docs", "150") == "inserted after the attack"
        status, body = await admin(client, "POST", "docs/adopt/stop")
        assert status == 200 and body["adoption"]["state"] == "stopped", body
        assert await legacy.fetchval(triggers) == 0
        assert await legacy.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    finally:
        await legacy.close()


async def _doc(dsn: str, name: str, doc_id: str) -> str | None:
    rows = await run_sql(dsn, f"SELECT content FROM {documents_table(name)} WHERE id = '{doc_id}'")
    return rows[0]["content"] if rows else None


# -- 5. one failing adoption never stalls the others ---------------------------------------------------


async def test_an_unreadable_or_broken_table_fails_its_own_adoption_only_and_says_why(make_client, dsn):
    owner, gateway_role = await make_role(dsn), await make_role(dsn, gateway=True)
    await legacy_table(dsn, owner, "alpha", 10)
    await legacy_table(dsn, owner, "beta", 10)
    await legacy_table(dsn, owner, "secret", 3)
    await run_sql(
        as_role(dsn, owner),
        f"GRANT USAGE ON SCHEMA legacy TO {gateway_role}",
        f"GRANT SELECT, TRIGGER ON legacy.alpha, legacy.beta TO {gateway_role}",
    )
    # the gateway as a plain role: the grants above are all it has on the legacy tables
    client = await make_client(adopt_settings(), admin_token=TOKEN, dsn=as_role(dsn, gateway_role))

    status, body = await admin(client, "POST", "hidden/adopt", body_for("secret"))
    assert (status, body["error"]["code"]) == (400, "insufficient_privilege"), body
    assert "GRANT SELECT" in body["error"]["message"]

    assert (await admin(client, "POST", "alpha/adopt", body_for("alpha", follow=True)))[0] == 202
    await settled(client, "alpha")
    await run_sql(as_role(dsn, owner), "ALTER TABLE legacy.alpha RENAME COLUMN body TO content")
    failed = await until_failed(client, "alpha")
    assert "no column 'body'" in failed["error"] and failed["failures"] >= 1 and failed["retry_at"], failed

    # a new adoption goes through while the broken one keeps failing (with backoff, not every poll)
    assert (await admin(client, "POST", "beta/adopt", body_for("beta", follow=True)))[0] == 202
    await settled(client, "beta")
    await run_sql(as_role(dsn, owner), "INSERT INTO legacy.beta (id, body) VALUES (77, 'still followed')")
    await settled(client, "beta")
    assert await _doc(dsn, "beta", "77") == "still followed"
    alpha = await adoption_of(client, "alpha")
    assert alpha["state"] == "failed" and alpha["failures"] < 20, alpha

    # access revoked from a followed table: that adoption fails too, visibly, and recovers when granted
    owner_dsn = as_role(dsn, owner)
    await run_sql(owner_dsn, f"REVOKE SELECT ON legacy.beta FROM {gateway_role}")
    failed = await until_failed(client, "beta")
    # (the catalog check or the table lock notices first, whichever runs first: both name the grant)
    assert re.search(r"may (no longer|not) read 'legacy.beta'.*SELECT", failed["error"]), failed
    metrics = await (await client.get("/metrics")).text()
    assert 'driftgate_adoption_failures_total{collection="beta"}' in metrics
    await run_sql(owner_dsn, f"GRANT SELECT ON legacy.beta TO {gateway_role}")
    await settled(client, "beta")

    # a session holding the table locked fails that adoption after a bounded wait, not the runner
    holder = await asyncpg.connect(owner_dsn)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE legacy.beta IN ACCESS EXCLUSIVE MODE")
            failed = await until_failed(client, "beta")
            assert "stayed locked by another session" in failed["error"], failed
    finally:
        await holder.close()
    await settled(client, "beta")

    # capture switched off behind the gateway's back: the follow says it is broken instead of "following"
    await run_sql(owner_dsn, "ALTER TABLE legacy.beta DISABLE TRIGGER dgf_beta_ins")
    failed = await until_failed(client, "beta")
    assert "dgf_beta_ins" in failed["error"] and "no longer captured" in failed["error"], failed


@pytest.mark.parametrize(("failures", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (1000, 300.0)])
def test_a_failed_adoption_is_retried_after_a_doubling_delay_capped_at_five_minutes(failures, delay):
    assert retry_delay(failures) == delay


def test_a_failed_adoption_retries_the_step_it_failed_in():
    assert effective_state("failed", "following") == AdoptionState.FOLLOWING
    assert effective_state("failed", "importing") == AdoptionState.IMPORTING
    assert effective_state("indexing", None) == AdoptionState.INDEXING


# -- 4. a migration started during an adoption's import -------------------------------------------------


async def test_a_migration_cannot_start_while_an_adoption_imports_and_abort_always_answers(make_client, dsn):
    owner = await make_role(dsn)
    client = await make_client(adopt_settings(chunk_rows=5, max_rows_per_s=20), admin_token=TOKEN)
    await legacy_table(dsn, owner, "items", 60)
    assert (await admin(client, "POST", "docs/adopt", body_for("items")))[0] == 202

    status, body = await admin(client, "POST", "docs/migrations", {"to_model": L6})
    assert (status, body["error"]["code"]) == (409, "adoption_in_progress"), body
    assert "following or done" in body["error"]["message"]
    status, body = await admin(client, "POST", "docs/abort")
    assert status == 200, body

    done = await settled(client, state="done")
    assert done["phase"] == "steady" and done["to_model"] is None and done["models"][L3]["coverage"] == 1.0
    assert (await admin(client, "POST", "docs/migrations", {"to_model": L6}))[0] == 202

    # a collection left by the old wedge (target lost, L6 written at partial coverage) still aborts
    await run_sql(
        dsn,
        "UPDATE driftgate.collections SET phase = 'ready', to_model = NULL, backfill_state = 'idle' "
        "WHERE name = 'docs'",
    )
    status, body = await admin(client, "POST", "docs/abort")
    assert status == 200, body
    state = await run_sql(dsn, "SELECT phase, read_model, write_models FROM driftgate.collections")
    assert (state[0]["phase"], state[0]["read_model"], state[0]["write_models"]) == ("steady", L3, [L3])
    assert (await run_sql(dsn, f"SELECT to_regclass('{model_table('docs', L6)}') AS t"))[0]["t"] is None


# -- 6. zero vectors in an adopted table; an error inside a streamed answer -------------------------------


async def test_zero_vectors_are_reembedded_at_import_and_a_failing_stream_is_cut_not_given_a_second_status(
    make_client, dsn
):
    owner = await make_role(dsn)
    client = await make_client(adopt_settings(), admin_token=TOKEN)
    await legacy_table(dsn, owner, "items", 30, zero=(4, 9))
    status, body = await admin(client, "POST", "docs/adopt", body_for("items"))
    assert status == 202, body
    done = await settled(client, state="done")
    assert done["adoption"]["vectors_unusable"] == 2 and done["models"][L3]["coverage"] == 1.0, done
    for k in (50, 500):
        response = await client.post("/v1/collections/docs/query", json={"text": "topic 3", "k": k})
        assert response.status == 200, await response.text()
        hits = (await response.json())["hits"]
        assert len(hits) == 30 and all(np.isfinite(h["score"]) for h in hits)

    # a zero vector that got in some other way makes the score NaN in the middle of a streamed answer
    # (the HNSW index leaves zero vectors out: drop it so that the exact scan meets this one)
    table = model_table("docs", L3)
    await run_sql(
        dsn,
        f"UPDATE {table} SET embedding = array_fill(0, ARRAY[{DIM}])::vector WHERE doc_id = '4'",
        f"""DO $$ DECLARE i regclass; BEGIN
                FOR i IN SELECT indexrelid::regclass FROM pg_index WHERE indrelid = '{table}'::regclass
                         AND NOT indisprimary LOOP EXECUTE 'DROP INDEX ' || i; END LOOP; END $$""",
    )
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    payload = json.dumps({"text": "topic 4", "k": 500}).encode()
    writer.write(
        b"POST /v1/collections/docs/query HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    raw = b""
    try:
        while chunk := await reader.read(65536):
            raw += chunk
    except ConnectionResetError:
        pass
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    assert raw.count(b"HTTP/1.1") == 1, raw[-300:]  # no second status line inside the body
    assert not raw.rstrip().endswith(b"0\r\n\r\n"), "the chunked answer must be cut, not completed"
