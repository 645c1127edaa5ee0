#!/usr/bin/env python
"""Benchmark: the gateway's own overhead on vector queries, and the cost of dual writes.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

(i) Throughput of POST /v1/collections/{c}/query with a raw vector through the gateway vs the
    same k-NN SQL (gateway/store/documents.py `search`) issued directly with asyncpg on a pool
    initialised like the gateway's (pgvector codec, SET hnsw.ef_search, hnsw.iterative_scan =
    strict_order); same vectors (real encoder, computed up front), same k, closed loop at the
    same --concurrency for --seconds each.
(ii) Write latency of PUT /v1/collections/{c}/documents/{id} (closed loop, --write-concurrency)
    in phase steady vs in phase dual_write, after POST .../migrations to --to-model with the
    in-app backfill disabled (so only the dual-write cost is measured).

Throwaway embedded PostgreSQL (or DATABASE_URL); the real gateway app on 127.0.0.1; the
client runs in the same process and event loop.

    python bench/gateway_overhead.py                  # the README's figure
    python bench/gateway_overhead.py --docs 50 --seconds 1 --warmup 0.5   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
import numpy as np
from _common import CpuMeter, closed_loop, emit, load_average, log, machine_info, pct, setup_logging
from _db import Databases, PostgresServer
from _gateway import Gateway
from pgvector import Vector
from pgvector.asyncpg import register_vector

from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.onnx import load_encoder
from gateway.store.collections import documents_table, model_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="paraphrase-MiniLM-L3-v2")
    p.add_argument("--to-model", default="all-MiniLM-L6-v2")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each point")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop workers for (i)")
    p.add_argument("--write-concurrency", type=int, default=4, help="closed-loop writers for (ii)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--collection", default="overheadbench")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


async def point(name: str, workers: int, args, op, pg_pid) -> dict:
    await closed_loop(workers, args.warmup, op)
    with CpuMeter(pg_pid) as meter:
        lat, errors, elapsed = await closed_loop(workers, args.seconds, op)
    res = {
        "name": name,
        "concurrency": workers,
        "ok": len(lat),
        "errors": errors,
        "per_s": round(len(lat) / elapsed, 1),
        **pct(lat),
        "cpu": meter.summary(),
    }
    log(f"{name}: {res['per_s']}/s p50 {res['p50_ms']} p99 {res['p99_ms']} errors {errors} cpu {res['cpu']}")
    return res


async def direct_pool(dsn: str, settings) -> asyncpg.Pool:
    """A pool initialised like the gateway's (pgvector codec, the same per-connection SETs)."""
    ef = settings.database.hnsw_ef_search

    async def init(conn):
        await register_vector(conn)
        await conn.execute(f"SET hnsw.ef_search = {int(ef)}; SET hnsw.iterative_scan = strict_order")

    return await asyncpg.create_pool(dsn, min_size=2, max_size=settings.database.pool_max, init=init)


async def measure_queries(gw: Gateway, dsn: str, settings, args, qvecs: np.ndarray, pg_pid) -> dict:
    """(i): vector queries through the gateway vs the same SQL straight to PostgreSQL."""
    url = f"{gw.base}/v1/collections/{args.collection}/query"
    qlists = [v.tolist() for v in qvecs]

    async def via_gateway(w, n):
        body = {"vector": qlists[(w * 7919 + n) % len(qlists)], "model": args.model, "k": args.k}
        async with gw.session.post(url, json=body) as resp:
            await resp.read()
            return True if resp.status == 200 else resp.status

    sql = f"""SELECT d.id, d.content, d.metadata, e.embedding <=> $1 AS distance
        FROM {model_table(args.collection, args.model)} e
        JOIN {documents_table(args.collection)} d ON d.id = e.doc_id
        ORDER BY e.embedding <=> $1
        LIMIT $2"""
    pool = await direct_pool(dsn, settings)
    try:

        async def direct(w, n):
            async with pool.acquire() as conn:
                rows = await conn.fetch(sql, Vector(qvecs[(w * 7919 + n) % len(qvecs)]), args.k)
            return True if len(rows) == args.k else f"short:{len(rows)}"

        g = await point("gateway_vector_query", args.concurrency, args, via_gateway, pg_pid)
        d = await point("direct_asyncpg_query", args.concurrency, args, direct, pg_pid)
    finally:
        await pool.close()
    return {
        "gateway": g,
        "direct": d,
        "pool_max_direct": settings.database.pool_max,
        "ratio_gateway_over_direct": round(g["per_s"] / d["per_s"], 3) if d["per_s"] else None,
    }


async def measure_writes(gw: Gateway, args, corpus: list[tuple[str, str]], pg_pid) -> dict:
    """(ii): PUT latency in phase steady, then in dual_write (migration started, backfill off)."""
    ids = [i for i, _ in corpus]
    text_of = dict(corpus)
    share = max(1, len(ids) // args.write_concurrency)  # each writer owns its own ids

    def writer(tag):
        async def op(w, n):
            doc_id = ids[w * share + n % share]
            body = {"text": f"{text_of[doc_id]} ({tag} {n})"}
            async with gw.session.put(
                f"{gw.base}/v1/collections/{args.collection}/documents/{doc_id}", json=body
            ) as resp:
                await resp.read()
                return True if resp.status == 200 else resp.status

        return op

    st = await gw.admin("GET", args.collection, "status")
    steady = await point(f"writes_{st['phase']}", args.write_concurrency, args, writer("s"), pg_pid)
    steady["phase"] = st["phase"]
    await gw.admin("POST", args.collection, "migrations", {"to_model": args.to_model})
    await asyncio.sleep(1.5)  # let the state change reach the app (LISTEN/poll)
    st = await gw.admin("GET", args.collection, "status")
    log(f"after POST migrations: phase {st['phase']}, write_models {st['write_models']}")
    dual = await point(f"writes_{st['phase']}", args.write_concurrency, args, writer("d"), pg_pid)
    st2 = await gw.admin("GET", args.collection, "status")
    dual["phase"] = st["phase"]
    dual["write_models"] = st["write_models"]
    dual["phase_after"] = st2["phase"]
    dual["to_model_rows_after"] = st2["models"].get(args.to_model, {}).get("rows")

    def ratio(key):
        return round(dual[key] / steady[key], 3) if steady[key] and dual[key] else None

    return {
        "steady": steady,
        "dual_write": dual,
        "p50_ratio_dual_over_steady": ratio("p50_ms"),
        "p99_ratio_dual_over_steady": ratio("p99_ms"),
        "throughput_ratio_dual_over_steady": ratio("per_s"),
    }


async def run(args, server: PostgresServer) -> dict:
    dataset = vaswani(limit=args.docs)
    encoder = load_encoder(CATALOG[args.model], default_cache_dir())
    qvecs = np.asarray(encoder.encode([t for _, t in dataset.queries]).vectors, dtype=np.float32)
    settings = load_settings(None, backfill={"enabled": False})
    async with Databases(server.server_dsn) as databases:
        dsn = databases.dsn(await databases.create_or_exit("bench"))
        async with Gateway(settings, dsn, connections=256, timeout_s=60) as gw:
            load = await gw.seed(args.collection, args.model, dataset.corpus)
            query = await measure_queries(gw, dsn, settings, args, qvecs, server.pid)
            writes = await measure_writes(gw, args, dataset.corpus, server.pid)
    return {"load_seconds": load["seconds"], "query": query, "writes": writes}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    load_before = load_average()
    with PostgresServer() as server:
        result = asyncio.run(run(args, server))
    ratio = result["query"]["ratio_gateway_over_direct"]
    emit(
        {
            "benchmark": "gateway_overhead",
            "machine": machine_info(),
            "config": {
                "model": args.model,
                "to_model": args.to_model,
                "docs": args.docs,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "write_concurrency": args.write_concurrency,
                "k": args.k,
                "database": server.kind,
                "backfill_enabled": False,
            },
            **result,
            "ratio_gateway_over_direct": ratio,
            "target_ratio_ge_0_6_met": None if ratio is None else ratio >= 0.6,
            "load_average_before": load_before,
            "notes": [
                "client and gateway share one process/event loop; the direct asyncpg client runs in the same "
                "process with no HTTP, JSON or gateway code, so the ratio includes the HTTP client's cost",
                "direct pool: max_size = the gateway's database.pool_max, same per-connection SETs",
                "writes: each writer updates its own ids (a PUT re-embeds the text with the write models)",
                "cpu.other_processes_cores > 0 means something else used the CPU during the point",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
