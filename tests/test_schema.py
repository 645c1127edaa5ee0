"""The schema is versioned and applied under an advisory lock; data survives restarts."""

from __future__ import annotations

import asyncio

import asyncpg

from gateway.store.database import EmbeddedPostgres, ensure_vector_extension
from gateway.store.schema import MIGRATIONS, apply_schema


async def test_two_replicas_applying_the_schema_at_once_apply_each_migration_exactly_once(empty_dsn):
    await ensure_vector_extension(empty_dsn)
    first, second = await asyncpg.connect(empty_dsn), await asyncpg.connect(empty_dsn)
    try:
        applied = await asyncio.gather(apply_schema(first), apply_schema(second))
        assert sorted(applied[0] + applied[1]) == [v for v, _ in MIGRATIONS]
        rows = await first.fetch("SELECT version FROM driftgate.schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _ in MIGRATIONS]
        assert await apply_schema(first) == []
    finally:
        await first.close()
        await second.close()


async def test_two_gateway_apps_starting_together_on_an_empty_database_both_serve(empty_dsn, make_client):
    # empty_dsn first: the database outlives the apps (fixtures end in reverse order)
    first, second = await asyncio.gather(make_client(dsn=empty_dsn), make_client(dsn=empty_dsn))
    assert (await first.put("/v1/collections/docs", json={"model": "paraphrase-MiniLM-L3-v2"})).status == 201
    assert (await second.get("/v1/collections/docs")).status == 200


def test_the_embedded_server_keeps_its_data_across_restarts(tmp_path):
    async def write(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
        await conn.close()

    async def read(dsn: str) -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT v FROM kept")
        finally:
            await conn.close()

    server = EmbeddedPostgres(tmp_path / "pgdata")
    asyncio.run(write(server.start()))
    server.stop()
    again = EmbeddedPostgres(tmp_path / "pgdata")
    try:
        assert asyncio.run(read(again.start())) == "survives"
        conn_ext = asyncio.run(_extension(again.dsn))
        assert conn_ext >= (0, 7)
    finally:
        again.stop()


async def _extension(dsn: str) -> tuple[int, int]:
    await ensure_vector_extension(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    finally:
        await conn.close()
    return tuple(int(x) for x in version.split(".")[:2])
