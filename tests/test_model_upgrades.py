"""The seed's two named migrations through the admin API, and a data directory from before the fp32 catalog.

all-MiniLM-L6-v2 -> its fine-tune is the same-dimension drift no schema catches; all-MiniLM-L6-v2
-> all-mpnet-base-v2 is the 384 -> 768 upgrade. Collections stay small so MPNet is quick on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import asyncpg
import numpy as np

from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.onnx import load_encoder
from gateway.store.collections import model_table
from tests.helpers import L6, L6_INT8, MPNET, SRE, admin, create_collection, seed, wait_phase


def embed(key: str, text: str) -> list[float]:
    return load_encoder(CATALOG[key], default_cache_dir()).encode([text]).vectors[0].tolist()


async def migrate_to(client, to_model: str, documents: int) -> None:
    """start -> backfill -> verify -> cutover -> retire of the old model, asserting each step."""
    status, state = await admin(client, "POST", "migrations", {"to_model": to_model})
    assert status == 202 and state["write_models"] == [L6, to_model]
    await wait_phase(client, "ready")
    status, report = await admin(client, "POST", "verify", {"sample": documents})
    assert status == 200 and report["passed"], report
    status, state = await admin(client, "POST", "read-target", {"model": to_model})
    assert status == 200 and state["phase"] == "cutover" and state["read_model"] == to_model


async def query_vector(client, key: str, text: str) -> tuple[int, dict]:
    response = await client.post("/v1/collections/docs/query", json={"vector": embed(key, text), "model": key, "k": 3})
    return response.status, await response.json()


async def test_all_minilm_to_its_fine_tune_refuses_a_base_model_vector_after_cutover(gateway):  # noqa: F811
    await seed(gateway, n=20, model=L6)
    status, body = await query_vector(gateway, SRE, "topic 3")  # before: the fine-tune's vectors are refused
    assert status == 409 and body["error"]["code"] == "model_mismatch"
    await migrate_to(gateway, SRE, 20)

    status, body = await query_vector(gateway, L6, "topic 3")  # same 384 dimensions, another space
    assert status == 409 and body["error"]["code"] == "model_mismatch" and SRE in body["error"]["message"]
    status, body = await query_vector(gateway, SRE, "document number 3 about topic 3")
    assert status == 200 and body["hits"][0]["id"] == "d003"
    text = await gateway.post("/v1/collections/docs/query", json={"text": "document number 3 about topic 3"})
    assert text.headers["X-Driftgate-Model"] == SRE and (await text.json())["hits"][0]["id"] == "d003"

    status, state = await admin(gateway, "POST", "retire", {"model": L6})
    assert status == 200 and state["phase"] == "steady" and state["write_models"] == [SRE]


async def test_all_minilm_to_all_mpnet_changes_the_dimension_from_384_to_768(gateway, dsn):  # noqa: F811
    await seed(gateway, n=20, model=L6)
    await migrate_to(gateway, MPNET, 20)

    status, body = await query_vector(gateway, MPNET, "document number 5 about topic 5")
    assert status == 200 and body["hits"][0]["id"] == "d005"
    status, body = await query_vector(gateway, L6, "topic 5")
    assert status == 409 and body["error"]["code"] == "model_mismatch"
    conn = await asyncpg.connect(dsn)
    try:
        dims = await conn.fetchval(f"SELECT vector_dims(embedding) FROM {model_table('docs', MPNET)} LIMIT 1")
    finally:
        await conn.close()
    assert dims == 768
    assert (await admin(gateway, "POST", "retire", {"model": L6}))[0] == 200


# -- a data directory from before: all-MiniLM-L6-v2 named the int8 export --------------------------


async def stored_vector(dsn: str, model: str, doc_id: str) -> np.ndarray:
    conn = await asyncpg.connect(dsn)
    try:
        text = await conn.fetchval(
            f"SELECT embedding::text FROM {model_table('docs', model)} WHERE doc_id = $1", doc_id
        )
    finally:
        await conn.close()
    return np.array(text.strip("[]").split(","), dtype=np.float32)


async def test_collections_built_with_the_int8_files_under_the_old_key_keep_those_files_after_the_upgrade(
    make_client, settings, dsn, monkeypatch, caplog
):
    with monkeypatch.context() as previous_release:
        previous_release.setitem(CATALOG, L6, replace(CATALOG[L6_INT8], key=L6))
        before = await make_client(settings)
        await create_collection(before, "docs", L6)
        assert (await before.put("/v1/collections/docs/documents/old", json={"text": "written before"})).status == 200

    caplog.set_level(logging.WARNING)
    after = await make_client(settings)
    assert (await after.get("/readyz")).status == 200
    assert f"registered with the files of {L6_INT8}" in caplog.text
    query = await after.post("/v1/collections/docs/query", json={"text": "written before"})
    assert query.status == 200 and query.headers["X-Driftgate-Model"] == L6
    assert (await query.json())["hits"][0]["id"] == "old"

    text = "written after the upgrade, with the files the collection was built with"
    assert (await after.put("/v1/collections/docs/documents/new", json={"text": text})).status == 200
    stored = await stored_vector(dsn, L6, "new")
    int8, fp32 = np.array(embed(L6_INT8, text)), np.array(embed(L6, text))
    assert float(stored @ int8) > 0.99999 and float(stored @ fp32) < float(stored @ int8)
