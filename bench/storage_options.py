#!/usr/bin/env python
"""Benchmark: `vector` (float32) against `halfvec` (float16) storage of one model's table.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

The same --docs vectors go into two tables, `vector(dim)` and `halfvec(dim)`, bulk-loaded with
COPY through the gateway's codecs (gateway/store/vector_codec.py), and get the same HNSW index
(m = 16, --ef-construction, cosine ops of each type). For each table: its size, the index's size
and build time, recall@10 of the index against the exact answer, recall@10 of an exact scan of
the table itself (what float16 alone loses, without HNSW), and the index query latency. The
exact answer is always a sequential scan of the float32 table: the truth both are measured against.
The figures of halfvec are also given as ratios to vector's, measured in the same run.

Vectors (--vectors):
  real  (default) the Vaswani abstracts (11,429) and queries embedded with --model (the real ONNX
        model, cached under ~/.cache/driftgate/bench-vectors), and beyond the 11,429 synthetic
        documents with their structure: each a seeded mix 0.8 x one abstract + 0.2 x another,
        plus gaussian noise of norm ~0.3, L2-normalised (so 100,000 are not 9 copies of each);
  hash  the trivial hash encoder of bench/_fake_encoder.py over the same texts (no model: fast).

    python bench/storage_options.py                          # the full run: 100,000 documents
    python bench/storage_options.py --docs 3000 --queries 20 --vectors hash   # a quick check
"""

from __future__ import annotations

import argparse
import time

import asyncpg
import numpy as np
from _backfill import documents
from _common import emit, load_average, log, machine_info, pct
from _db import Databases, on_server
from _fake_encoder import HashEncoder

from gateway.config import DatabaseConfig
from gateway.datasets import vaswani
from gateway.domain.storage import Storage
from gateway.store.vector_codec import register_vector

EF_SEARCH = DatabaseConfig().hnsw_ef_search
SEED = 21
K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000, help="vectors in each table")
    parser.add_argument("--queries", type=int, default=200, help="query vectors for recall@10 and latency")
    parser.add_argument("--vectors", choices=["real", "hash"], default="real", help="where the vectors come from")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the model of --vectors real")
    parser.add_argument("--ef-construction", type=int, default=64, help="HNSW ef_construction (pgvector's default)")
    parser.add_argument("--memory-mb", type=int, default=1024, help="maintenance_work_mem of the index builds")
    args = parser.parse_args(argv)
    if min(args.docs, args.queries, args.ef_construction, args.memory_mb) < 1:
        parser.error("--docs, --queries, --ef-construction and --memory-mb must be positive")
    return args


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def grow(base: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` vectors: `base` first, then seeded mixes of two base rows plus noise (see the docstring)."""
    if count <= len(base):
        return base[:count]
    extra = count - len(base)
    first, second = rng.integers(0, len(base), extra), rng.integers(0, len(base), extra)
    noise = rng.standard_normal((extra, base.shape[1])).astype(np.float32) * (0.3 / np.sqrt(base.shape[1]))
    return np.concatenate([base, unit(0.8 * base[first] + 0.2 * base[second] + noise)])


def queries_of(base: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` query vectors: `base` (the dataset's queries), then noisy copies of them."""
    if count <= len(base):
        return base[:count]
    picks = base[rng.integers(0, len(base), count - len(base))]
    noise = rng.standard_normal(picks.shape).astype(np.float32) * (0.2 / np.sqrt(base.shape[1]))
    return np.concatenate([base, unit(picks + noise)])


def make_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(SEED)
    data = vaswani()
    if args.vectors == "hash":
        encoder = HashEncoder(384)
        corpus = encoder.encode([t for _, t in documents(min(args.docs, len(data.corpus)))]).vectors
        queries = encoder.encode([q for _, q in data.queries]).vectors
        source = "the hash encoder of bench/_fake_encoder.py over the Vaswani texts"
    else:
        from _vectors import dataset_vectors

        corpus, queries = dataset_vectors(data, "vaswani", args.model)
        source = f"{args.model} vectors of the Vaswani abstracts and queries"
    if args.docs > len(corpus):
        source += f", grown to {args.docs} by seeded mixes of two documents plus noise"
    return grow(unit(corpus), args.docs, rng), queries_of(unit(queries), args.queries, rng), source


async def top_k(conn: asyncpg.Connection, table: str, query: np.ndarray, *, exact: bool) -> tuple[list[int], float]:
    """The ids of the K nearest rows, and the seconds the statement took."""
    async with conn.transaction():
        if exact:
            await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        started = time.perf_counter()
        # the parameter takes the column's type, as in the gateway's search (store/documents.py)
        rows = await conn.fetch(f"SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT {K}", query)
        return [r["id"] for r in rows], time.perf_counter() - started


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return round(float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])), 4)


async def load(conn: asyncpg.Connection, storage: Storage, vectors: np.ndarray) -> dict:
    table = f"t_{storage.value}"
    await conn.execute(
        f"CREATE TABLE {table} (id integer PRIMARY KEY, embedding {storage.column_type(vectors.shape[1])})"
    )
    started = time.perf_counter()
    await conn.copy_records_to_table(table, records=((i, v) for i, v in enumerate(vectors)))
    copy_s = time.perf_counter() - started
    await conn.execute(f"VACUUM ANALYZE {table}")
    return {
        "copy_s": round(copy_s, 2),
        "table_mb": round(await conn.fetchval(f"SELECT pg_table_size('{table}')") / 2**20, 2),
    }


async def index(conn: asyncpg.Connection, storage: Storage, args: argparse.Namespace) -> dict:
    table = f"t_{storage.value}"
    await conn.execute(f"SET maintenance_work_mem = '{int(args.memory_mb)}MB'")
    started = time.perf_counter()
    await conn.execute(
        f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding {storage.cosine_ops}) "
        f"WITH (m = 16, ef_construction = {int(args.ef_construction)})",
        timeout=6 * 3600,
    )
    build_s = time.perf_counter() - started
    size = await conn.fetchval(f"SELECT pg_relation_size('{table}_hnsw')")
    return {"index_build_s": round(build_s, 2), "index_mb": round(size / 2**20, 2)}


async def measure(conn: asyncpg.Connection, vectors: np.ndarray, queries: np.ndarray, args) -> dict:
    await conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")  # the gateway's default (database.hnsw_ef_search)
    results: dict[str, dict] = {}
    for storage in Storage:
        log(f"{storage.value}: loading {len(vectors)} vectors with COPY ...")
        results[storage.value] = await load(conn, storage, vectors)
    log("exact answers: sequential scans of the float32 table ...")
    truth = [(await top_k(conn, "t_vector", q, exact=True))[0] for q in queries]
    for storage in Storage:
        table = f"t_{storage.value}"
        scanned = [(await top_k(conn, table, q, exact=True))[0] for q in queries]
        log(f"{storage.value}: building the HNSW index ...")
        results[storage.value].update(await index(conn, storage, args))
        for q in queries[: min(20, len(queries))]:  # warm the index's pages before timing
            await top_k(conn, table, q, exact=False)
        answers = [await top_k(conn, table, q, exact=False) for q in queries]
        results[storage.value].update(
            recall_at_10=recall([ids for ids, _ in answers], truth),
            exact_scan_recall_at_10=recall(scanned, truth),
            query=pct([seconds * 1000 for _, seconds in answers]),
        )
        log(f"  {storage.value}: {results[storage.value]}")
    vector, half = results["vector"], results["halfvec"]
    ratios = {
        key: round(half[key] / vector[key], 3) if vector[key] else None
        for key in ("table_mb", "index_mb", "index_build_s", "recall_at_10")
    }
    ratios["query_p50"] = round(half["query"]["p50_ms"] / vector["query"]["p50_ms"], 3)
    return {"storage": results, "halfvec_over_vector": ratios}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = load_average()
    vectors, queries, source = make_vectors(args)
    log(f"{len(vectors)} documents, {len(queries)} queries: {source}")

    async def on_database(databases: Databases, _pid: int | None) -> dict:
        db = await databases.create_or_exit("bench_storage")
        conn = await asyncpg.connect(databases.dsn(db))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await register_vector(conn)
            return await measure(conn, vectors, queries, args)
        finally:
            await conn.close()

    result, facts, kind = on_server(on_database)
    emit(
        {
            "benchmark": "storage_options",
            "machine": machine_info(),
            "config": {
                "docs": len(vectors),
                "dim": int(vectors.shape[1]),
                "queries": len(queries),
                "vectors": source,
                "index": f"hnsw, m=16, ef_construction={args.ef_construction}, cosine ops of each type",
                "ef_search": EF_SEARCH,
                "maintenance_work_mem_mb": args.memory_mb,
                "database": kind,
                "server": facts,
            },
            **result,
            "load_average_before": load_before,
            "notes": [
                "truth: the top 10 of a sequential scan of the float32 table (index scans off)",
                "recall_at_10: mean overlap of the HNSW index's top 10 with the truth, per query",
                "exact_scan_recall_at_10: the same for a sequential scan of the table itself (float16 "
                "rounding alone; 1.0 for vector by construction)",
                "table_mb: pg_table_size (heap + TOAST); index_mb: pg_relation_size of the HNSW index",
                "query: index query latency over one connection, after 20 warm-up queries",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
