"""The migration control plane against the real database and real models."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from gateway.api.keys import WATCHER
from gateway.encoders.onnx import load_encoder
from gateway.store.collections import documents_table, model_table
from tests.helpers import (
    L3,
    L6,
    TOKEN,
    USE,
    admin,
    finish_without_stalling,
    seed,
    settings_with,
    wait_for_progress,
    wait_phase,
)
from tests.helpers import status as status_of


async def _id_versions(dsn: str, sql: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0]: r[1] for r in await conn.fetch(sql)}
    finally:
        await conn.close()


async def embedded_versions(dsn: str, model: str) -> dict[str, int]:
    return await _id_versions(dsn, f"SELECT doc_id, source_version FROM {model_table('docs', model)}")


async def document_versions(dsn: str) -> dict[str, int]:
    return await _id_versions(dsn, f"SELECT id, version FROM {documents_table('docs')}")


# -- the whole path ---------------------------------------------------------------------------


async def test_a_migration_goes_from_steady_through_cutover_rollback_and_retire_without_losing_a_document(gateway, dsn):
    await seed(gateway)
    status, state = await admin(gateway, "POST", "migrations", {"to_model": L6})
    assert status == 202 and state["phase"] == "dual_write" and state["write_models"] == [L3, L6]
    await wait_phase(gateway, "ready")

    status, body = await admin(gateway, "POST", "read-target", {"model": L6})
    assert status == 409 and body["error"]["code"] == "index_incomplete"  # not verified yet
    status, report = await admin(gateway, "POST", "verify", {"sample": 50})
    assert status == 200 and report["passed"], report
    status, state = await admin(gateway, "POST", "read-target", {"model": L6})
    assert status == 200 and state["phase"] == "cutover" and state["read_model"] == L6

    query = await gateway.post("/v1/collections/docs/query", json={"text": "topic 3"})
    assert query.headers["X-Driftgate-Model"] == L6 and (await query.json())["model"] == L6

    assert (await gateway.put("/v1/collections/docs/documents/late", json={"text": "written in cutover"})).status == 200
    status, state = await admin(gateway, "POST", "read-target", {"model": L3})  # rollback: a pointer flip
    assert status == 200 and state["read_model"] == L3 and state["phase"] == "ready"
    assert (await gateway.put("/v1/collections/docs/documents/later", json={"text": "after rollback"})).status == 200
    status, state = await admin(gateway, "POST", "read-target", {"model": L6})
    assert status == 200 and state["phase"] == "cutover"

    documents = await document_versions(dsn)
    assert await embedded_versions(dsn, L3) == documents
    assert await embedded_versions(dsn, L6) == documents

    status, body = await admin(gateway, "POST", "retire", {"model": L6})
    assert status == 409 and body["error"]["code"] == "retire_read_model"
    status, state = await admin(gateway, "POST", "retire", {"model": L3})
    assert status == 200 and state["phase"] == "steady" and state["write_models"] == [L6] and state["changed"]
    status, again = await admin(gateway, "POST", "retire", {"model": L3})
    assert status == 200 and again["changed"] is False
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass($1)", model_table("docs", L3).replace('"', "")) is None
    finally:
        await conn.close()
    info = await (await gateway.get("/v1/collections/docs")).json()
    assert info["read_model"] == L6 and info["documents"] == 42


async def test_a_dimension_change_to_a_512_d_model_serves_512_d_vectors_after_cutover(gateway):
    await seed(gateway, n=12)
    assert (await admin(gateway, "POST", "migrations", {"to_model": USE}))[0] == 202
    await wait_phase(gateway, "ready")
    assert (await admin(gateway, "POST", "verify", {"sample": 12}))[1]["passed"]
    assert (await admin(gateway, "POST", "read-target", {"model": USE}))[0] == 200
    ok = await gateway.post("/v1/collections/docs/query", json={"vector": [0.05] * 512, "model": USE, "k": 3})
    assert ok.status == 200 and len((await ok.json())["hits"]) == 3
    old = await gateway.post("/v1/collections/docs/query", json={"vector": [0.05] * 384, "model": L3})
    assert old.status == 409 and (await old.json())["error"]["code"] == "model_mismatch"


# -- atomic dual-write ---------------------------------------------------------------------------


class Switch:
    failing: set[str] = set()


def flaky_loader(spec, cache_dir, threads):
    encoder = load_encoder(spec, cache_dir, threads)

    class Flaky:
        def encode(self, texts):
            if spec.key in Switch.failing:
                raise RuntimeError(f"injected failure in {spec.key}")
            return encoder.encode(texts)

    return Flaky()


async def test_if_encoding_with_any_write_set_model_fails_the_write_fails_with_503_and_nothing_is_written(
    make_client, dsn
):
    client = await make_client(settings_with(enabled=False), admin_token=TOKEN, encoder_loader=flaky_loader)
    await seed(client, n=3)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    Switch.failing = {L6}
    try:
        one = await client.put("/v1/collections/docs/documents/new", json={"text": "must not land"})
        assert one.status == 503 and (await one.json())["error"]["code"] == "encoder_unavailable"
        update = await client.put("/v1/collections/docs/documents/d000", json={"text": "changed text"})
        assert update.status == 503
        batch = await client.post(
            "/v1/collections/docs/documents", json={"documents": [{"id": "b1", "text": "x"}, {"id": "b2", "text": "y"}]}
        )
        assert batch.status == 503
    finally:
        Switch.failing = set()
    assert (await client.get("/v1/collections/docs/documents/new")).status == 404
    assert (await (await client.get("/v1/collections/docs/documents/d000")).json())["text"].startswith("document")
    assert set(await document_versions(dsn)) == {"d000", "d001", "d002"}
    assert "new" not in await embedded_versions(dsn, L3)


# -- replicas ----------------------------------------------------------------------------------------


async def test_a_replica_with_a_stale_cache_still_dual_writes_after_another_starts_a_migration(make_client, dsn):
    first = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    second = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(first, n=3)
    assert (await (await second.get("/v1/collections/docs")).json())["write_models"] == [L3]
    await second.app[WATCHER].stop()  # it will not hear of the migration
    assert (await admin(first, "POST", "migrations", {"to_model": L6}))[0] == 202
    response = await second.put("/v1/collections/docs/documents/fresh", json={"text": "written by a stale replica"})
    assert response.status == 200
    version = (await response.json())["version"]
    assert (await embedded_versions(dsn, L6)).get("fresh") == version
    assert (await embedded_versions(dsn, L3)).get("fresh") == version


async def test_a_read_model_switch_through_one_replica_is_applied_by_the_other_and_both_converge(make_client):
    first = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    second = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(first, n=3)
    await second.get("/v1/collections/docs")  # cache the state
    assert (await admin(first, "POST", "migrations", {"to_model": L6}))[0] == 202
    assert (await admin(first, "POST", "read-model", {"model": L6, "force": True}))[0] == 200

    async def served_by() -> str:
        query = await second.post("/v1/collections/docs/query", json={"text": "topic"})
        return query.headers["X-Driftgate-Model"]

    # nothing else changes meanwhile, so a stall here means the replica never heard of the switch
    await wait_for_progress(served_by, lambda model: model == L6, lambda model: model, interval_s=0.02)

    def converged(status: dict) -> bool:
        versions = {r["applied_state_version"] for r in status["replicas"]}
        return len(status["replicas"]) == 2 and versions == {status["state_version"]}

    await wait_for_progress(
        lambda: status_of(first), converged, lambda s: tuple(r["applied_state_version"] for r in s["replicas"])
    )


# -- guards ------------------------------------------------------------------------------------------


async def test_cutover_onto_an_incomplete_index_is_refused_unless_forced_and_a_forced_one_is_audited(make_client, dsn):
    client = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(client, n=5)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    status, body = await admin(client, "POST", "read-target", {"model": L6})
    assert status == 409 and body["error"]["code"] == "index_incomplete" and "5 missing" in body["error"]["message"]
    status, state = await admin(client, "POST", "read-target", {"model": L6, "force": True})
    assert status == 200 and state["read_model"] == L6
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM driftgate.audit WHERE action = 'forced_cutover'")
    finally:
        await conn.close()
    assert row is not None and row["forced"] and row["actor"] == "127.0.0.1"


async def test_illegal_moves_are_refused_with_409_naming_the_phase(gateway):
    await seed(gateway, n=2)
    status, body = await admin(gateway, "POST", "read-target", {"model": L6})
    assert status == 409 and body["error"]["code"] == "not_in_write_set"
    status, body = await admin(gateway, "POST", "migrations", {"to_model": L3})
    assert status == 409 and body["error"]["code"] == "same_model"
    assert (await admin(gateway, "POST", "migrations", {"to_model": L6}))[0] == 202
    status, body = await admin(gateway, "POST", "migrations", {"to_model": USE})
    assert status == 409 and body["error"]["code"] == "illegal_transition"
    assert "dual_write" in body["error"]["message"] and "abort" in body["error"]["message"]
    status, body = await admin(gateway, "POST", "retire", {"model": L3})
    assert status == 409 and body["error"]["code"] == "retire_read_model"
    status, body = await admin(gateway, "POST", "migrations", {"to_model": "no-such-model"})
    assert status == 400 and body["error"]["code"] == "unknown_model"


async def test_abort_drops_the_new_table_returns_to_steady_and_is_idempotent(make_client, dsn):
    client = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(client, n=3)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    status, state = await admin(client, "POST", "abort")
    assert status == 200 and state["changed"] and state["phase"] == "steady" and state["write_models"] == [L3]
    status, state = await admin(client, "POST", "abort")
    assert status == 200 and state["changed"] is False
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass($1)", model_table("docs", L6).replace('"', "")) is None
    finally:
        await conn.close()
    assert (await client.put("/v1/collections/docs/documents/after", json={"text": "steady again"})).status == 200
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202  # can start over


# -- auth and audit ------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic " + TOKEN, "Bearer"])
async def test_admin_calls_without_the_right_token_get_401_and_the_token_is_never_logged(gateway, header, caplog):
    caplog.set_level(logging.DEBUG)
    await seed(gateway, n=1)
    headers = {"Authorization": header} if header else {}
    response = await gateway.post("/admin/v1/collections/docs/migrations", json={"to_model": L6}, headers=headers)
    assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"
    assert (await (await gateway.get("/v1/collections/docs")).json())["phase"] == "steady"
    assert (await admin(gateway, "GET", "status"))[0] == 200
    assert TOKEN not in caplog.text


async def test_the_admin_api_is_closed_when_no_token_is_configured(make_client):
    client = await make_client(settings_with(), admin_token="")
    response = await client.get("/admin/v1/collections/docs/status", headers={"Authorization": "Bearer "})
    assert response.status == 401 and "DRIFTGATE_ADMIN_TOKEN" in (await response.json())["error"]["message"]


async def test_the_data_plane_exposes_no_admin_action(gateway):
    await seed(gateway, n=1)
    for path in (
        "/v1/collections/docs/migrations",
        "/v1/collections/docs/read-target",
        "/v1/collections/docs/retire",
        "/v1/collections/docs/abort",
    ):
        assert (await gateway.post(path, json={"to_model": L6, "model": L6})).status in (404, 405)


async def test_every_admin_action_is_audited_with_before_and_after(make_client, dsn):
    client = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(client, n=2)
    await admin(client, "POST", "migrations", {"to_model": L6})
    await admin(client, "POST", "backfill", {"action": "pause"})
    await admin(client, "POST", "abort")
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT action, actor, before, after FROM driftgate.audit ORDER BY id")
    finally:
        await conn.close()
    assert [r["action"] for r in rows] == ["start", "backfill_pause", "abort"]
    assert all(r["actor"] == "127.0.0.1" and r["before"] and r["after"] for r in rows)
    assert '"phase": "steady"' in rows[0]["before"] and '"phase": "dual_write"' in rows[0]["after"]


async def test_the_backfill_holds_while_a_replica_reports_a_slow_read_p99_and_resumes_when_it_recovers(
    make_client, dsn
):
    from gateway.api.keys import EMBEDDINGS, POOL
    from gateway.services.backfill import BackfillWorker

    client = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(client, n=30)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""INSERT INTO driftgate.replicas (replica_id, collection, applied_state_version, read_p99_ms)
                              VALUES ('slow-replica', 'docs', 2, 900)""")
        worker = BackfillWorker(
            client.app[POOL], client.app[EMBEDDINGS], "w", chunk_size=8, poll_interval_s=0.1, read_p99_ceiling_ms=200
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, burst=True))
        counters = worker.counters

        async def holds_seen() -> int:
            await asyncio.sleep(0.05)
            return counters.held_for_latency

        await wait_for_progress(holds_seen, lambda n: n >= 2, lambda n: n)
        assert counters.holding and counters.chunks == 0  # held off by the slow replica
        await conn.execute("UPDATE driftgate.replicas SET read_p99_ms = 180, seen_at = now()")
        seen = counters.held_for_latency
        await wait_for_progress(holds_seen, lambda n: n >= seen + 2, lambda n: n)  # it looked again
        assert counters.holding  # hysteresis: 180 ms is below the ceiling but above 0.8 x it
        await conn.execute("UPDATE driftgate.replicas SET read_p99_ms = 20, seen_at = now()")
        await finish_without_stalling(task, lambda: (counters.chunks, counters.held_for_latency))
    finally:
        await conn.close()
    assert not worker.counters.holding and worker.counters.held_for_latency > 0
    assert (await admin(client, "GET", "status"))[1]["phase"] == "ready"
