"""`halfvec` storage: a model's table (and its HNSW index) in float16, chosen per collection table.

One gateway for the module. A collection created with `storage: "halfvec"` writes, queries and
deletes as any other; a migration can move a collection onto a halfvec table (backfill, verify,
cutover, retire); a value that float16 cannot hold is refused with a 400 and writes nothing.
"""

from __future__ import annotations

import json

import asyncpg
import numpy as np
import pytest

from gateway.api.keys import COLLECTIONS, POOL
from gateway.client import Client
from gateway.client.errors import BadRequest, Conflict, NotFound
from gateway.commands import evaluate as evaluate_command
from gateway.config import load_settings
from gateway.datasets import Dataset, vaswani
from gateway.domain.errors import VectorOutOfRange
from gateway.domain.identifiers import collection_schema, embedding_table
from gateway.domain.storage import HALFVEC_MAX, Storage, stored_model
from gateway.services.evaluation import evaluate
from gateway.store import documents as documents_sql
from gateway.store.collections import model_table
from gateway.store.vector_codec import register_vector
from tests.helpers import L3, L6, TOKEN, wait_until
from tests.live import ServerThread, module_database

TEXTS = [f"halfvec storage note {i} about {topic}" for i, topic in enumerate(["rivers", "stars", "bread"] * 8)]


@pytest.fixture(scope="module")
def gateway(server_dsn):
    dsn = module_database(server_dsn, "storage")
    server = ServerThread(dsn, admin_token=TOKEN, backfill={"chunk_size": 16, "poll_interval_s": 0.1}).start()
    with Client(server.url, admin_token=TOKEN, timeout=300) as dg:
        yield dsn, dg, server
    server.stop()


def documents(prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i:02d}", "text": text, "metadata": {"n": i}} for i, text in enumerate(TEXTS)]


async def column_and_index(dsn: str, collection: str, model: str) -> tuple[str, str]:
    """The embedding column's SQL type and the table's index definition, from the catalog."""
    conn = await asyncpg.connect(dsn)
    try:
        column = await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass "
            "AND attname = 'embedding'",
            model_table(collection, model),
        )
        index = await conn.fetchval(
            "SELECT string_agg(indexdef, '; ') FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            collection_schema(collection),
            embedding_table(model),
        )
        return column, index
    finally:
        await conn.close()


async def index_serves_the_search(dsn: str, collection: str, model: str, vector) -> bool:
    """Whether the gateway's own search statement can be served by the table's HNSW index (the
    query vector's parameter takes the column's type; sequential scans are priced out here)."""
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            sql = documents_sql._search_sql(collection, model, False, False)
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", np.asarray(vector, np.float32), 5)
        return f"{embedding_table(model)}_hnsw" in str(plan)
    finally:
        await conn.close()


async def test_a_halfvec_collection_writes_queries_and_deletes_and_says_its_storage(gateway):
    dsn, dg, _ = gateway
    created = dg.create_collection("half", L3, storage="halfvec")
    assert created.created and created.storage == {L3: "halfvec"}
    column, index = await column_and_index(dsn, "half", L3)
    assert column == "halfvec(384)" and "halfvec_cosine_ops" in index
    dg.put_documents("half", documents("h"))
    assert dg.get_collection("half").storage == {L3: "halfvec"}
    assert dg.status("half").models[L3]["storage"] == "halfvec"

    hits = dg.query("half", text="a note about stars", k=5).hits
    assert len(hits) == 5 and all("stars" in h.text for h in hits[:3])
    # a caller's vector (float32) is searched against the float16 table: the document finds itself
    vector = dg.embed(L3, [TEXTS[4]]).vectors[0]
    top = dg.query("half", vector=vector, model=L3, k=1).hits[0]
    assert top.id == "h04" and top.score == pytest.approx(1.0, abs=1e-3)

    assert await index_serves_the_search(dsn, "half", L3, vector)

    assert dg.delete_document("half", "h04")
    assert "h04" not in {h.id for h in dg.query("half", vector=vector, model=L3, k=24).hits}

    # asking again: with no storage or the same one it is there; with another it is a conflict
    assert not dg.create_collection("half", L3).created
    assert not dg.create_collection("half", L3, storage="halfvec").created
    with pytest.raises(Conflict) as conflict:
        dg.create_collection("half", L3, storage="vector")
    assert "storage 'halfvec'" in conflict.value.message


async def test_a_stored_halfvec_reads_back_as_the_float16_rounding_of_the_vector_written(gateway):
    dsn, dg, _ = gateway
    dg.create_collection("rounding", L3, storage="halfvec")
    dg.put_documents("rounding", documents("r")[:3])
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    try:
        stored = await documents_sql.sample_embeddings(conn, "rounding", L3, 3)
    finally:
        await conn.close()
    fresh = dg.embed(L3, [s.text for s in stored]).vectors
    for row, vector in zip(stored, fresh, strict=True):
        expected = np.asarray(vector, dtype=np.float32).astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(row.embedding, expected, atol=1e-4)
        assert row.embedding.dtype.itemsize == 4  # read as float32, like a `vector`
        held = np.asarray(row.embedding, dtype=np.float32)
        assert np.array_equal(held.astype(np.float16).astype(np.float32), held)  # every value a float16


async def test_a_bulk_load_into_a_halfvec_table_rebuilds_its_halfvec_index(gateway):
    dsn, dg, _ = gateway
    dg.create_collection("bulk", L3, storage="halfvec")
    lines = [json.dumps(doc).encode() + b"\n" for doc in documents("b")]
    loaded = dg.bulk_load("bulk", lines, index="rebuild")  # drops the index, writes, builds it again
    assert (loaded.loaded, loaded.index) == (len(TEXTS), "built"), loaded
    column, index = await column_and_index(dsn, "bulk", L3)
    assert column == "halfvec(384)" and "halfvec_cosine_ops" in index
    assert dg.status("bulk").models[L3]["index_ready"] is True
    assert dg.query("bulk", text="a note about bread", k=3).hits[0].text.endswith("bread")


async def test_a_value_beyond_float16_range_is_refused_and_nothing_is_written(gateway):
    dsn, dg, _ = gateway
    dg.create_collection("range", L3, storage="halfvec")
    [written] = dg.put_documents("range", documents("x")[:1])
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    try:
        before = await conn.fetchval(f"SELECT embedding::text FROM {model_table('range', L3)}")
        huge = np.full((1, 384), 0.01, dtype=np.float32)
        huge[0, 7] = HALFVEC_MAX * 2  # what an unnormalised provider could answer
        with pytest.raises(VectorOutOfRange) as refused:
            async with conn.transaction():
                await documents_sql.upsert_embeddings(conn, "range", L3, ["x00"], huge, [written.version])
        assert refused.value.status == 400 and "halfvec" in refused.value.message
        assert "vector" in refused.value.message.split("Store this model as", 1)[1]
        assert await conn.fetchval(f"SELECT embedding::text FROM {model_table('range', L3)}") == before
    finally:
        await conn.close()


def test_an_unknown_storage_is_refused_with_a_400_and_creates_nothing(gateway):
    _, dg, _ = gateway
    with pytest.raises(BadRequest):
        dg.create_collection("nope", L3, storage="int8")
    with pytest.raises(NotFound):
        dg.get_collection("nope")
    dg.create_collection("plain", L3)
    with pytest.raises(BadRequest):
        dg.start_migration("plain", L6, storage="float16")
    plain = dg.get_collection("plain")
    assert plain.write_models == (L3,) and plain.storage == {L3: "vector"}


async def test_a_migration_onto_a_halfvec_table_backfills_verifies_cuts_over_and_retires(gateway):
    dsn, dg, _ = gateway
    dg.create_collection("moving", L3)
    dg.put_documents("moving", documents("m"))
    started = dg.start_migration("moving", L6, storage="halfvec")
    assert started.to_model == L6
    dg.put_documents("moving", [{"id": "m99", "text": "written while it migrates"}])  # dual-written
    status = wait_until(
        lambda: dg.status("moving"),
        lambda s: s.phase == "ready" and s.models[L6]["index_ready"],
        lambda s: (s.phase, s.backfill.get("done"), s.models[L6]["rows"]),
    )
    assert status.models[L6]["storage"] == "halfvec" and status.models[L3]["storage"] == "vector"
    assert status.models[L6]["coverage"] == 1.0 and status.models[L6]["rows"] == len(TEXTS) + 1
    column, index = await column_and_index(dsn, "moving", L6)
    assert column == "halfvec(384)" and "halfvec_cosine_ops" in index
    assert dg.verify("moving", sample=10).passed is True
    assert dg.get_collection("moving").storage == {L3: "vector", L6: "halfvec"}
    # the shadow reads the halfvec table beside the primary's float32 one
    assert dg.shadow("moving", L6, 1.0).shadow_model == L6

    def shadowed():
        dg.query("moving", text="a note about rivers", k=5)
        return dg.status("moving").raw["shadow_metrics"]

    metrics = wait_until(shadowed, lambda m: m["samples"] >= 1, lambda m: (m["samples"], m.get("dropped")))
    assert metrics["overlap_at_k"]["mean"] > 0, metrics
    assert dg.cutover("moving", L6).read_model == L6
    answer = dg.query("moving", text="written while it migrates", k=3)
    assert answer.model == L6 and answer.hits[0].id == "m99"
    retired = dg.retire("moving", L3)
    assert retired.write_models == (L6,)
    assert dg.get_collection("moving").storage == {L6: "halfvec"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [("m", ("m", Storage.VECTOR)), ("m@halfvec", ("m", Storage.HALFVEC)), ("m@vector", ("m", Storage.VECTOR))],
)
def test_evaluate_names_a_model_and_its_storage_as_key_at_storage(entry, expected):
    assert stored_model(entry) == expected


def test_an_unknown_storage_after_the_at_sign_says_the_choices(capsys):
    with pytest.raises(ValueError, match="vector, halfvec"):
        stored_model("m@int8")
    # the command refuses before it loads a dataset or starts a database
    options = {"dataset": "vaswani", "k": 10, "limit": None, "json_path": None, "plot_path": None}
    assert evaluate_command.run(load_settings(None), models=[L3, f"{L3}@int8"], **options) == 2
    assert "one of vector, halfvec" in capsys.readouterr().err
    assert evaluate_command.run(load_settings(None), models=[L3, f"{L6}@halfvec"], adapter=True, **options) == 2
    assert "plain model keys" in capsys.readouterr().err


def small_judged_set(queries: int = 3, distractors: int = 12) -> Dataset:
    """The Vaswani queries with the fewest relevant documents, those documents, and a few others."""
    full = vaswani()
    chosen = sorted((q for q in full.queries if full.qrels.get(q[0])), key=lambda q: len(full.qrels[q[0]]))[:queries]
    relevant = set().union(*(full.qrels[q] for q, _ in chosen))
    others = [doc for doc in full.corpus if doc[0] not in relevant][:distractors]
    corpus = [doc for doc in full.corpus if doc[0] in relevant] + others
    return Dataset(corpus, chosen, {q: full.qrels[q] for q, _ in chosen})


def test_evaluate_compares_a_model_stored_as_vector_and_as_halfvec(gateway):
    _, _, server = gateway
    data = small_judged_set()
    half = f"{L3}@halfvec"
    report = server.call(evaluate(server.app[POOL], server.app[COLLECTIONS], data, [L3, half], k=10))
    vector_row, half_row = report["models"]
    assert (vector_row["model"], half_row["model"]) == (L3, half)
    # float16 rounding barely moves a ranking: the same model's two tables agree almost entirely
    [comparison] = report["comparisons"]
    assert comparison["overlap@10"] >= 0.9, comparison
    assert half_row["exact"]["ndcg@10"] == pytest.approx(vector_row["exact"]["ndcg@10"], abs=0.05)
