"""Faults under load: PostgreSQL restarts, a replica killed mid-write, and the short load test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import asyncpg

from gateway.config import load_settings
from gateway.store.collections import documents_table, model_table
from gateway.store.database import EmbeddedPostgres
from tests.helpers import L3, L6, create_collection, free_port, request, temp_folders


async def test_a_postgres_restart_gives_503_with_retry_after_then_recovers_without_losing_a_write(
    make_client, tmp_path
):
    server = EmbeddedPostgres(tmp_path / "pgdata")
    dsn = server.start()
    try:
        settings = load_settings(None, database={"pool_min": 1, "pool_max": 4})
        client = await make_client(settings, dsn=dsn)
        await create_collection(client)
        acked = {}
        for i in range(5):
            response = await client.put(f"/v1/collections/docs/documents/d{i}", json={"text": f"before {i}"})
            acked[f"d{i}"] = (await response.json())["version"]

        await asyncio.to_thread(server.stop)
        down = await client.put("/v1/collections/docs/documents/lost", json={"text": "while down"})
        assert down.status == 503 and down.headers["Retry-After"] == "1"
        assert (await down.json())["error"]["code"] == "database_unavailable"
        query = await client.post("/v1/collections/docs/query", json={"text": "before"})
        assert query.status == 503

        server = EmbeddedPostgres(tmp_path / "pgdata")
        assert await asyncio.to_thread(server.start) == dsn
        deadline = time.monotonic() + 30
        while True:  # the same app, not restarted, recovers by itself
            response = await client.put("/v1/collections/docs/documents/after", json={"text": "after restart"})
            if response.status == 200:
                break
            assert time.monotonic() < deadline, await response.text()
            await asyncio.sleep(0.5)
        for doc_id, version in acked.items():
            doc = await (await client.get(f"/v1/collections/docs/documents/{doc_id}")).json()
            assert doc["version"] == version
        assert (await client.post("/v1/collections/docs/query", json={"text": "before"})).status == 200
        assert (await client.get("/readyz")).status == 200
    finally:
        server.stop()


def test_a_replica_killed_during_dual_writes_leaves_no_partial_row(dsn, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": dsn, "DRIFTGATE_ADMIN_TOKEN": "tok", "DRIFTGATE_BACKFILL__ENABLED": "false"}
    log = (tmp_path / "replica.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if request(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        assert request(f"{base}/v1/collections/docs", "PUT", {"model": L3})[0] == 201
        start = urllib.request.Request(
            f"{base}/admin/v1/collections/docs/migrations",
            method="POST",
            data=json.dumps({"to_model": L6}).encode(),
            headers={"Authorization": "Bearer tok", "Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(start, timeout=60).status == 202

        acked: dict[str, int] = {}
        stop = threading.Event()

        def writer(worker: int) -> None:
            n = 0
            while not stop.is_set():
                try:
                    status, body = request(
                        f"{base}/v1/collections/docs/documents/w{worker}-{n}",
                        "PUT",
                        {"text": f"written by {worker} number {n}"},
                    )
                except OSError:
                    return
                if status == 200:
                    acked[body["id"]] = body["version"]
                n += 1

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        while len(acked) < 20:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
    finally:
        if process.poll() is None:
            process.kill()

    async def check() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            docs = {
                r["id"]: r["version"] for r in await conn.fetch(f"SELECT id, version FROM {documents_table('docs')}")
            }
            for model in (L3, L6):
                embedded = {
                    r["doc_id"]: r["source_version"]
                    for r in await conn.fetch(f"SELECT doc_id, source_version FROM {model_table('docs', model)}")
                }
                assert embedded == docs, f"{model}: a document without its {model} embedding"
        finally:
            await conn.close()
        assert all(docs.get(doc_id) == version for doc_id, version in acked.items())

    asyncio.run(check())


def test_the_short_load_test_loses_nothing_and_fails_no_request(tmp_path):
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    before = temp_folders("driftgate-loadtest-")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "loadtest",
            "--short",
            "--json",
            str(report_path),
            "--plot",
            str(tmp_path / "timeline.png"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert report_path.exists(), result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["failed_requests"] == 0, report["phases"]
    assert report["lost_writes"] == 0 and report["resurrected"] == 0, report
    assert report["final_model"] == L6 and report["final_coverage"] == 1.0 and report["final_phase"] == "steady"
    assert report["requests"] > 500 and report["documents_checked"] >= 2000
    assert {"dual_write", "cutover", "rollback", "retired"} <= set(report["phases"])
    assert report["passed"] and result.returncode == 0
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert temp_folders("driftgate-loadtest-") <= before, "a run that passes deletes its database and logs"
