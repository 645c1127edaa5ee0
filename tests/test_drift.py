"""Pinned means pinned: a model whose fingerprint or outputs moved is refused, not served."""

from __future__ import annotations

import json

import asyncpg

from gateway.config import load_settings
from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir, local_path
from tests.helpers import L3, create_collection


async def _seed(make_client) -> None:
    client = await make_client()
    await create_collection(client, "docs", L3)
    response = await client.put("/v1/collections/docs/documents/a", json={"text": "pinned vectors"})
    assert response.status == 200
    await client.close()


async def _assert_refused(client, reason_fragment: str) -> None:
    query = await client.post("/v1/collections/docs/query", json={"text": "pinned"})
    assert query.status == 409
    error = (await query.json())["error"]
    assert error["code"] == "model_drift"
    assert "re-index required" in error["message"] and reason_fragment in error["message"]
    write = await client.put("/v1/collections/docs/documents/b", json={"text": "new"})
    assert write.status == 409
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert L3 in (await ready.json())["models_drifted"] or any(
        reason_fragment in r for r in (await ready.json())["models_drifted"].values()
    )


async def test_a_changed_registered_fingerprint_makes_the_collection_refuse_after_restart(make_client, dsn):
    await _seed(make_client)
    conn = await asyncpg.connect(dsn)
    await conn.execute("UPDATE driftgate.models SET fingerprint = 'deadbeef' WHERE key = $1", L3)
    await conn.close()
    await _assert_refused(await make_client(), "fingerprint changed")


async def test_probe_vectors_that_moved_make_the_collection_refuse_after_restart(make_client, dsn):
    await _seed(make_client)
    conn = await asyncpg.connect(dsn)
    probes = json.loads(await conn.fetchval("SELECT probe_vectors FROM driftgate.models WHERE key = $1", L3))
    shifted = [[x + (0.05 if i % 2 else -0.05) for i, x in enumerate(v)] for v in probes]
    await conn.execute("UPDATE driftgate.models SET probe_vectors = $2::jsonb WHERE key = $1", L3, json.dumps(shifted))
    await conn.close()
    await _assert_refused(await make_client(), "probe vectors moved")


def _user_model(**changes) -> dict:
    spec = CATALOG[L3]
    cache = default_cache_dir()
    model = {
        "name": "my-l3",
        "revision": "1",
        "dim": 384,
        "output": spec.output,
        "max_tokens": 128,
        "onnx": {"path": str(local_path(spec.file("onnx"), cache)), "sha256": spec.file("onnx").sha256},
        "tokenizer": [{"path": str(local_path(f, cache)), "sha256": f.sha256} for f in spec.tokenizer_files()],
    }
    model.update(changes)
    return model


async def test_changing_a_user_models_encoding_parameters_in_the_config_is_refused(make_client):
    base = {"pool_min": 1, "pool_max": 4}
    before = load_settings(None, database=base, models={"custom": {"my-l3": _user_model()}})
    client = await make_client(before)
    await create_collection(client, "docs", "my-l3")
    assert (await client.put("/v1/collections/docs/documents/a", json={"text": "pinned"})).status == 200
    await client.close()

    after = load_settings(None, database=base, models={"custom": {"my-l3": _user_model(query_prefix="query: ")}})
    restarted = await make_client(after)
    query = await restarted.post("/v1/collections/docs/query", json={"text": "pinned"})
    assert query.status == 409
    assert (await query.json())["error"]["code"] == "model_drift"


async def test_an_unchanged_model_is_served_after_restart(make_client):
    await _seed(make_client)
    client = await make_client()
    assert (await client.get("/readyz")).status == 200
    query = await client.post("/v1/collections/docs/query", json={"text": "pinned"})
    assert query.status == 200
    assert [h["id"] for h in (await query.json())["hits"]] == ["a"]
