"""The one write path (services/writer.py) as follow and adoption use it: embedding happens
outside the follow lock and the state row lock, a followed row that changes while it is embedded
ends with the newest text's vector, and rows that are not valid documents are judged by the
API's rule (domain/identifiers.py), skipped and counted, in the import and in follow.

Real PostgreSQL and the real model; the only stand-in is a gate around the real encoder that
holds one embedding until the test lets it go.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import numpy as np

from gateway.api.keys import EMBEDDINGS
from gateway.store.collections import documents_table, model_table
from tests.helpers import L3, TOKEN, until
from tests.test_adopt import admin, adopt_settings, connect, encoder, settled

LONG_ID = "x" * 300  # longer than the API's 256
BELL_ID = "bell\x07id"  # not printable


async def adopted(make_client, dsn: str, rows: list[tuple[str, str]]):
    """A gateway following `notes(id text, body text, lang text, embedding vector)` with `rows`
    (no stored vectors: the backfill embeds them), settled in `following`."""
    client = await make_client(adopt_settings(), admin_token=TOKEN)  # first: it creates the vector extension
    conn = await connect(dsn)
    try:
        await conn.execute("CREATE TABLE notes (id text PRIMARY KEY, body text, lang text, embedding vector(384))")
        await conn.executemany("INSERT INTO notes (id, body, lang) VALUES ($1, $2, 'en')", rows)
    finally:
        await conn.close()
    body = {
        "table": "public.notes",
        "id_column": "id",
        "text_column": "body",
        "vector_column": "embedding",
        "metadata_columns": ["lang"],
        "model": L3,
        "follow": True,
    }
    status, answer = await admin(client, "POST", "docs/adopt", body)
    assert status == 202, answer
    return client, (await settled(client))["adoption"]


async def documents(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["id"]: r["content"] for r in await conn.fetch(f"SELECT id, content FROM {documents_table('docs')}")}


async def test_a_followed_row_is_embedded_outside_the_locks_and_a_change_during_the_embed_ends_with_the_newest_vector(
    make_client, dsn
):
    client, _ = await adopted(make_client, dsn, [("a", "the first text of the note")])
    embeddings = client.app[EMBEDDINGS]
    real, started, release = embeddings.embed, asyncio.Event(), asyncio.Event()

    async def gated(key, texts, kind, *, bulk=False):
        if "version one" in texts and not release.is_set():
            started.set()
            await release.wait()
        return await real(key, texts, kind, bulk=bulk)

    embeddings.embed = gated
    probe = await connect(dsn)
    try:
        await probe.execute("UPDATE notes SET body = 'version one' WHERE id = 'a'")

        async def embedding_started() -> bool:
            return started.is_set()

        await until(embedding_started, "follow embedding 'version one'")
        # while follow embeds, neither its lock nor the collection's state row is held
        async with probe.transaction():
            assert await probe.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('driftgate-follow:docs'))")
            await probe.execute("SELECT 1 FROM driftgate.collections WHERE name = 'docs' FOR UPDATE NOWAIT")
        # a legacy writer changes the row again while its older text is being embedded
        await probe.execute("UPDATE notes SET body = 'version two' WHERE id = 'a'")
        release.set()

        async def newest_applied() -> bool:
            return (await documents(probe)).get("a") == "version two"

        await until(newest_applied, "the newest text applied")
        await settled(client)
        row = await probe.fetchrow(
            f"""SELECT e.embedding, e.source_version, d.version FROM {model_table("docs", L3)} e
                JOIN {documents_table("docs")} d ON d.id = e.doc_id WHERE d.id = 'a'"""
        )
    finally:
        embeddings.embed = real
        await probe.close()
    assert row["source_version"] == row["version"]
    stored = row["embedding"].to_numpy()
    newest, older = await encoder(client)(["version two", "version one"])
    assert np.allclose(stored, newest, atol=1e-4), "the stored vector is not the newest text's"
    assert not np.allclose(stored, older, atol=1e-2)


async def test_a_row_that_changes_on_every_embed_is_deferred_while_the_rest_of_its_batch_is_applied(
    make_client, dsn, caplog
):
    """Every time follow embeds the hot row's text, a legacy writer changes it again: after the
    last attempt the batch commits its other rows and leaves the hot row queued (never written with
    an older text's vector); once the writer stops, the hot row ends on its newest text."""
    client, _ = await adopted(make_client, dsn, [("hot", "the hot row before the churn")])
    embeddings = client.app[EMBEDDINGS]
    real, churns = embeddings.embed, iter(range(1, 7))
    writer = await connect(dsn)

    async def churning(key, texts, kind, *, bulk=False):
        if any(t.startswith("churn ") for t in texts) and (n := next(churns, None)) is not None:
            await writer.execute("UPDATE notes SET body = $1 WHERE id = 'hot'", f"churn {n}")
        return await real(key, texts, kind, bulk=bulk)

    caplog.set_level(logging.INFO, logger="gateway.services.writer")
    embeddings.embed = churning
    try:
        async with writer.transaction():  # one batch: the hot row and a quiet one
            await writer.execute("UPDATE notes SET body = 'churn 0' WHERE id = 'hot'")
            await writer.execute("INSERT INTO notes (id, body) VALUES ('quiet', 'a row nobody changes')")
        await settled(client)
        assert await documents(writer) == {"hot": "churn 6", "quiet": "a row nobody changes"}
        row = await writer.fetchrow(f"SELECT embedding FROM {model_table('docs', L3)} WHERE doc_id = 'hot'")
    finally:
        embeddings.embed = real
        await writer.close()
    assert "kept changing while embedded" in caplog.text
    assert np.allclose(row["embedding"].to_numpy(), (await encoder(client)(["churn 6"]))[0], atol=1e-4)


async def test_rows_that_are_not_valid_documents_are_skipped_and_counted_by_the_import_and_by_follow(
    make_client, dsn, caplog
):
    rows = [("ok-1", "a valid note"), ("ok-2", "another valid note"), (LONG_ID, "too long an id"), (BELL_ID, "bell")]
    rows.append(("blank", "   "))
    client, adoption = await adopted(make_client, dsn, rows)
    probe = await connect(dsn)
    try:
        assert set(await documents(probe)) == {"ok-1", "ok-2"}  # the import used the API's rule
        assert adoption["rows_skipped"] == 3 and adoption["rows_imported"] == 2
        caplog.set_level(logging.WARNING, logger="gateway.services.follow")
        await probe.executemany(
            "INSERT INTO notes (id, body) VALUES ($1, $2)",
            [("y" * 257, "too long"), ("tab\tid", "a tab"), ("ok-3", "a third valid note")],
        )
        await probe.execute("UPDATE notes SET body = '' WHERE id = 'ok-2'")  # blank now: the document goes
        after = (await settled(client))["adoption"]
        assert await documents(probe) == {"ok-1": "a valid note", "ok-3": "a third valid note"}
    finally:
        await probe.close()
    assert after["rows_skipped"] == 3 + 3
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert "not valid documents" in warned and "non-printable" in warned and "1-256" in warned
