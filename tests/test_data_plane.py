"""Round trips of the data-plane API against the real database and the real models."""

from __future__ import annotations

from tests.helpers import L3, create_collection, in_json_api


async def test_creating_a_collection_is_idempotent_for_the_same_model_and_refused_for_another(client):
    first = await client.put("/v1/collections/docs", json={"model": L3})
    assert first.status == 201
    assert await first.json() == {"name": "docs", "model": L3, "phase": "steady"}
    again = await client.put("/v1/collections/docs", json={"model": L3})
    assert again.status == 200
    other = await client.put("/v1/collections/docs", json={"model": "all-MiniLM-L6-v2"})
    assert other.status == 409
    assert (await other.json())["error"]["code"] == "collection_exists"


async def test_a_document_round_trips_and_its_version_grows_on_every_write(client):
    await create_collection(client)
    put = await client.put("/v1/collections/docs/documents/a", json={"text": "hello world", "metadata": {"lang": "en"}})
    assert put.status == 200
    first = await put.json()
    assert first["id"] == "a" and first["truncated"] is False
    got = await (await client.get("/v1/collections/docs/documents/a")).json()
    assert got == {"id": "a", "text": "hello world", "metadata": {"lang": "en"}, "version": first["version"]}
    second = await (await client.put("/v1/collections/docs/documents/a", json={"text": "hello again"})).json()
    assert second["version"] > first["version"]
    info = await (await client.get("/v1/collections/docs")).json()
    assert info == {"name": "docs", "read_model": L3, "write_models": [L3], "phase": "steady", "documents": 1}


async def test_query_by_text_ranks_the_relevant_document_first_and_names_the_model(client):
    await create_collection(client)
    docs = [
        {"id": "cat", "text": "The cat sat on the mat and purred.", "metadata": {"kind": "animal"}},
        {"id": "gpu", "text": "Graphics cards accelerate matrix multiplication.", "metadata": {"kind": "tech"}},
        {"id": "soup", "text": "A recipe for tomato soup with basil.", "metadata": {"kind": "food"}},
    ]
    assert (await client.post("/v1/collections/docs/documents", json={"documents": docs})).status == 200
    response = await client.post("/v1/collections/docs/query", json={"text": "a kitten on a rug", "k": 3})
    assert response.status == 200
    assert response.headers["X-Driftgate-Model"] == L3
    body = await response.json()
    assert body["model"] == L3
    assert [h["id"] for h in body["hits"]][0] == "cat"
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0
    filtered = await (
        await client.post("/v1/collections/docs/query", json={"text": "a kitten on a rug", "filter": {"kind": "food"}})
    ).json()
    assert [h["id"] for h in filtered["hits"]] == ["soup"]


async def test_query_by_vector_of_the_read_model_matches_query_by_text(client):
    await create_collection(client)
    await client.put("/v1/collections/docs/documents/a", json={"text": "quantum tunnelling in diodes"})
    await client.put("/v1/collections/docs/documents/b", json={"text": "medieval castle architecture"})
    embedding = await (await client.post("/v1/collections/docs/query", json={"text": "tunnel diode", "k": 2})).json()
    vector_query = {"vector": [0.0] * 383 + [1.0], "model": L3, "k": 2}
    response = await client.post("/v1/collections/docs/query", json=vector_query)
    assert response.status == 200
    assert {h["id"] for h in (await response.json())["hits"]} == {"a", "b"}
    assert embedding["hits"][0]["id"] == "a"


async def test_a_vector_from_another_model_is_refused_with_model_mismatch(client):
    await create_collection(client)
    await client.put("/v1/collections/docs/documents/a", json={"text": "anything"})
    response = await client.post(
        "/v1/collections/docs/query", json={"vector": [0.1] * 384, "model": "all-MiniLM-L6-v2"}
    )
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "model_mismatch"


async def test_delete_removes_the_document_and_its_embedding(client):
    await create_collection(client)
    await client.put("/v1/collections/docs/documents/a", json={"text": "to be deleted"})
    response = await client.delete("/v1/collections/docs/documents/a")
    assert response.status == 200
    assert await response.json() == {"id": "a", "deleted": True}
    assert (await client.get("/v1/collections/docs/documents/a")).status == 404
    assert (await client.delete("/v1/collections/docs/documents/a")).status == 404
    hits = await (await client.post("/v1/collections/docs/query", json={"text": "deleted"})).json()
    assert hits["hits"] == []


async def test_openapi_describes_every_route_the_app_serves(client):
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    served = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        if route.method != "HEAD" and in_json_api(route)
    }
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert served == described


async def test_metrics_are_exposed_in_prometheus_text_format(client):
    await create_collection(client)
    await client.post("/v1/collections/docs/query", json={"text": "anything"})
    text = await (await client.get("/metrics")).text()
    assert (
        'driftgate_http_requests_total{method="POST",route="/v1/collections/{collection}/query",status="200"}' in text
    )
    assert "driftgate_encode_batch_size_bucket" in text


async def test_a_request_id_is_echoed_or_generated_and_appears_in_log_lines(client, caplog):
    import logging

    from gateway.logs import RequestContextFilter

    given = await client.get("/healthz", headers={"X-Request-Id": "trace-123"})
    assert given.headers["X-Request-Id"] == "trace-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["X-Request-Id"]) == 32
    caplog.handler.addFilter(RequestContextFilter())
    caplog.set_level(logging.INFO)
    await client.put(
        "/v1/collections/logged", json={"model": "paraphrase-MiniLM-L3-v2"}, headers={"X-Request-Id": "trace-456"}
    )
    assert any(getattr(r, "request_id", None) == "trace-456" and "created" in r.getMessage() for r in caplog.records)


async def test_optional_api_keys_guard_the_data_plane_but_not_health(make_client):
    client = await make_client(api_keys="k1, k2")
    assert (await client.get("/healthz")).status == 200
    denied = await client.put("/v1/collections/docs", json={"model": "paraphrase-MiniLM-L3-v2"})
    assert denied.status == 401 and (await denied.json())["error"]["code"] == "unauthorized"
    allowed = await client.put(
        "/v1/collections/docs", json={"model": "paraphrase-MiniLM-L3-v2"}, headers={"Authorization": "Bearer k2"}
    )
    assert allowed.status == 201
    assert (await client.get("/v1/collections/docs", headers={"X-API-Key": "k1"})).status == 200
    assert (await client.get("/v1/collections/docs", headers={"X-API-Key": "k3"})).status == 401


async def test_a_request_slower_than_the_timeout_answers_504(make_client, settings):
    from gateway.config import load_settings

    slow = load_settings(None, database={"pool_min": 1, "pool_max": 4}, server={"request_timeout_s": 0.001})
    client = await make_client(slow)
    response = await client.put("/v1/collections/docs", json={"model": "paraphrase-MiniLM-L3-v2"})
    assert response.status == 504 and (await response.json())["error"]["code"] == "request_timeout"
