#!/usr/bin/env python
"""Benchmark: the HNSW index build alone, by storage type and parallel workers, with its size and recall.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

The backfill's last step (CREATE INDEX CONCURRENTLY ... USING hnsw, vector_cosine_ops) dominates
a large backfill. This measures it in isolation on --docs vectors of the trivial hash encoder
(bench/_fake_encoder.py: 384-d, mixes of random rows, a harder case for HNSW than real text
embeddings) over the Vaswani texts, for every --storage (vector = float32, halfvec = float16)
x --workers (max_parallel_maintenance_workers; 0 = the leader alone) combination, with
maintenance_work_mem = --memory-mb: build seconds, index size, and recall@10 of the index against
an exact scan for --queries query vectors (the Vaswani queries through the same encoder), which
is the same overlap the A/A noise floor checks.

    python bench/index_build.py --docs 20000 --workers 0,1,2 --storage vector,halfvec
    python bench/index_build.py --docs 2000 --workers 0,1 --storage vector --queries 20   # a quick check
"""

from __future__ import annotations

import argparse
import time

import asyncpg
import numpy as np
from _backfill import DOCUMENTS, FAKE_ENCODER, documents
from _common import CpuMeter, busy_cores, emit, load_average, log, machine_info
from _db import Databases, on_server
from _fake_encoder import HashEncoder

from gateway.config import DatabaseConfig
from gateway.datasets import vaswani
from gateway.store.vector_codec import register_vector

DIM = 384
EF_SEARCH = DatabaseConfig().hnsw_ef_search


def csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="vectors in the table")
    parser.add_argument("--workers", type=csv(int), default="0,1,2", help="max_parallel_maintenance_workers to try")
    parser.add_argument("--storage", type=csv(str), default="vector,halfvec", help="column types to try")
    parser.add_argument(
        "--ef-construction", type=csv(int), default="64", help="HNSW ef_construction values to try (64: default)"
    )
    parser.add_argument("--memory-mb", type=int, default=256, help="maintenance_work_mem of the builds")
    parser.add_argument("--queries", type=int, default=100, help="queries for recall@10 (exact vs index)")
    args = parser.parse_args(argv)
    if set(args.storage) - {"vector", "halfvec"} or not args.storage:
        parser.error("--storage takes vector and/or halfvec")
    if min(args.docs, args.queries, args.memory_mb) < 1 or min(args.workers, default=-1) < 0:
        parser.error("--docs, --queries and --memory-mb must be positive, --workers >= 0")
    return args


async def top10(conn: asyncpg.Connection, storage: str, query: np.ndarray, exact: bool) -> list[str]:
    async with conn.transaction():
        if exact:
            await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        rows = await conn.fetch(f"SELECT id FROM t ORDER BY embedding <=> $1::vector::{storage} LIMIT 10", query)
    return [r["id"] for r in rows]


async def one_build(conn, storage: str, workers: int, ef: int, args, queries: np.ndarray, pg_pid) -> dict:
    await conn.execute("DROP INDEX IF EXISTS t_hnsw")
    await conn.execute(
        f"SET maintenance_work_mem = '{int(args.memory_mb)}MB'; SET max_parallel_maintenance_workers = {int(workers)}"
    )
    with CpuMeter(pg_pid) as meter:
        started = time.perf_counter()
        await conn.execute(
            f"CREATE INDEX CONCURRENTLY t_hnsw ON t USING hnsw (embedding {storage}_cosine_ops) "
            f"WITH (ef_construction = {int(ef)})",
            timeout=3600,
        )
        seconds = time.perf_counter() - started
    size = await conn.fetchval("SELECT pg_relation_size('t_hnsw')")
    overlap = []
    for query in queries:
        exact = await top10(conn, storage, query, exact=True)
        approx = await top10(conn, storage, query, exact=False)
        overlap.append(len(set(exact) & set(approx)) / 10)
    result = {
        "storage": storage,
        "workers": workers,
        "ef_construction": ef,
        "build_s": round(seconds, 3),
        "docs_per_s": round(args.docs / seconds, 1),
        "index_mb": round(size / 2**20, 1),
        "recall_at_10": round(float(np.mean(overlap)), 4),
        "cpu": meter.summary(),
    }
    log(
        f"  {storage} workers={workers} ef_construction={ef}: {seconds:.2f} s, {result['index_mb']} MB, recall@10 {result['recall_at_10']}"
    )
    return result


async def measure(databases: Databases, args, pg_pid) -> dict:
    encoder = HashEncoder(DIM)
    texts = [t for _, t in documents(args.docs)]
    vectors = encoder.encode(texts).vectors
    queries = encoder.encode([q for _, q in vaswani().queries[: args.queries]]).vectors
    results = []
    for storage in args.storage:
        db = await databases.create_or_exit("bench_index")
        conn = await asyncpg.connect(databases.dsn(db))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await register_vector(conn)
            await conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")  # the gateway's default (database.hnsw_ef_search)
            await conn.execute(f"CREATE TABLE t (id text PRIMARY KEY, embedding {storage}({DIM}) NOT NULL)")
            await conn.executemany(
                f"INSERT INTO t VALUES ($1, $2::vector::{storage})", [(f"d{i}", v) for i, v in enumerate(vectors)]
            )
            await conn.execute("VACUUM ANALYZE t")
            await databases.checkpoint()
            table_mb = round(await conn.fetchval("SELECT pg_total_relation_size('t')") / 2**20, 1)
            for ef in args.ef_construction:
                for workers in args.workers:
                    build = await one_build(conn, storage, workers, ef, args, queries, pg_pid)
                    results.append({**build, "table_mb": table_mb})
        finally:
            await conn.close()
            await databases.drop(db)
    return {"builds": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = load_average()
    busy_before = busy_cores(2.0)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")

    result, facts, kind = on_server(lambda databases, pid: measure(databases, args, pid))
    emit(
        {
            "benchmark": "index_build",
            "machine": machine_info(),
            "config": {
                "docs": args.docs,
                "dim": DIM,
                "memory_mb": args.memory_mb,
                "queries": args.queries,
                "documents": DOCUMENTS,
                "fake_encoder": FAKE_ENCODER,
                "index": "hnsw, m=16 (pgvector's default), cosine ops",
                "ef_search": EF_SEARCH,
                "database": kind,
                "server": facts,
            },
            **result,
            "load_average_before": load_before,
            "machine_busy_cores_before_start": busy_before,
            "notes": [
                "build_s: CREATE INDEX CONCURRENTLY on an idle table, after VACUUM ANALYZE and a CHECKPOINT",
                "recall_at_10: mean overlap of the index's top 10 with an exact scan's (index scans off), "
                "per query; the same measure as the A/A noise floor's exact-vs-HNSW overlap",
                "cpu.other_processes_cores > 0.1 means something else used the CPU at the same time",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
