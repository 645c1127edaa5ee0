"""Shadow reads: off the request path, bounded, errors swallowed, metrics in status."""

from __future__ import annotations

import asyncio
import threading

import asyncpg
import pytest

from gateway.api.keys import SHADOW
from gateway.config import load_settings
from gateway.domain.shadow import sampled
from gateway.encoders.onnx import load_encoder
from tests.helpers import AUTH, L3, L6, TOKEN, admin, seed, until, wait_phase


class Gate:
    """Controls the new model's query encodes: block them, or make them fail."""

    block = threading.Event()
    blocked = threading.Event()
    fail = False


@pytest.fixture(autouse=True)
def reset_gate():
    Gate.block.clear()
    Gate.blocked.clear()
    Gate.fail = False
    yield
    Gate.block.clear()


def gated_loader(spec, cache_dir, threads):
    encoder = load_encoder(spec, cache_dir, threads)

    class Gated:
        def encode(self, texts):
            if spec.key == L6 and len(texts) == 1 and texts[0].startswith("q:"):
                if Gate.fail:
                    raise RuntimeError("shadow encoder broke")
                if Gate.block.is_set():
                    Gate.blocked.set()
                    while Gate.block.is_set():
                        threading.Event().wait(0.01)
            return encoder.encode(texts)

    return Gated()


def shadow_settings(**shadow):
    return load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        backfill={"chunk_size": 16, "poll_interval_s": 0.2},
        shadow={"timeout_s": 5.0, **shadow},
    )


async def ready_with_shadow(make_client, rate: float = 1.0, **shadow):
    client = await make_client(shadow_settings(**shadow), admin_token=TOKEN, encoder_loader=gated_loader)
    await seed(client, n=20)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    await wait_phase(client, "ready")
    status, state = await admin(client, "POST", "shadow", {"model": L6, "sample_rate": rate})
    assert status == 200 and state["phase"] == "shadow", state
    return client


async def query(client, text: str, request_id: str | None = None):
    headers = {"X-Request-Id": request_id} if request_id else {}
    return await client.post("/v1/collections/docs/query", json={"text": text, "k": 5}, headers=headers)


async def test_the_read_model_answers_while_its_shadow_job_is_still_blocked(make_client):
    client = await ready_with_shadow(make_client)
    runner = client.app[SHADOW]
    Gate.block.set()
    response = await query(client, "q: topic 3")
    assert response.status == 200 and response.headers["X-Driftgate-Model"] == L3
    await asyncio.get_running_loop().run_in_executor(None, Gate.blocked.wait, 5)
    assert Gate.blocked.is_set() and runner.in_flight == 1  # the shadow is still stuck
    Gate.block.clear()
    await runner.drain()
    status = (await admin(client, "GET", "status"))[1]["shadow_metrics"]
    assert status["samples"] == 1 and status["overlap_at_k"]["mean"] is not None


async def test_a_saturated_shadow_queue_drops_and_counts_and_never_fails_a_query(make_client):
    client = await ready_with_shadow(make_client, queue_size=1, concurrency=1)
    Gate.block.set()
    responses = [await query(client, f"q: topic {i}") for i in range(6)]
    assert all(r.status == 200 for r in responses)
    metrics = (await admin(client, "GET", "status"))[1]["shadow_metrics"]
    assert metrics["dropped"] >= 4  # one running, one queued, the rest dropped
    Gate.block.clear()
    await client.app[SHADOW].drain()
    exposition = await (await client.get("/metrics")).text()
    dropped = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith('driftgate_shadow_dropped_total{collection="docs",pairing="ab"}')
    ]
    assert dropped == [float(metrics["dropped"])], exposition


async def test_shadow_errors_are_swallowed_and_counted_by_category(make_client):
    client = await ready_with_shadow(make_client)
    Gate.fail = True
    for i in range(3):
        assert (await query(client, f"q: broken {i}")).status == 200
    await client.app[SHADOW].drain()
    metrics = (await admin(client, "GET", "status"))[1]["shadow_metrics"]
    assert metrics["errors"] == {"encoder": 3} and metrics["samples"] == 0


async def test_a_shadow_slower_than_its_timeout_counts_as_a_timeout(make_client):
    client = await ready_with_shadow(make_client, timeout_s=0.2)
    Gate.block.set()
    assert (await query(client, "q: slow")).status == 200

    async def timed_out() -> bool:  # counted while the shadow model is still blocked, not after
        return (await admin(client, "GET", "status"))[1]["shadow_metrics"]["errors"] == {"timeout": 1}

    await until(timed_out, "the blocked shadow to time out")
    Gate.block.clear()
    await client.app[SHADOW].drain()
    assert (await admin(client, "GET", "status"))[1]["shadow_metrics"]["errors"] == {"timeout": 1}


async def test_status_reports_the_comparison_and_a_recommendation(make_client):
    client = await ready_with_shadow(make_client)
    for i in range(8):
        assert (await query(client, f"q: document number {i} about topic {i % 7}")).status == 200
    await client.app[SHADOW].drain()
    metrics = (await admin(client, "GET", "status"))[1]["shadow_metrics"]
    assert metrics["samples"] == 8
    for key in ("overlap_at_k", "rbo", "kendall_tau", "score_shift"):
        assert set(metrics[key]) >= {"mean", "p10", "p50"}
    assert 0.0 <= metrics["overlap_at_k"]["mean"] <= 1.0 and 0.0 <= metrics["rbo"]["mean"] <= 1.0
    assert metrics["latency_ms"]["read"]["p50"] > 0 and metrics["latency_ms"]["shadow"]["p50"] > 0
    assert "agrees" in metrics["recommendation"] and "8 samples" in metrics["recommendation"]


async def test_the_aa_noise_floor_compares_the_index_with_exact_search(make_client):
    client = await ready_with_shadow(make_client, rate=0.0)
    status, state = await admin(client, "POST", "shadow", {"model": L6, "sample_rate": 0.0, "noise_floor_rate": 1.0})
    assert status == 200 and state["noise_floor_rate"] == 1.0
    for i in range(5):
        await query(client, f"q: topic {i}")
    await client.app[SHADOW].drain()
    floor = (await admin(client, "GET", "status"))[1]["shadow_metrics"]["noise_floor"]
    assert floor["samples"] == 5
    assert floor["overlap_at_k"]["mean"] == 1.0  # 22 documents: HNSW finds exactly what a full scan finds


async def test_sampling_by_request_id_is_deterministic_so_a_replay_samples_the_same_queries(make_client):
    ids = [f"req-{i}" for i in range(200)]
    first = [sampled(0.3, i, 0.99) for i in ids]
    assert first == [sampled(0.3, i, 0.0) for i in ids]  # the random draw is ignored with an id
    assert 30 <= sum(first) <= 90
    client = await ready_with_shadow(make_client, rate=0.5)
    runner = client.app[SHADOW]
    for request_id in ids[:20]:
        await query(client, "q: replay", request_id)
    await runner.drain()
    once = (await admin(client, "GET", "status"))[1]["shadow_metrics"]["samples"]
    for request_id in ids[:20]:
        await query(client, "q: replay", request_id)
    await runner.drain()
    twice = (await admin(client, "GET", "status"))[1]["shadow_metrics"]["samples"]
    assert twice == 2 * once and 0 < once < 20


async def test_raw_samples_are_kept_in_a_bounded_table_with_a_hash_instead_of_the_text(make_client, dsn):
    client = await ready_with_shadow(make_client, keep_samples=3)
    for i in range(6):
        await query(client, f"q: secret query {i}")
    await client.app[SHADOW].drain()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT query_text, query_hash, pairing FROM driftgate.shadow_samples")
    finally:
        await conn.close()
    assert len(rows) == 3 and all(r["query_text"] is None and len(r["query_hash"]) == 64 for r in rows)


async def test_the_shadow_cannot_be_the_read_model_or_an_unwritten_one(make_client):
    client = await ready_with_shadow(make_client)
    status, body = await admin(client, "POST", "shadow", {"model": L3, "sample_rate": 0.5})
    assert status == 409 and body["error"]["code"] == "invalid_shadow"
    status, body = await admin(client, "POST", "shadow", {"model": "use-multilingual-v3", "sample_rate": 0.5})
    assert status == 409
    status, state = await admin(client, "POST", "shadow", {"model": None})
    assert status == 200 and state["phase"] == "ready" and state["shadow_model"] is None
    assert AUTH  # the module's admin helper sends the token
