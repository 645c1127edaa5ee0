"""The adapter through the gateway: fitted on a real migration's backfilled pairs (L3 -> L6), served
as the `adapted` read mode and for translated raw vectors, gated by its floor, shared by replicas.

One gateway and one migration for the module; the tests run in order, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter

import asyncpg
import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from gateway.api.app import create_app
from gateway.api.keys import ADAPTERS, COLLECTIONS, MIGRATIONS, POOL
from gateway.api.transport import runner_options
from gateway.cli import main
from gateway.commands.evaluate import format_adapter_table
from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.encoders.onnx import load_encoder
from gateway.loadtest.main import MIX
from gateway.loadtest.runner import LoadPlan, admin_client, migrate_under_load, seed_collection
from gateway.services.evaluation import evaluate_adapter
from gateway.store import adapters as adapters_sql
from gateway.store.collections import model_table
from tests.conftest import GatewayTestServer, with_database
from tests.helpers import L3, L6, TOKEN, admin, create_collection, status, wait_for_progress, wait_phase
from tests.test_evaluation import subset

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCS = 240
QUERY = "electron density of the ionosphere"


def gateway_settings(**adapter):
    return load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        backfill={"chunk_size": 64, "poll_interval_s": 0.2},
        server={"sync_poll_interval_s": 0.5, "request_timeout_s": 600},
        adapter=adapter,
    )


async def start_gateway(dsn: str, **adapter) -> TestClient:
    settings = gateway_settings(**adapter)
    client = TestClient(
        GatewayTestServer(create_app(settings, dsn, admin_token=TOKEN), runner_options(settings.server))
    )
    await client.start_server()
    return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_dsn(server_dsn: str):
    conn = await asyncpg.connect(server_dsn)
    await conn.execute("DROP DATABASE IF EXISTS adapter WITH (FORCE)")
    await conn.execute("CREATE DATABASE adapter")
    await conn.close()
    yield with_database(server_dsn, "adapter")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(module_dsn: str):
    """A gateway whose collection `docs` (240 Vaswani abstracts) is migrating L3 -> L6, backfill done."""
    client = await start_gateway(module_dsn)
    await create_collection(client, "docs", L3)
    documents = [{"id": doc_id, "text": text} for doc_id, text in vaswani(DOCS).corpus]
    assert (await client.post("/v1/collections/docs/documents", json={"documents": documents})).status == 200
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    await wait_phase(client, "ready")
    yield client
    await client.close()


async def query(client: TestClient, body: dict) -> tuple[int, str | None, dict]:
    response = await client.post("/v1/collections/docs/query", json={"k": 10, **body})
    return response.status, response.headers.get("X-Driftgate-Model"), await response.json()


def ids(body: dict) -> list[str]:
    return [hit["id"] for hit in body["hits"]]


def query_vector(model: str, text: str = QUERY) -> list[float]:
    settings = load_settings(None)
    return load_encoder(settings.model_specs()[model], settings.model_cache_dir()).encode([text]).vectors[0].tolist()


async def stored_adapter(dsn: str):
    conn = await asyncpg.connect(dsn)
    try:
        fingerprints = [
            await conn.fetchval("SELECT fingerprint FROM driftgate.models WHERE key = $1", k) for k in (L3, L6)
        ]
        return await adapters_sql.load_adapter(conn, "docs", tuple(fingerprints))
    finally:
        await conn.close()


async def table_digests(dsn: str) -> tuple[str, ...]:
    conn = await asyncpg.connect(dsn)
    try:
        sql = "SELECT count(*) || ':' || md5(string_agg(doc_id || embedding::text, ',' ORDER BY doc_id)) FROM {}"
        return tuple([await conn.fetchval(sql.format(model_table("docs", m))) for m in (L3, L6)])
    finally:
        await conn.close()


async def test_without_a_migration_there_is_nothing_to_adapt(gateway):
    await create_collection(gateway, "plain", L3)
    code, body = await admin(gateway, "POST", "adapter", {}, collection="plain")
    assert code == 409 and body["error"]["code"] == "no_migration" and "migrate start" in body["error"]["message"]
    code, body = await admin(gateway, "POST", "read-mode", {"mode": "adapted"}, collection="plain")
    assert code == 409 and body["error"]["code"] == "no_migration"


async def test_adapted_reads_are_refused_until_an_adapter_is_fitted(gateway):
    code, body = await admin(gateway, "POST", "read-mode", {"mode": "adapted"})
    assert code == 409 and body["error"]["code"] == "adapter_missing"
    assert "driftgate migrate adapter fit docs" in body["error"]["message"]
    code, body = await admin(gateway, "GET", "adapter")
    assert code == 404 and body["error"]["code"] == "adapter_missing"
    code, body = await admin(gateway, "POST", "read-mode", {"mode": "sideways"})
    assert code == 400
    code, body = await admin(gateway, "POST", "adapter", {"max_pairs": 3})
    assert code == 400


async def test_a_fit_on_backfilled_pairs_reports_held_out_figures_and_is_deterministic(gateway, module_dsn):
    code, first = await admin(gateway, "POST", "adapter", {})
    assert code == 200, first
    assert first["pairs"] == DOCS and first["adapt"]["held_out_pairs"] == DOCS // 5
    assert first["adapt"]["kind"] == "procrustes" and first["adapt"]["passes"], first
    assert 0 < first["adapt"]["mean_cosine"] < 1 and first["adapt"]["agreement@10"] >= first["floor"]
    weights = (await stored_adapter(module_dsn)).adapt.weights
    code, second = await admin(gateway, "POST", "adapter", {})
    assert code == 200 and second["version"] == first["version"] + 1
    assert {k: v for k, v in second.items() if k != "version"} == {k: v for k, v in first.items() if k != "version"}
    assert np.array_equal((await stored_adapter(module_dsn)).adapt.weights, weights)
    report = await status(gateway)
    assert report["adapter"]["version"] == second["version"] and report["adapter"]["read_mode"] == "native"
    metrics = await (await gateway.get("/metrics")).text()
    assert re.search(
        r'driftgate_adapter_validation\{collection="docs",direction="adapt",figure="agreement@10"\}', metrics
    )


async def test_the_migrate_cli_fits_shows_and_refuses_with_a_reason(gateway, monkeypatch, capsys):
    monkeypatch.setenv("DRIFTGATE_ADMIN_TOKEN", TOKEN)
    url = str(gateway.make_url("")).rstrip("/")

    def cli(*args: str) -> int:
        return main(["migrate", "adapter", *args, "--url", url])

    assert await asyncio.to_thread(cli, "fit", "docs", "--max-pairs", "200") == 0
    out = capsys.readouterr().out
    assert "200 pairs" in out and "adapt" in out and "passes the floor 0.25" in out
    assert "driftgate migrate adapter enable docs" in out
    assert await asyncio.to_thread(cli, "show", "docs", "--json") == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 200
    assert await asyncio.to_thread(cli, "fit", "plain") == 1
    assert "409 no_migration" in capsys.readouterr().err


async def test_evaluate_adapter_reports_both_models_adapted_and_translated_search(gateway):
    app = gateway.app
    data = subset(queries=8, distractors=100)
    report = await evaluate_adapter(app[POOL], app[COLLECTIONS], app[MIGRATIONS], app[ADAPTERS], data, L3, L6, k=10)
    runs = {row["run"]: row for row in report["runs"]}
    assert list(runs) == ["from native", "to native", "adapted", "translated"]
    assert (runs["adapted"]["query_model"], runs["adapted"]["index_model"]) == (L6, L3)
    assert (runs["translated"]["query_model"], runs["translated"]["index_model"]) == (L3, L6)
    assert report["adapter"]["pairs"] == len(data.corpus) and report["adapter"]["adapt"]["kind"] == "procrustes"
    for row in runs.values():
        assert 0.0 < row["exact"]["ndcg@10"] <= 1.0 and 0.0 < row["index_recall@10"] <= 1.0, row
    assert runs["adapted"]["exact"]["ndcg@10"] != runs["from native"]["exact"]["ndcg@10"]
    table = format_adapter_table({**report, "dataset": "vaswani"})
    assert f"{L3} -> {L6}" in table and f"queries {L6} -> index {L3}" in table and "goals" in table
    goals = report["goals"]
    assert goals["adapted / from native"] == round(
        runs["adapted"]["exact"]["ndcg@10"] / runs["from native"]["exact"]["ndcg@10"], 3
    )
    async with app[POOL].acquire() as conn:  # the scratch collection is gone with its adapter
        assert await conn.fetchval("SELECT count(*) FROM driftgate.collections WHERE name LIKE 'eval_%'") == 0
        assert await conn.fetchval("SELECT count(*) FROM driftgate.adapters WHERE collection LIKE 'eval_%'") == 0


async def test_adapted_text_queries_embed_with_the_new_model_and_search_the_old_index(gateway, module_dsn):
    before = await table_digests(module_dsn)
    code, native_header, native = await query(gateway, {"text": QUERY})
    assert code == 200 and native_header == L3 and "adapted_from" not in native
    code, state = await admin(gateway, "POST", "read-mode", {"mode": "adapted"})
    assert code == 200 and state["read_mode"] == "adapted" and state["read_model"] == L3

    code, header, adapted = await query(gateway, {"text": QUERY})
    assert code == 200 and header == f"{L3}; adapted-from={L6}"
    assert adapted["model"] == L3 and adapted["adapted_from"] == L6
    # the same answer as the L6 query vector mapped by the stored adapter, searched in the L3 index
    mapped = (await stored_adapter(module_dsn)).adapt.apply(np.array(query_vector(L6))).tolist()
    code, _, by_vector = await query(gateway, {"vector": mapped, "model": L3})
    assert code == 200 and ids(adapted) == ids(by_vector) and ids(adapted) != ids(native)
    assert await table_digests(module_dsn) == before  # nothing mapped is ever stored

    # a shadow on the new model compares the adapted answers with its native ones
    assert (await admin(gateway, "POST", "shadow", {"model": L6, "sample_rate": 1.0}))[0] == 200
    for _ in range(3):
        assert (await query(gateway, {"text": QUERY}))[0] == 200
    report = await wait_for_progress(
        lambda: status(gateway),
        lambda r: r["shadow_metrics"]["samples"] >= 3,
        lambda r: r["shadow_metrics"]["samples"],
    )
    assert 0 < report["shadow_metrics"]["overlap_at_k"]["mean"] <= 1, report["shadow_metrics"]
    assert (await admin(gateway, "POST", "shadow", {"model": None, "sample_rate": 0.0}))[0] == 200


async def test_raw_vectors_of_the_new_model_are_translated_only_when_the_collection_allows_it(gateway):
    vector = query_vector(L6)
    code, _, body = await query(gateway, {"vector": vector, "model": L6})
    assert code == 409 and body["error"]["code"] == "model_mismatch"
    code, state = await admin(gateway, "POST", "read-mode", {"mode": "adapted", "translate_vectors": True})
    assert code == 200 and state["translate_vectors"] is True
    code, header, translated = await query(gateway, {"vector": vector, "model": L6})
    assert code == 200 and header == f"{L3}; adapted-from={L6}"
    _, _, by_text = await query(gateway, {"text": QUERY})
    assert ids(translated) == ids(by_text)


async def test_an_adapter_below_the_floor_cannot_serve_and_never_replaces_one_that_does(gateway, module_dsn):
    strict = await start_gateway(module_dsn, floor=0.99, kind="ridge")
    try:
        version = (await status(gateway))["adapter"]["version"]
        code, body = await admin(strict, "POST", "adapter", {})
        assert code == 409 and body["error"]["code"] == "adapter_below_floor", body
        assert f"version {version}) is kept" in body["error"]["message"]
        assert (await status(gateway))["adapter"]["version"] == version
        _, _, still = await query(gateway, {"text": QUERY})
        assert still["adapted_from"] == L6

        assert (await admin(gateway, "POST", "read-mode", {"mode": "native", "translate_vectors": False}))[0] == 200
        code, body = await admin(strict, "POST", "adapter", {})
        assert code == 200 and body["adapt"]["passes"] is False and body["version"] == version + 1
        assert body["adapt"]["kind"] == body["translate"]["kind"] == "ridge"  # adapter.kind of that gateway
        code, body = await admin(gateway, "POST", "read-mode", {"mode": "adapted"})
        assert code == 409 and body["error"]["code"] == "adapter_below_floor"
        assert "below the floor" in body["error"]["message"]
        code, header, _ = await query(gateway, {"text": QUERY})
        assert code == 200 and header == L3
    finally:
        await strict.close()
    code, body = await admin(gateway, "POST", "adapter", {})  # a fit that passes again
    assert code == 200 and body["adapt"]["passes"]
    assert (await admin(gateway, "POST", "read-mode", {"mode": "adapted", "translate_vectors": True}))[0] == 200


async def test_another_replica_and_a_restarted_gateway_serve_the_same_adapter(gateway, module_dsn):
    _, header, expected = await query(gateway, {"text": QUERY})
    for _ in range(2):  # a second replica beside the first; then a fresh one, as after a restart
        replica = await start_gateway(module_dsn)
        try:
            code, other_header, answer = await query(replica, {"text": QUERY})
        finally:
            await replica.close()
        assert code == 200 and other_header == header == f"{L3}; adapted-from={L6}"
        assert ids(answer) == ids(expected)


async def test_after_cutover_old_model_vectors_are_translated_into_the_new_index_until_retire(gateway):
    assert (await admin(gateway, "POST", "verify", {"sample": 20}))[0] == 200
    code, state = await admin(gateway, "POST", "read-target", {"model": L6})
    assert code == 200 and state["read_model"] == L6
    code, header, body = await query(gateway, {"text": QUERY})
    assert code == 200 and header == L6 and "adapted_from" not in body  # native reads of the new model
    code, header, body = await query(gateway, {"vector": query_vector(L3), "model": L3})
    assert code == 200 and header == f"{L6}; adapted-from={L3}", body
    code, body = await admin(gateway, "POST", "read-mode", {"mode": "adapted"})
    assert code == 409 and body["error"]["code"] == "illegal_transition"

    code, state = await admin(gateway, "POST", "retire", {"model": L3})
    assert code == 200 and state["read_mode"] == "native" and state["adapter_version"] is None
    code, _, body = await query(gateway, {"vector": query_vector(L3), "model": L3})
    assert code == 409 and body["error"]["code"] == "model_mismatch"


async def test_adapted_reads_through_a_migration_under_load_fail_nothing_and_lose_nothing(gateway):
    url = str(gateway.make_url("")).rstrip("/")
    everything = vaswani(DOCS + 40).corpus
    corpus, fresh = everything[40:], [text for _, text in everything[:40]]  # other ids than `docs`
    plan = LoadPlan(
        from_model=L3, to_model=L6, rate=2.0, mix=MIX, shadow_rate=0.5, dwell_s=1.0, warmup_s=0.5, read_mode="adapted"
    )
    async with admin_client(url, TOKEN) as client:
        seeds = await seed_collection(client, "lt", L3, corpus)
        result = await migrate_under_load(client, [url], "lt", corpus, fresh, seeds, plan)
    failures = Counter((s.phase, s.op, s.status) for s in result.samples if s.status == 0 or s.status >= 500)
    assert result.passed, (failures, result.state["lost"], result.state["resurrected"])
    assert result.state["checked"] > 0 and result.status.read_model == L6 and result.status.phase == "steady"
    adapted = {s.model for s in result.samples if s.op == "query" and s.phase == "adapted"}
    assert adapted == {f"{L3}; adapted-from={L6}"}, adapted
    assert any("adapter v2" in event for _, event in result.timeline.events)  # refitted when the backfill was done
