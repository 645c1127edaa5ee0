"""The backfill (invariants 4 and 5): it re-embeds every document into the new model's table,
never overwrites fresher data nor resurrects a delete, survives a killed worker, sweeps up
what it missed, verifies, records and retries failing documents, and obeys pause and rate.

Real PostgreSQL, real ONNX models, real Vaswani abstracts; SQL checks go straight to the
test database.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from gateway.api.keys import EMBEDDINGS, POOL
from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.domain.identifiers import collection_schema, embedding_table
from gateway.domain.vectors import row_cosines
from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.onnx import load_encoder
from gateway.services.backfill import BackfillWorker
from gateway.store.collections import documents_table, model_table
from gateway.store.documents import delete_document, upsert_documents, upsert_embeddings
from gateway.store.vector_codec import register_vector
from tests.conftest import SLOW_MACHINE_SERVER
from tests.helpers import (
    AUTH,
    L3,
    L6,
    TOKEN,
    USE,
    StallWatch,
    create_collection,
    finish_without_stalling,
    status,
    wait_for_status,
)

C = "docs"
REPO = Path(__file__).resolve().parent.parent
# backends of the test database holding a transaction id: a backfill batch with its chunk claimed
IN_FLIGHT = """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"""


# -- helpers ----------------------------------------------------------------------------------


def backfill_settings(**backfill):
    return load_settings(None, database={"pool_min": 1, "pool_max": 6}, backfill=backfill, server=SLOW_MACHINE_SERVER)


def corpus(n: int) -> list[tuple[str, str]]:
    return vaswani(limit=n).corpus


async def seed(client, docs: list[tuple[str, str]], collection: str = C) -> None:
    for start in range(0, len(docs), 100):
        batch = [{"id": i, "text": t} for i, t in docs[start : start + 100]]
        response = await client.post(f"/v1/collections/{collection}/documents", json={"documents": batch})
        assert response.status == 200, await response.text()


async def start_migration(client, to_model: str = L6, collection: str = C) -> dict:
    response = await client.post(
        f"/admin/v1/collections/{collection}/migrations", json={"to_model": to_model}, headers=AUTH
    )
    assert response.status == 202, await response.text()
    return await response.json()


async def backfill_control(client, body: dict, collection: str = C) -> dict:
    response = await client.post(f"/admin/v1/collections/{collection}/backfill", json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_until_backfill_ends(client, collection: str = C) -> dict:
    """Poll the status until the phase leaves dual_write, or the backfill fails or pauses.

    (A report with backfill "done" but phase "dual_write" is a torn read, see the status test
    below; the next poll shows the phase that was committed with it.)
    """
    return await wait_for_status(
        client,
        lambda s: s["phase"] != "dual_write" or s["backfill"]["state"] in ("failed", "paused"),
        collection=collection,
    )


async def drive_backfill(
    client,
    *,
    chunk_size: int = 16,
    pipelines: int = 2,
    worker_id: str = "test-worker",
    stop: asyncio.Event | None = None,
) -> BackfillWorker:
    """Run a backfill worker on the app's pool and models until no backfill is left (burst)."""
    worker = BackfillWorker(
        client.app[POOL],
        client.app[EMBEDDINGS],
        worker_id,
        chunk_size=chunk_size,
        pipelines=pipelines,
        poll_interval_s=0.05,
    )
    counters = worker.counters
    await finish_without_stalling(
        worker.run(stop or asyncio.Event(), burst=True), lambda: (counters.chunks, counters.documents)
    )
    return worker


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    return conn


def encode(model: str, texts: list[str]) -> np.ndarray:
    return load_encoder(CATALOG[model], default_cache_dir()).encode(texts).vectors


def vector_of(value) -> np.ndarray:
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float64)


async def stored(conn: asyncpg.Connection, model: str, collection: str = C) -> list[asyncpg.Record]:
    """Every document with its embedding row in `model`'s table (left join: None when missing)."""
    return await conn.fetch(
        f"""SELECT d.id, d.content, d.version, e.embedding, e.source_version, e.embedded_at
            FROM {documents_table(collection)} d
            LEFT JOIN {model_table(collection, model)} e ON e.doc_id = d.id ORDER BY d.id"""
    )


async def assert_every_document_current(conn: asyncpg.Connection, model: str, collection: str = C) -> list:
    """Each live document has exactly one embedding in `model`, at its version, and no row is orphaned."""
    rows = await stored(conn, model, collection)
    stale = [(r["id"], r["version"], r["source_version"]) for r in rows if r["source_version"] != r["version"]]
    assert stale == [], f"{model}: documents without an embedding at their current version: {stale[:10]}"
    per_doc = await conn.fetchval(f"SELECT count(*) - count(DISTINCT doc_id) FROM {model_table(collection, model)}")
    orphans = await conn.fetchval(
        f"""SELECT count(*) FROM {model_table(collection, model)} e
            WHERE NOT EXISTS (SELECT 1 FROM {documents_table(collection)} d WHERE d.id = e.doc_id)"""
    )
    assert per_doc == 0 and orphans == 0
    return rows


def assert_vectors_match_text(model: str, rows, minimum: float = 0.9999) -> None:
    """The stored vector of each row is the model's encoding of the row's current text."""
    rows = list(rows)
    fresh = encode(model, [r["content"] for r in rows])
    kept = np.vstack([vector_of(r["embedding"]) for r in rows])
    sims = row_cosines(fresh, kept)
    bad = [(rows[i]["id"], float(sims[i])) for i in np.flatnonzero(sims <= minimum)]
    assert bad == [], f"{model}: stored vectors that do not match the current text: {bad[:10]}"


async def chunk_rows(conn: asyncpg.Connection, model: str = L6, collection: str = C) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT chunk_no, round, lo, hi, docs, done, written, worker, done_at FROM driftgate.backfill_chunks
           WHERE collection = $1 AND model_key = $2 ORDER BY chunk_no""",
        collection,
        model,
    )


async def new_app(make_client, docs, **backfill):
    client = await make_client(backfill_settings(**backfill), admin_token=TOKEN)
    await create_collection(client, C, L3)
    await seed(client, docs)
    return client


# -- 1. the happy path ------------------------------------------------------------------------


async def test_the_backfill_re_embeds_every_document_builds_the_index_and_makes_the_collection_ready(make_client, dsn):
    docs = corpus(200)
    client = await new_app(make_client, docs, enabled=True, chunk_size=16, pipelines=2, poll_interval_s=0.1)
    started = await start_migration(client)
    assert started["phase"] == "dual_write"

    report = await wait_until_backfill_ends(client)

    assert report["phase"] == "ready", (report["backfill"], report["models"], report["recent_actions"])
    assert report["write_models"] == [L3, L6] and report["read_model"] == L3
    new = report["models"][L6]
    assert new["coverage"] == 1.0 and new["rows"] == len(docs) and new["missing"] == 0 and new["stale"] == 0
    assert new["index_ready"] is True and new["dim"] == 384
    backfill = report["backfill"]
    assert backfill["state"] == "done" and backfill["model"] == L6
    assert backfill["done"] == backfill["total"] == len(docs)
    assert backfill["chunks_done"] == backfill["chunks"] == -(-len(docs) // 16)
    assert backfill["errors"] == 0 and backfill["error_samples"] == []
    conn = await connect(dsn)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            collection_schema(C),
            embedding_table(L6),
        )
        hnsw = [r for r in indexes if "USING hnsw" in r["indexdef"]]
        assert len(hnsw) == 1 and "vector_cosine_ops" in hnsw[0]["indexdef"], indexes
        valid = await conn.fetchval(
            "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = $1::regclass",
            model_table(C, L6),
        )
        assert valid is True
        rows = await assert_every_document_current(conn, L6)
        assert len(rows) == len(docs)
        assert_vectors_match_text(L6, rows)
        assert all(r["written"] == r["docs"] and r["done"] for r in await chunk_rows(conn))
    finally:
        await conn.close()


# -- 2. concurrent traffic (invariant 4) ----------------------------------------------------------


async def test_writes_updates_and_deletes_during_the_backfill_leave_every_model_current_and_nothing_resurrected(
    make_client, dsn
):
    docs = corpus(200)
    texts = dict(docs)
    client = await new_app(make_client, docs, enabled=False, chunk_size=16)
    ids = [i for i, _ in docs]
    updated_a, updated_b = ids[0::4], ids[2::4]  # two updaters on disjoint ids
    deleted = ids[1::4]
    random.Random(7).shuffle(deleted)
    await start_migration(client)
    assert (await backfill_control(client, {"max_rate": 50}))["max_rate"] == 50
    expected: dict[str, str] = {}  # id -> latest text written by the test
    inserted: list[str] = []
    gone: list[str] = []
    done = asyncio.Event()
    ops = {"update": 0, "insert": 0, "delete": 0}

    async def updater(pool: list[str], seed_no: int) -> None:
        rng = random.Random(seed_no)
        revision = 0
        while not done.is_set():
            revision += 1
            picked = rng.sample(pool, 4)
            batch = [{"id": i, "text": f"{texts[i]} (revision {seed_no}.{revision})"} for i in picked]
            response = await client.post(f"/v1/collections/{C}/documents", json={"documents": batch})
            assert response.status == 200, await response.text()
            expected.update({d["id"]: d["text"] for d in batch})
            ops["update"] += 1
            await asyncio.sleep(0.02)

    async def inserter() -> None:
        n = 0
        while not done.is_set():
            n += 1
            # ids both inside the planned chunk ranges ("1x3" sorts among "1..") and after them ("zz")
            doc_id = f"{ids[n % len(ids)]}x{n}" if n % 2 else f"zz-new-{n}"
            text = f"inserted during the backfill, number {n}: {texts[ids[(n * 7) % len(ids)]]}"
            response = await client.put(f"/v1/collections/{C}/documents/{doc_id}", json={"text": text})
            assert response.status == 200, await response.text()
            expected[doc_id] = text
            inserted.append(doc_id)
            ops["insert"] += 1
            await asyncio.sleep(0.03)

    async def deleter() -> None:
        for doc_id in deleted:
            if done.is_set():
                return
            response = await client.delete(f"/v1/collections/{C}/documents/{doc_id}")
            assert response.status == 200, await response.text()
            gone.append(doc_id)
            ops["delete"] += 1
            await asyncio.sleep(0.05)

    traffic = [
        asyncio.create_task(updater(updated_a, 1)),
        asyncio.create_task(updater(updated_b, 2)),
        asyncio.create_task(inserter()),
        asyncio.create_task(deleter()),
    ]
    try:
        worker = await drive_backfill(client, chunk_size=16, pipelines=2)
    finally:
        done.set()
        results = await asyncio.gather(*traffic, return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    # the traffic ran until the backfill ended, so this many writes overlapped it
    assert ops["update"] >= 5 and ops["insert"] >= 5 and ops["delete"] >= 5, ops
    assert worker.counters.chunks >= len(ids) // 16

    report = await status(client)
    assert report["phase"] == "ready" and report["backfill"]["state"] == "done", report
    conn = await connect(dsn)
    try:
        chunks = await chunk_rows(conn)
        # every write went through dual-write, so the first round left nothing stale or missing: a
        # catch-up round here would mean the backfill overwrote a fresher embedding with an older one
        assert {c["round"] for c in chunks} == {1}
        # documents updated or deleted before their chunk came up were skipped, not re-embedded
        assert sum(c["written"] for c in chunks) < sum(c["docs"] for c in chunks)
        for model in report["write_models"]:
            rows = await assert_every_document_current(conn, model)
            by_id = {r["id"]: r for r in rows}
            assert set(gone).isdisjoint(by_id), "a deleted document came back"
            leftover = await conn.fetchval(
                f"SELECT count(*) FROM {model_table(C, model)} WHERE doc_id = ANY($1::text[])", gone
            )
            assert leftover == 0, f"{model}: embeddings of deleted documents survive"
            for doc_id, text in expected.items():
                assert by_id[doc_id]["content"] == text
            assert set(inserted) <= set(by_id)
            # every stored vector is the encoding of the current text: no stale backfill write won
            assert_vectors_match_text(model, rows)
        assert report["models"][L6]["coverage"] == 1.0 and report["models"][L3]["coverage"] == 1.0
    finally:
        await conn.close()


async def test_a_backfill_batch_that_meets_an_uncommitted_update_and_delete_keeps_the_fresher_data(make_client, dsn):
    """The narrow race, made deterministic: a write transaction is open (one document updated to a
    new version with its embeddings, another deleted) while the backfill reads the old versions,
    embeds them and writes; the transaction commits while the backfill's write waits on it. The
    backfill must neither replace the new vector with its old one nor bring the deleted one back."""
    docs = corpus(8)
    client = await new_app(make_client, docs, enabled=False, chunk_size=64)
    await start_migration(client)
    updated, fresh_text = docs[3][0], "a completely different text written during the backfill"
    deleted = docs[5][0]
    writer = await connect(dsn)
    probe = await connect(dsn)
    try:
        # what CollectionService._commit and delete_document do, held open
        transaction = writer.transaction()
        await transaction.start()
        await writer.fetchrow("SELECT state_version FROM driftgate.collections WHERE name = $1 FOR SHARE", C)
        versions = await upsert_documents(writer, C, [updated], [fresh_text], [{}])
        for model in (L3, L6):
            await upsert_embeddings(writer, C, model, [updated], encode(model, [fresh_text]), [versions[updated]])
        assert await delete_document(writer, C, deleted)
        backfill = asyncio.create_task(drive_backfill(client, chunk_size=64, pipelines=1))
        deadline = StallWatch()
        writer_pid = writer.get_server_pid()
        while not await probe.fetchval(
            """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND pid <> $1""",
            writer_pid,
        ):
            assert not backfill.done(), "the backfill finished without meeting the open write"
            deadline.check(None, "the backfill never met the open write")
            await asyncio.sleep(0.02)
        await transaction.commit()
        await asyncio.wait_for(backfill, 60)
        # the batch wrote the other documents and left these two alone, so no repair round followed
        chunks = await chunk_rows(probe)
        assert [(c["round"], c["docs"], c["written"]) for c in chunks] == [(1, len(docs), len(docs) - 2)]
        rows = {r["id"]: r for r in await assert_every_document_current(probe, L6)}
        assert deleted not in rows and len(rows) == len(docs) - 1
        assert rows[updated]["content"] == fresh_text and rows[updated]["source_version"] == versions[updated]
        assert_vectors_match_text(L6, rows.values())
    finally:
        await writer.close()
        await probe.close()
    assert (await status(client))["phase"] == "ready"


# -- 3. crash safety with a real process (invariant 5) -------------------------------------------


def _worker_process(dsn: str, worker_id: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": dsn, "DRIFTGATE_BACKFILL__CHUNK_SIZE": "16"}
    env.pop("DRIFTGATE_CONFIG", None)
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "backfill-worker", "--burst", "--worker-id", worker_id],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_a_worker_killed_mid_backfill_loses_only_its_batch_and_a_second_worker_finishes_identically(
    make_client, dsn, tmp_path
):
    docs = corpus(224)
    client = await new_app(make_client, docs, enabled=False, chunk_size=16)
    await start_migration(client)
    await backfill_control(client, {"max_rate": 24})  # 12 documents/s per pipeline: several seconds
    log_path = tmp_path / "workers.log"
    conn = await connect(dsn)
    try:
        total = len(await chunk_rows(conn))
        assert total == 14
        first = _worker_process(dsn, "w1", log_path)
        try:
            watch = StallWatch()
            while True:
                done = await conn.fetchval(
                    "SELECT count(*) FILTER (WHERE done) FROM driftgate.backfill_chunks WHERE collection = $1", C
                )
                # kill while w1 holds a claimed chunk: a backend of this database with a transaction id
                in_flight = await conn.fetchval(IN_FLIGHT)
                if done >= 2 and in_flight:
                    break
                assert first.poll() is None, log_path.read_text()
                watch.check((done, log_path.stat().st_size), log_path.read_text())
                await asyncio.sleep(0.05)
            os.kill(first.pid, signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 30) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        # the server notices the dead connection and rolls its batch back
        rollback = StallWatch()
        while await conn.fetchval(IN_FLIGHT):
            rollback.check(None, "the killed worker's transaction was never rolled back")
            await asyncio.sleep(0.05)
        killed_at = await conn.fetchval("SELECT now()")
        by_w1 = {r["chunk_no"]: r for r in await chunk_rows(conn) if r["done"]}
        assert 2 <= len(by_w1) < total, "the kill must land mid-backfill"
        assert {r["worker"] for r in by_w1.values()} == {"w1"}

        await backfill_control(client, {"max_rate": None})
        second = _worker_process(dsn, "w2", log_path)
        try:
            assert await asyncio.to_thread(second.wait, 120) == 0, log_path.read_text()
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()

        chunks = await chunk_rows(conn)
        assert len(chunks) == total and all(c["done"] for c in chunks)
        for c in chunks:
            if c["chunk_no"] in by_w1:  # not redone: same worker, same finish time
                assert c["worker"] == "w1" and c["done_at"] == by_w1[c["chunk_no"]]["done_at"]
            else:
                assert c["worker"] == "w2"
        report = await status(client)
        assert report["phase"] == "ready" and report["backfill"]["state"] == "done", report
        assert report["models"][L6]["coverage"] == 1.0 and report["models"][L6]["index_ready"] is True
        rows = await assert_every_document_current(conn, L6)
        assert len(rows) == len(docs)
        for c in chunks:
            if c["chunk_no"] in by_w1:
                in_range = [r for r in rows if c["lo"] <= r["id"] <= c["hi"]]
                assert in_range and all(r["embedded_at"] < killed_at for r in in_range)
        # the end state is that of an uninterrupted run: every vector is the text's encoding
        assert_vectors_match_text(L6, rows)
    finally:
        await conn.close()


# -- 4. the catch-up sweep --------------------------------------------------------------------


async def test_documents_written_around_dual_write_are_caught_by_a_later_sweep_round(make_client, dsn):
    docs = corpus(96)
    client = await new_app(make_client, docs, enabled=False, chunk_size=16)
    await start_migration(client)
    assert (await backfill_control(client, {"action": "pause"}))["state"] == "paused"
    bypass = [f"0bypass-{i}" for i in range(3)] + [f"~bypass-{i:02d}" for i in range(20)]
    conn = await connect(dsn)
    try:
        seq = f"{collection_schema(C)}.versions"
        await conn.executemany(
            f"INSERT INTO {documents_table(C)} (id, content, version) VALUES ($1, $2, nextval('{seq}'))",
            [(doc_id, f"written behind the gateway's back: {docs[n][1]}") for n, doc_id in enumerate(bypass)],
        )
        assert (await backfill_control(client, {"action": "resume"}))["state"] == "running"
        await drive_backfill(client, chunk_size=8)

        assert await conn.fetchval("SELECT max(round) FROM driftgate.backfill_chunks WHERE collection = $1", C) > 1
        later = await conn.fetchval(
            "SELECT sum(docs) FROM driftgate.backfill_chunks WHERE collection = $1 AND round > 1", C
        )
        assert later == len(bypass)
        report = await status(client)
        assert report["phase"] == "ready", report
        assert report["models"][L6]["coverage"] == 1.0
        assert report["backfill"]["done"] == report["backfill"]["total"] == len(docs) + len(bypass)
        rows = await assert_every_document_current(conn, L6)
        assert {r["id"] for r in rows} >= set(bypass)
        assert_vectors_match_text(L6, [r for r in rows if r["id"] in set(bypass)])
    finally:
        await conn.close()


# -- 5. verification before cutover -------------------------------------------------------------


async def test_verification_passes_after_the_backfill_and_names_exactly_the_corrupted_vectors(make_client, dsn):
    docs = corpus(120)
    client = await new_app(make_client, docs, enabled=False, chunk_size=32)
    await start_migration(client)
    await drive_backfill(client, chunk_size=32)
    response = await client.post(f"/admin/v1/collections/{C}/verify", json={"sample": 1000}, headers=AUTH)
    assert response.status == 200, await response.text()
    clean = await response.json()
    assert clean["passed"] is True, clean
    assert clean["models"][L6]["sampled"] == len(docs) and clean["models"][L6]["below_threshold_ids"] == []
    assert (await status(client))["models"][L6]["verified"] is True

    corrupted = sorted(random.Random(3).sample([i for i, _ in docs], 3))
    rng = np.random.default_rng(3)
    conn = await connect(dsn)
    try:
        for doc_id in corrupted:
            vector = rng.standard_normal(384).astype(np.float32)
            vector /= np.linalg.norm(vector)
            await conn.execute(f"UPDATE {model_table(C, L6)} SET embedding = $1 WHERE doc_id = $2", vector, doc_id)
    finally:
        await conn.close()

    response = await client.post(f"/admin/v1/collections/{C}/verify", json={"sample": 1000}, headers=AUTH)
    assert response.status == 200, await response.text()
    dirty = await response.json()
    assert dirty["passed"] is False
    assert dirty["models"][L3]["passed"] is True
    assert dirty["models"][L6]["passed"] is False and dirty["models"][L6]["coverage"] == 1.0
    assert sorted(dirty["models"][L6]["below_threshold_ids"]) == corrupted
    assert (await status(client))["models"][L6]["verified"] is False
    cutover = await client.post(f"/admin/v1/collections/{C}/read-target", json={"model": L6}, headers=AUTH)
    assert cutover.status == 409
    assert (await cutover.json())["error"]["code"] == "index_incomplete"
    assert (await status(client))["read_model"] == L3


# -- 6. a document that keeps failing -------------------------------------------------------------

POISON = {"on": True}


class PoisonSensitiveEncoder:
    """The real encoder, except that the new model refuses texts with POISON while the flag is on."""

    def __init__(self, inner, key: str) -> None:
        self._inner = inner
        self._key = key

    def encode(self, texts):
        if self._key == L6 and POISON["on"] and any("POISON" in t for t in texts):
            raise RuntimeError("the encoder chokes on this text")
        return self._inner.encode(texts)


def poison_loader(spec, cache_dir, threads):
    return PoisonSensitiveEncoder(load_encoder(spec, cache_dir, threads), spec.key)


@pytest.fixture
def poison():
    POISON["on"] = True
    yield POISON
    POISON["on"] = True


async def test_a_document_that_keeps_failing_is_recorded_and_skipped_and_resume_retries_it(make_client, poison):
    docs = corpus(80)
    client = await make_client(
        backfill_settings(enabled=False, chunk_size=16), admin_token=TOKEN, encoder_loader=poison_loader
    )
    await create_collection(client, C, L3)
    await seed(client, docs)
    poisoned = docs[37][0]
    response = await client.put(f"/v1/collections/{C}/documents/{poisoned}", json={"text": "POISON " + docs[37][1]})
    assert response.status == 200, await response.text()
    await start_migration(client)

    await drive_backfill(client, chunk_size=16, pipelines=1)

    report = await status(client)
    assert report["phase"] == "dual_write"
    backfill = report["backfill"]
    assert backfill["state"] == "failed" and backfill["errors"] == 1, backfill
    assert [e["doc_id"] for e in backfill["error_samples"]] == [poisoned]
    assert "the encoder chokes on this text" in backfill["error_samples"][0]["reason"]
    assert report["models"][L6]["rows"] == len(docs) - 1 and report["models"][L6]["missing"] == 1
    assert report["models"][L6]["index_ready"] is False

    poison["on"] = False
    assert (await backfill_control(client, {"action": "resume"}))["state"] == "running"
    await drive_backfill(client, chunk_size=16, pipelines=1)

    report = await status(client)
    assert report["phase"] == "ready", report
    assert report["backfill"]["state"] == "done" and report["backfill"]["errors"] == 0
    assert report["backfill"]["error_samples"] == []
    assert report["models"][L6]["coverage"] == 1.0 and report["models"][L6]["index_ready"] is True


async def test_a_failing_document_does_not_get_a_healthy_document_of_another_pipeline_recorded_as_failed(
    make_client, poison
):
    client = await make_client(backfill_settings(enabled=False), admin_token=TOKEN, encoder_loader=poison_loader)
    await create_collection(client, C, L3)
    await seed(client, [("a", "POISON in the first chunk"), ("b", "a healthy abstract about radio waves")])
    await start_migration(client)  # loads the new model and starts its batcher
    worker = BackfillWorker(client.app[POOL], client.app[EMBEDDINGS], "w", chunk_size=16, pipelines=2)
    rows = [
        {"id": "a", "content": "POISON in the first chunk", "version": 1},
        {"id": "b", "content": "a healthy abstract about radio waves", "version": 2},
    ]
    # two pipelines embed their chunks at the same moment, as they do under load
    (_, _, _, failed_a), (ids_b, _, _, failed_b) = await asyncio.gather(
        worker._embed(L6, rows[:1]), worker._embed(L6, rows[1:])
    )
    assert [f[0] for f in failed_a] == ["a"]
    assert failed_b == [] and ids_b == ["b"]


# -- 7. pause, resume and rate --------------------------------------------------------------------


async def test_pause_holds_progress_resume_completes_it_and_max_rate_shows_in_status_until_cleared(make_client, dsn):
    docs = corpus(192)
    client = await new_app(make_client, docs, enabled=True, chunk_size=16, pipelines=2, poll_interval_s=0.1)
    await start_migration(client)
    assert await backfill_control(client, {"max_rate": 40}) == {"state": "running", "max_rate": 40.0}
    assert (await status(client))["backfill"]["max_rate"] == 40.0
    await wait_for_status(client, lambda s: s["backfill"]["done"] >= 16)

    assert (await backfill_control(client, {"action": "pause"}))["state"] == "paused"
    await asyncio.sleep(0.3)
    conn = await connect(dsn)
    try:  # a batch already in flight when the pause committed may still finish; wait for it
        watch = StallWatch()
        while await conn.fetchval(IN_FLIGHT):
            watch.check(None, "the chunk in flight never finished")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    held = await status(client)
    await asyncio.sleep(1.5)
    later = await status(client)
    assert later["backfill"]["state"] == "paused" and later["phase"] == "dual_write"
    assert later["backfill"]["done"] == held["backfill"]["done"] < held["backfill"]["total"]
    assert later["models"][L6]["rows"] == held["models"][L6]["rows"] < len(docs)

    assert await backfill_control(client, {"max_rate": None}) == {"state": "paused", "max_rate": None}
    assert (await status(client))["backfill"]["max_rate"] is None
    assert (await backfill_control(client, {"action": "resume"}))["state"] == "running"
    report = await wait_until_backfill_ends(client)
    assert report["phase"] == "ready" and report["backfill"]["state"] == "done"
    assert report["backfill"]["done"] == report["backfill"]["total"] == len(docs)
    assert report["models"][L6]["coverage"] == 1.0 and report["backfill"]["max_rate"] is None


async def test_a_rate_cap_holds_over_every_few_second_window_not_just_on_average(make_client, dsn):
    # chunks of 64 used to commit at full speed between sleeps: 128 documents within a second at
    # max_rate 20. Now a capped chunk commits in steps; the committed steps are counted per window
    # (an upper bound: a slow machine only makes the count smaller)
    docs = corpus(150)
    client = await new_app(make_client, docs, enabled=False, chunk_size=64)
    await start_migration(client)
    await backfill_control(client, {"max_rate": 20})
    await drive_backfill(client, chunk_size=64, pipelines=2)
    conn = await connect(dsn)
    try:
        steps = await conn.fetch(
            "SELECT extract(epoch FROM at)::float8 AS t, docs FROM driftgate.backfill_steps WHERE collection = $1 ORDER BY at",
            C,
        )
    finally:
        await conn.close()
    assert sum(s["docs"] for s in steps) == len(docs) and max(s["docs"] for s in steps) <= 5
    window_s, slack = 3.0, 2 * 2 * 5  # two steps of each pipeline may straddle a window's edge
    for first in steps:
        in_window = sum(s["docs"] for s in steps if first["t"] <= s["t"] < first["t"] + window_s)
        assert in_window <= 20 * window_s + slack, (in_window, [(round(s["t"], 2), s["docs"]) for s in steps])
    report = await status(client)
    assert report["backfill"]["done"] == report["backfill"]["total"] == len(docs)


async def test_progress_moves_per_step_inside_a_chunk(make_client, dsn):
    docs = corpus(40)
    client = await new_app(make_client, docs, enabled=False, chunk_size=256)
    await start_migration(client)
    await backfill_control(client, {"max_rate": 8})  # steps of 2 documents per pipeline
    stop = asyncio.Event()
    worker = asyncio.ensure_future(drive_backfill(client, chunk_size=256, pipelines=2, stop=stop))
    try:  # one chunk holds all 40 documents, yet progress shows before it is done
        seen = await wait_for_status(client, lambda s: s["backfill"]["done"] >= 4)
        assert seen["backfill"]["chunks_done"] == 0 and seen["backfill"]["done"] < len(docs)
        assert seen["models"][L6]["rows"] >= 4
    finally:
        stop.set()
        await worker


async def test_a_rate_cap_belongs_to_its_migration_abort_and_the_next_start_clear_it(make_client, dsn):
    client = await new_app(make_client, corpus(8), enabled=False)
    await start_migration(client)
    await backfill_control(client, {"max_rate": 10})
    assert (await status(client))["backfill"]["max_rate"] == 10.0
    response = await client.post(f"/admin/v1/collections/{C}/abort", headers=AUTH)
    assert response.status == 200, await response.text()
    await start_migration(client)
    assert (await status(client))["backfill"]["max_rate"] is None


# -- 8. a dimension change ------------------------------------------------------------------------


async def test_a_dimension_change_backfills_a_table_of_the_new_dimension(make_client, dsn):
    docs = corpus(64)
    client = await new_app(make_client, docs, enabled=False, chunk_size=16)
    await start_migration(client, USE)
    await drive_backfill(client, chunk_size=16)
    report = await status(client)
    assert report["phase"] == "ready", report
    assert report["models"][USE]["dim"] == 512 and report["models"][USE]["coverage"] == 1.0
    assert report["models"][L3]["dim"] == 384
    conn = await connect(dsn)
    try:
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attname = 'embedding'",
                model_table(C, USE),
            )
            == "vector(512)"
        )
        assert [
            r[0] for r in await conn.fetch(f"SELECT DISTINCT vector_dims(embedding) FROM {model_table(C, USE)}")
        ] == [512]
        rows = await assert_every_document_current(conn, USE)
        assert len(rows) == len(docs)
        assert_vectors_match_text(USE, rows)
    finally:
        await conn.close()


# -- the status report ----------------------------------------------------------------------------


async def test_the_status_report_is_one_snapshot_even_when_the_backfill_state_changes_while_it_is_read(
    make_client, dsn
):
    client = await new_app(make_client, corpus(32), enabled=False, chunk_size=16)
    await start_migration(client)
    before = await status(client)
    assert before["backfill"]["state"] == "running" and before["phase"] == "dual_write"
    blocker = await connect(dsn)
    probe = await connect(dsn)
    try:
        # hold the status request between its read of the state and its read of the model tables
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE driftgate.embedding_tables IN ACCESS EXCLUSIVE MODE")
        reading = asyncio.create_task(status(client))
        deadline = StallWatch()
        while not await probe.fetchval(
            """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND query LIKE '%embedding_tables%'"""
        ):
            assert not reading.done()
            deadline.check(None, "the status read never waited on the lock")
            await asyncio.sleep(0.02)
        assert (await backfill_control(client, {"action": "pause"}))["state"] == "paused"
        await transaction.rollback()
        report = await asyncio.wait_for(reading, 30)
    finally:
        await blocker.close()
        await probe.close()
    after = await status(client)
    assert after["state_version"] > before["state_version"] and after["backfill"]["state"] == "paused"
    seen = (report["state_version"], report["backfill"]["state"])
    assert seen in {(before["state_version"], "running"), (after["state_version"], "paused")}, seen
