"""Adopting an existing pgvector table (sample check, chunked import, follow mode, stop).

Real PostgreSQL, real ONNX model: the source table's vectors are made by the gateway's own
encoder, so the sample check at the door passes for the model that made them and fails for
another one. Legacy writers are plain asyncpg connections writing the source table.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time

import asyncpg
import numpy as np

from gateway.api.keys import EMBEDDINGS
from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.store.collections import documents_table, model_table
from gateway.store.vector_codec import register_vector
from tests.helpers import AUTH, L3, L6, TOKEN, StallWatch, free_port, request
from tests.helpers import settle as wait_for

TEXTS = [text for _, text in vaswani(limit=400).corpus]


def adopt_settings(**adoption):
    return load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        backfill={"chunk_size": 64, "poll_interval_s": 0.2},
        adoption={"poll_interval_s": 0.1, **adoption},
        server={"sync_poll_interval_s": 0.5},
    )


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    return conn


async def make_source(dsn: str, embed, n: int, table: str = "items", dim: int = 384) -> None:
    """`table(id bigint, body text, lang text, embedding vector)`: every 10th vector NULL,
    every 25th text blank; the rest embedded by `embed` (the real model)."""
    vectors = await embed(TEXTS[:n]) if embed else np.random.rand(n, dim).astype(np.float32)
    rows = []
    for i in range(n):
        body = "  " if i % 25 == 7 else TEXTS[i]
        rows.append((i, body, "en" if i % 2 else "fr", None if i % 10 == 3 else vectors[i]))
    conn = await connect(dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text, lang text, embedding vector({dim}))"
        )
        await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3, $4)", rows)
    finally:
        await conn.close()


def encoder(client, model: str = L3):
    async def embed(texts: list[str]) -> np.ndarray:
        return (await client.app[EMBEDDINGS].embed(model, texts, "document", bulk=True)).vectors

    return embed


def adopt_body(**extra) -> dict:
    return {
        "table": "public.items",
        "id_column": "id",
        "text_column": "body",
        "vector_column": "embedding",
        "metadata_columns": ["lang"],
        "model": L3,
        **extra,
    }


async def admin(client, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    response = await client.request(method, f"/admin/v1/collections/{path}", json=body, headers=AUTH)
    return response.status, await response.json()


async def settled(client, name: str = "docs", state: str = "following") -> dict:
    """Wait until the adoption reached `state` with an empty queue and a complete index."""

    async def check():
        status, body = await admin(client, "GET", f"{name}/status")
        assert status == 200, body
        adoption, model = body["adoption"], body["models"][L3]
        lag = adoption["follow_lag"] or {"pending": 0}
        done = adoption["state"] == state and lag["pending"] == 0 and model["index_ready"]
        return (body if done else None), (
            adoption["state"],
            adoption["rows_read"],
            adoption["changes_applied"],
            lag["pending"],
            model["rows"],
        )

    return await wait_for(check, f"adoption of {name} reaching {state}")


async def compare_with_source(dsn: str, name: str = "docs", models=(L3,)) -> dict[str, str]:
    """The collection equals the source row by row (blank texts excluded), and every document
    has an embedding at its current version in each model."""
    conn = await connect(dsn)
    try:
        source = {
            str(r["id"]): (r["body"], {"lang": r["lang"]} if r["lang"] else {})
            for r in await conn.fetch("SELECT id, body, lang FROM items WHERE btrim(coalesce(body, '')) <> ''")
        }
        docs = {
            r["id"]: (r["content"], json.loads(r["metadata"]))
            for r in await conn.fetch(f"SELECT id, content, metadata FROM {documents_table(name)}")
        }
        assert docs == source
        versions = {r["id"]: r["version"] for r in await conn.fetch(f"SELECT id, version FROM {documents_table(name)}")}
        for model in models:
            embedded = {
                r["doc_id"]: r["source_version"]
                for r in await conn.fetch(f"SELECT doc_id, source_version FROM {model_table(name, model)}")
            }
            assert embedded == versions, f"{model}: missing or stale embeddings"
        return {k: v[0] for k, v in docs.items()}
    finally:
        await conn.close()


async def legacy_writer(dsn: str, seed: int, stop: asyncio.Event, written: list, adopted: asyncio.Event) -> None:
    """Updates, inserts and deletes on the source table, each in its own transaction.

    Updates change a row's text and leave its vector as it was (stale), so they start only once
    the adoption is accepted: before, its sample could pick an updated row and rightly refuse
    the table (vectors_mismatch); on a slow machine the writers get that far before the sample."""
    rng = random.Random(seed)
    conn = await connect(dsn)
    try:
        n = 0
        while not stop.is_set():
            op, row = rng.random(), rng.randrange(0, 100)
            row += 1 if row % 25 == 7 else 0  # the blank rows stay blank: they must be skipped
            if not adopted.is_set():
                op = 0.5 + op / 2  # an insert or a delete instead of an update
            if op < 0.5:
                await conn.execute(
                    "UPDATE items SET body = $2, lang = $3 WHERE id = $1",
                    row,
                    f"updated by writer {seed} step {n}: {TEXTS[rng.randrange(400)][:80]}",
                    "de",
                )
            elif op < 0.8:
                await conn.execute(
                    "INSERT INTO items (id, body, lang) VALUES ($1, $2, NULL) ON CONFLICT (id) DO "
                    "UPDATE SET body = excluded.body",
                    10_000 + seed * 1000 + n,
                    f"inserted by writer {seed} step {n}",
                )
            else:
                await conn.execute("DELETE FROM items WHERE id = $1", row)
            written.append(n)
            n += 1
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


# -- the whole path ---------------------------------------------------------------------------


async def test_an_adopted_table_follows_concurrent_legacy_writers_during_and_after_the_import(make_client, dsn):
    client = await make_client(adopt_settings(chunk_rows=10, max_rows_per_s=100), admin_token=TOKEN)
    await make_source(dsn, encoder(client), 120)
    stop, adopted, written = asyncio.Event(), asyncio.Event(), []
    writers = [asyncio.create_task(legacy_writer(dsn, seed, stop, written, adopted)) for seed in range(3)]
    status, body = await admin(client, "POST", "docs/adopt", adopt_body(follow=True))
    assert status == 202 and body["adoption"]["state"] == "importing", body
    adopted.set()
    at_adopt = len(written)
    assert body["adoption"]["sample"]["sampled"] >= 20 and body["adoption"]["sample"]["cosine_min"] > 0.999

    # writes through the gateway are refused while the table is the writer
    refused = await client.put("/v1/collections/docs/documents/x", json={"text": "through the gateway"})
    assert refused.status == 409 and (await refused.json())["error"]["code"] == "collection_followed"

    await wait_for(lambda: _imported(client), "import")
    during = len(written)
    assert during - at_adopt >= 5, "the legacy writers did not write during the import"

    async def more_writes():  # keep writing after the import as well
        return len(written) >= during + 30, len(written)

    await wait_for(more_writes, "legacy writes after the import")
    stop.set()
    await asyncio.gather(*writers)
    body = await settled(client)
    assert body["document_count"] == body["models"][L3]["rows"] and body["models"][L3]["coverage"] == 1.0
    adoption = body["adoption"]
    assert adoption["rows_skipped"] >= 5 and adoption["rows_to_embed"] > 0 and adoption["changes_applied"] > 0
    docs = await compare_with_source(dsn)

    # a followed change is embedded from the new text by the collection's model
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow(
            f"SELECT doc_id, embedding FROM {model_table('docs', L3)} "
            "WHERE doc_id LIKE '1%' AND doc_id::bigint >= 10000 LIMIT 1"
        )
    finally:
        await conn.close()
    expected = (await encoder(client)([docs[row["doc_id"]]]))[0]
    assert float(np.dot(row["embedding"].to_numpy(), expected)) > 0.9999
    metrics = await (await client.get("/metrics")).text()
    assert 'driftgate_follow_lag_seconds{collection="docs"}' in metrics

    # following continues through a migration: new legacy writes land in both models
    assert (await admin(client, "POST", "docs/migrations", {"to_model": L6}))[0] == 202
    conn = await connect(dsn)
    try:
        await conn.execute("UPDATE items SET body = 'rewritten during the migration' WHERE id = 11")
        await conn.execute("INSERT INTO items (id, body) VALUES (99999, 'born during the migration')")
    finally:
        await conn.close()

    async def migrated():
        _, body = await admin(client, "GET", "docs/status")
        lag = body["adoption"]["follow_lag"]
        return (body["phase"] == "ready" and lag["pending"] == 0), (body["phase"], lag, body["backfill"]["done"])

    await wait_for(migrated, "migration while following")
    await compare_with_source(dsn, models=(L3, L6))

    # stop: no trigger, no queue; the gateway takes writes
    status, body = await admin(client, "POST", "docs/adopt/stop")
    assert status == 200 and body["adoption"]["state"] == "stopped" and body["adoption"]["changed"]
    conn = await connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass") == 0
        assert await conn.fetchval("SELECT to_regclass('dgc_docs.follow_queue')") is None
        await conn.execute("UPDATE items SET body = 'after stop' WHERE id = 12")  # no longer followed
    finally:
        await conn.close()
    assert (await client.put("/v1/collections/docs/documents/x", json={"text": "through the gateway"})).status == 200
    assert (await admin(client, "POST", "docs/adopt/stop"))[1]["adoption"]["changed"] is False


async def _imported(client):
    _, body = await admin(client, "GET", "docs/status")
    state = body["adoption"]["state"]
    return state != "importing", body["adoption"]["rows_read"]


async def test_a_transaction_that_commits_after_a_later_numbered_one_is_still_applied(make_client, dsn):
    client = await make_client(adopt_settings(), admin_token=TOKEN)
    await make_source(dsn, encoder(client), 30)
    assert (await admin(client, "POST", "docs/adopt", adopt_body(follow=True)))[0] == 202
    await settled(client)
    slow, fast = await connect(dsn), await connect(dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute("INSERT INTO items (id, body) VALUES (500, 'queued first, committed last')")
        await fast.execute("INSERT INTO items (id, body) VALUES (501, 'queued second, committed first')")
        await wait_for(lambda: _has(dsn, "501"), "the later-numbered change")
        await transaction.commit()
        await wait_for(lambda: _has(dsn, "500"), "the change that committed last")
    finally:
        await slow.close()
        await fast.close()
    await settled(client)
    await compare_with_source(dsn)


async def _has(dsn: str, doc_id: str):
    conn = await connect(dsn)
    try:
        found = await conn.fetchval(f"SELECT count(*) FROM {documents_table('docs')} WHERE id = $1", doc_id)
    finally:
        await conn.close()
    return bool(found), None


# -- refusals: nothing is created ----------------------------------------------------------------


async def test_wrong_model_vectors_a_dimension_mismatch_and_hostile_names_are_refused_and_create_nothing(
    make_client, dsn
):
    client = await make_client(adopt_settings(), admin_token=TOKEN)
    await make_source(dsn, encoder(client), 60)
    await make_source(dsn, None, 5, table="wide", dim=512)
    conn = await connect(dsn)
    try:
        await conn.execute("CREATE TABLE half (id bigint PRIMARY KEY, body text, lang text, embedding halfvec(384))")
    finally:
        await conn.close()

    status, body = await admin(client, "POST", "docs/adopt", adopt_body(model=L6, follow=True))
    assert status == 409 and body["error"]["code"] == "vectors_mismatch", body
    assert "another model" in body["error"]["message"] and "Nothing was created" in body["error"]["message"]

    cases = [
        (adopt_body(table="public.wide"), 400, "dimension_mismatch"),
        (adopt_body(table="public.nope"), 404, "table_not_found"),
        (adopt_body(text_column="title"), 400, "column_not_found"),
        (adopt_body(vector_column="lang", metadata_columns=[]), 400, "invalid_column_type"),
        (adopt_body(table="public.half"), 400, "invalid_column_type"),
        (adopt_body(id_column="lang", metadata_columns=[]), 400, "id_not_unique"),
        (adopt_body(table="items; DROP TABLE items"), 400, "invalid_identifier"),
        (adopt_body(table='public."items"'), 400, "invalid_identifier"),
        (adopt_body(table="a.b.c"), 400, "invalid_identifier"),
        (adopt_body(table="driftgate.collections"), 400, "invalid_identifier"),
        (adopt_body(id_column="id) OR (1=1"), 400, "invalid_identifier"),
        (adopt_body(metadata_columns=["lang', (SELECT 1))--"]), 400, "invalid_identifier"),
        (adopt_body(model="no-such-model"), 400, "unknown_model"),
    ]
    for hostile, code, error in cases:
        status, body = await admin(client, "POST", "docs/adopt", hostile)
        assert (status, body["error"]["code"]) == (code, error), (hostile, body)
        if hostile["table"] == "public.half":  # says how to convert the column
            assert "TYPE vector(384)" in body["error"]["message"], body
    assert (await client.post("/admin/v1/collections/docs/adopt", json=adopt_body())).status == 401

    conn = await connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM driftgate.collections") == 0
        assert await conn.fetchval("SELECT to_regnamespace('dgc_docs')") is None
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass") == 0
        assert await conn.fetchval("SELECT count(*) FROM items") == 60
    finally:
        await conn.close()

    assert (await admin(client, "POST", "docs/adopt", adopt_body()))[0] == 202
    status, body = await admin(client, "POST", "docs/adopt", adopt_body())
    assert status == 409 and body["error"]["code"] == "collection_exists"
    done = await settled(client, state="done")
    assert done["phase"] == "steady" and done["to_model"] is None and done["models"][L3]["coverage"] == 1.0
    await compare_with_source(dsn)
    assert (await client.put("/v1/collections/docs/documents/x", json={"text": "not followed"})).status == 200


# -- a killed gateway resumes the import ----------------------------------------------------------


def test_a_gateway_killed_mid_import_is_resumed_by_the_next_one_from_its_cursor(dsn, tmp_path):
    asyncio.run(_seed_for_kill(dsn))
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "DRIFTGATE_ADMIN_TOKEN": "tok",
        "DRIFTGATE_ADOPTION__CHUNK_ROWS": "25",
        "DRIFTGATE_ADOPTION__MAX_ROWS_PER_S": "150",
        "DRIFTGATE_SERVER__REQUEST_TIMEOUT_S": "600",  # a slow machine: the sample check may take minutes
    }
    first = _start_gateway(env, tmp_path / "first.log")
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "adopt",
                "docs",
                "--url",
                first[1],
                "--table",
                "public.items",
                "--id-column",
                "id",
                "--text-column",
                "body",
                "--vector-column",
                "embedding",
                "--model",
                L3,
                "--metadata-columns",
                "lang",
                "--sample",
                "50",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "adopting public.items" in result.stdout
        asyncio.run(_until_partly_imported(dsn))
        first[0].send_signal(signal.SIGKILL)
        first[0].wait(10)
    finally:
        if first[0].poll() is None:
            first[0].kill()
    row = asyncio.run(_adoption_row(dsn))
    assert row["state"] == "importing" and 0 < row["rows_read"] < 600
    env.pop("DRIFTGATE_ADOPTION__MAX_ROWS_PER_S")
    second = _start_gateway(env, tmp_path / "second.log")
    try:
        asyncio.run(_until_done(dsn))
        status = subprocess.run(
            [sys.executable, "-m", "gateway", "migrate", "status", "docs", "--url", second[1]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "adoption done" in status.stdout, status.stdout
    finally:
        second[0].send_signal(signal.SIGTERM)
        second[0].wait(30)
    row = asyncio.run(_adoption_row(dsn))
    # each source row was read exactly once: the second gateway went on from the cursor
    assert row["rows_read"] == 600 and row["rows_imported"] + row["rows_skipped"] == 600
    assert row["rows_skipped"] == 24  # the blank texts, counted once


async def _seed_for_kill(dsn: str) -> None:
    from gateway.encoders.catalog import CATALOG
    from gateway.encoders.fetch import default_cache_dir
    from gateway.encoders.onnx import load_encoder

    model = load_encoder(CATALOG[L3], default_cache_dir(), 0)
    vectors = model.encode(TEXTS[:400]).vectors
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await register_vector(conn)
        await conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, body text, lang text, embedding vector(384))")
        await conn.executemany(
            "INSERT INTO items VALUES ($1, $2, $3, $4)",
            [(i, "" if i % 25 == 7 else TEXTS[i % 400], "en", vectors[i % 400]) for i in range(600)],
        )
    finally:
        await conn.close()


def _start_gateway(env: dict, log_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    watch = StallWatch()
    while True:
        try:
            if request(f"{base}/readyz")[0] == 200:
                return process, base
        except OSError:
            pass
        assert process.poll() is None, log_path.read_text()[-2000:]
        watch.check(log_path.stat().st_size, log_path.read_text()[-2000:])  # a starting gateway logs
        time.sleep(0.2)


async def _adoption_row(dsn: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM driftgate.adoptions WHERE collection = 'docs'")
    finally:
        await conn.close()


async def _until_partly_imported(dsn: str) -> None:
    async def check():
        row = await _adoption_row(dsn)
        return bool(row and row["rows_read"] >= 100), row and row["rows_read"]

    await wait_for(check, "the first chunks of the import")


async def _until_done(dsn: str) -> None:
    async def check():
        row = await _adoption_row(dsn)
        return row["state"] == "done", (row["state"], row["rows_read"])

    await wait_for(check, "the resumed import")
