#!/usr/bin/env python
"""Benchmark: a bulk load (POST /v1/collections/{c}/documents:bulk, NDJSON) against PostgreSQL's floor.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

The gateway side: --docs Vaswani documents (copies past the corpus) streamed as one NDJSON body
to a new collection on the real app in this process (bench/_gateway.py) with the trivial hash
encoder (bench/_fake_encoder.py), `?index=later`, so the load and the index build are timed
apart; then POST /admin/v1/collections/{c}/index builds the HNSW index (CONCURRENTLY, the
backfill's settings). The floor, in the same run and on the same server: the same rows (id,
text, metadata, the same vectors from the same encoder) COPYed into one bare table, then
CREATE INDEX ... USING hnsw with the same maintenance_work_mem and parallel workers. No tool
can load and index these rows faster on this machine than the floor.

    python bench/bulk_load.py --docs 20000 --repeats 3 > bench/results/bench-bulk-load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import asyncpg
from _backfill import COLLECTION, DOCUMENTS, FAKE_ENCODER, FROM_MODEL, documents
from _common import CpuMeter, busy_cores, emit, load_average, log, machine_info, setup_logging
from _db import Databases, PostgresServer
from _fake_encoder import HashEncoder, fake_loader
from _gateway import Gateway
from pgvector.asyncpg import register_vector

from gateway.config import load_settings
from gateway.encoders.catalog import CATALOG

LOAD_TARGET_DOCS_PER_S = 10_000.0
FLOOR_RATIO_TARGET = 1.2  # load + index within 1.2x the floor's time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="documents to load")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, each on a fresh database")
    parser.add_argument("--verbose", action="store_true", help="gateway INFO logs to stderr")
    args = parser.parse_args(argv)
    if min(args.docs, args.repeats) < 1:
        parser.error("--docs and --repeats must be positive")
    return args


def ndjson(docs: list[tuple[str, str]]) -> bytes:
    """The body, serialised before the clock starts (the client's cost is not the gateway's)."""
    return b"".join(json.dumps({"id": i, "text": t}).encode() + b"\n" for i, t in docs)


async def gateway_run(databases: Databases, body: bytes, count: int, pg_pid, label: str) -> dict:
    db = await databases.create_or_exit("bench_bulk")
    await databases.checkpoint()
    settings = load_settings(None, backfill={"enabled": False}, server={"sync_poll_interval_s": 1.0})
    try:
        async with Gateway(settings, databases.dsn(db), loader=fake_loader, timeout_s=3600) as gw:
            status, answer = await gw.call("PUT", f"/v1/collections/{COLLECTION}", {"model": FROM_MODEL})
            if status not in (200, 201):
                raise RuntimeError(f"creating the collection: {status} {answer}")
            url = f"{gw.base}/v1/collections/{COLLECTION}/documents:bulk?index=later"
            with CpuMeter(pg_pid) as meter:
                started = time.perf_counter()
                async with gw.session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}) as resp:
                    answer = await resp.json()
                    if resp.status != 200 or answer["loaded"] != count:
                        raise RuntimeError(f"bulk load answered {resp.status}: {answer}")
                load_s = time.perf_counter() - started
                built = await gw.admin("POST", COLLECTION, "index")
                total_s = time.perf_counter() - started
            if built != {"built": [FROM_MODEL]}:
                raise RuntimeError(f"index build answered {built}")
    finally:
        await databases.drop(db)
    result = {
        "load_s": round(load_s, 3),
        "index_s": round(total_s - load_s, 3),
        "total_s": round(total_s, 3),
        "load_docs_per_s": round(count / load_s, 1),
        "docs_per_s": round(count / total_s, 1),
        "cpu": meter.summary(),
    }
    log(f"  gateway {label}: load {result['load_docs_per_s']} docs/s, with the index {result['docs_per_s']} docs/s")
    return result


async def floor_run(databases: Databases, docs: list[tuple[str, str]], pg_pid, label: str) -> dict:
    """COPY the same rows into one bare table, then build the same index: PostgreSQL's own floor."""
    spec = CATALOG[FROM_MODEL]
    vectors = HashEncoder(spec.dim).encode([t for _, t in docs]).vectors  # as the gateway's encoder makes them
    db = await databases.create_or_exit("bench_floor")
    await databases.checkpoint()
    settings = load_settings(None)
    conn = await asyncpg.connect(databases.dsn(db))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await register_vector(conn)
        await conn.execute(
            f"CREATE TABLE floor (id text PRIMARY KEY, content text NOT NULL, metadata jsonb NOT NULL, "
            f"embedding vector({spec.dim}) NOT NULL)"
        )
        records = [(i, t, "{}", v) for (i, t), v in zip(docs, vectors, strict=True)]
        await conn.execute(f"SET maintenance_work_mem = '{settings.backfill.index_memory_mb}MB'")
        with CpuMeter(pg_pid) as meter:
            started = time.perf_counter()
            await conn.copy_records_to_table("floor", records=records)
            copy_s = time.perf_counter() - started
            await conn.execute(
                "CREATE INDEX floor_hnsw ON floor USING hnsw (embedding vector_cosine_ops)", timeout=3600
            )
            total_s = time.perf_counter() - started
    finally:
        await conn.close()
        await databases.drop(db)
    result = {
        "copy_s": round(copy_s, 3),
        "index_s": round(total_s - copy_s, 3),
        "total_s": round(total_s, 3),
        "copy_docs_per_s": round(len(docs) / copy_s, 1),
        "docs_per_s": round(len(docs) / total_s, 1),
        "cpu": meter.summary(),
    }
    log(f"  floor {label}: COPY {result['copy_docs_per_s']} docs/s, with the index {result['docs_per_s']} docs/s")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    docs = documents(args.docs)
    body = ndjson(docs)
    load_before, busy_before = load_average(), busy_cores(2.0)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")

    async def run(server: PostgresServer) -> tuple[list[dict], list[dict], dict]:
        gateway_runs, floor_runs = [], []
        async with Databases(server.server_dsn) as databases:
            for r in range(args.repeats):  # interleaved, so a change in the machine's load hits both sides
                label = f"run {r + 1}/{args.repeats}"
                gateway_runs.append(await gateway_run(databases, body, len(docs), server.pid, label))
                floor_runs.append(await floor_run(databases, docs, server.pid, label))
            return gateway_runs, floor_runs, await databases.server_facts()

    with PostgresServer() as server:
        gateway_runs, floor_runs, facts = asyncio.run(run(server))
    load = statistics.median(r["load_docs_per_s"] for r in gateway_runs)
    total = statistics.median(r["total_s"] for r in gateway_runs)
    floor = statistics.median(r["total_s"] for r in floor_runs)
    emit(
        {
            "benchmark": "bulk_load",
            "machine": machine_info(),
            "config": {
                "docs": len(docs),
                "repeats": args.repeats,
                "model": FROM_MODEL,
                "documents": DOCUMENTS,
                "fake_encoder": FAKE_ENCODER,
                "database": server.kind,
                "server": facts,
            },
            "median_load_docs_per_s": load,
            "load_target_docs_per_s": LOAD_TARGET_DOCS_PER_S,
            "load_target_met": load >= LOAD_TARGET_DOCS_PER_S,
            "median_total_s": total,
            "median_floor_total_s": floor,
            "ratio_to_floor": round(total / floor, 3),
            "ratio_target": FLOOR_RATIO_TARGET,
            "ratio_target_met": total / floor <= FLOOR_RATIO_TARGET,
            "gateway_runs": gateway_runs,
            "floor_runs": floor_runs,
            "load_average_before": load_before,
            "machine_busy_cores_before_start": busy_before,
            "notes": [
                "gateway: load_s from the first byte of the POST to its answer (all chunks committed), "
                "index_s the admin index build after it; the body is one NDJSON stream serialised beforehand",
                "floor: the same rows and vectors COPYed into one bare table, then CREATE INDEX USING hnsw "
                "with the same maintenance_work_mem (the server's parallel maintenance workers on both sides)",
                "ratio_to_floor = gateway total_s / floor total_s (medians); cpu.other_processes_cores > 0.1 "
                "means something else used the CPU at the same time",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
