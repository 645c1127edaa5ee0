#!/usr/bin/env python
"""Benchmark: bulk ingest through the public API (POST /v1/collections/{c}/documents), trivial encoder.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

--docs documents (Vaswani title + abstract, repeated with a " [copy N]" suffix past the 11,429
of the corpus) are written in --batch-size document batches to a new collection, through the
real app served in this process on loopback (bench/_gateway.py), with the trivial hash encoder
(bench/_fake_encoder.py, a few microseconds per text), so the time is the gateway's: JSON
parsing and validation, the write-set check, embedding dispatch and the dual-write transaction.
Request bodies are serialised before the clock starts; --concurrency batches are in flight at
a time. --write-models 2 starts a migration first (no backfill worker runs), so every write
goes to both models' tables, as during dual_write. Each repeat uses a fresh database; the
median run is the figure.

    python bench/bulk_ingest.py --docs 20000 --batch-size 1000 --repeats 3   # the README's figure
    python bench/bulk_ingest.py --docs 2000 --repeats 1                       # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import asyncpg
from _backfill import COLLECTION, DOCUMENTS, FAKE_ENCODER, FROM_MODEL, TO_MODEL, documents
from _common import CpuMeter, busy_cores, emit, load_average, log, machine_info, setup_logging
from _db import Databases, on_server
from _fake_encoder import fake_loader
from _gateway import Gateway

from gateway.config import load_settings
from gateway.domain.identifiers import collection_schema, quote_ident

TARGET_DOCS_PER_S = 4000.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="documents to write")
    parser.add_argument("--batch-size", type=int, default=1000, help="documents per POST")
    parser.add_argument("--concurrency", type=int, default=1, help="POSTs in flight at a time")
    parser.add_argument("--write-models", type=int, choices=(1, 2), default=1, help="1: steady; 2: dual_write")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, each on a fresh database")
    parser.add_argument(
        "--without-index",
        action="store_true",
        help="diagnosis only: drop the collection's HNSW index before the writes, to show what the "
        "per-row index maintenance inside PostgreSQL costs (queries would then scan every row)",
    )
    parser.add_argument("--verbose", action="store_true", help="gateway INFO logs to stderr")
    args = parser.parse_args(argv)
    if min(args.docs, args.batch_size, args.concurrency, args.repeats) < 1:
        parser.error("--docs, --batch-size, --concurrency and --repeats must be positive")
    return args


def bodies(docs: list[tuple[str, str]], batch_size: int) -> list[bytes]:
    """The requests' JSON bodies, serialised ahead of the clock (the client's cost is not the gateway's)."""
    return [
        json.dumps({"documents": [{"id": i, "text": t} for i, t in docs[s : s + batch_size]]}).encode()
        for s in range(0, len(docs), batch_size)
    ]


async def post_all(gw: Gateway, payloads: list[bytes], concurrency: int) -> list[float]:
    """POST every body (at most `concurrency` at a time); per-request latencies in seconds."""
    url = f"{gw.base}/v1/collections/{COLLECTION}/documents"
    queue = list(reversed(payloads))
    latencies: list[float] = []

    async def lane() -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            async with gw.session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                text = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"POST answered {resp.status}: {text[:300]!r}")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies


async def drop_hnsw_indexes(dsn: str) -> None:
    """--without-index: drop the collection's HNSW indexes (a diagnosis, not a way to run)."""
    conn = await asyncpg.connect(dsn)
    try:
        schema = collection_schema(COLLECTION)
        names = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%USING hnsw%'", schema
        )
        for row in names:
            await conn.execute(f"DROP INDEX {quote_ident(schema)}.{quote_ident(row['indexname'])}")
    finally:
        await conn.close()


async def one_run(databases: Databases, payloads: list[bytes], docs: int, args, pg_pid, label: str) -> dict:
    db = await databases.create_or_exit("bench_ingest")
    await databases.checkpoint()
    settings = load_settings(None, backfill={"enabled": False}, server={"sync_poll_interval_s": 1.0})
    try:
        async with Gateway(settings, databases.dsn(db), loader=fake_loader) as gw:
            status, body = await gw.call("PUT", f"/v1/collections/{COLLECTION}", {"model": FROM_MODEL})
            if status not in (200, 201):
                raise RuntimeError(f"creating the collection: {status} {body}")
            if args.write_models == 2:
                await gw.admin("POST", COLLECTION, "migrations", {"to_model": TO_MODEL})
            if args.without_index:
                await drop_hnsw_indexes(databases.dsn(db))
            await gw.call("POST", f"/v1/collections/{COLLECTION}/query", {"text": "warm up", "k": 1})
            with CpuMeter(pg_pid) as meter:
                started = time.perf_counter()
                latencies = await post_all(gw, payloads, args.concurrency)
                seconds = time.perf_counter() - started
            status, described = await gw.call("GET", f"/v1/collections/{COLLECTION}")
            if described.get("documents") != docs:
                raise RuntimeError(f"collection holds {described.get('documents')} documents, expected {docs}")
    finally:
        await databases.drop(db)
    latencies.sort()
    result = {
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 1),
        "ms_per_document": round(seconds * 1000 / docs, 4),
        "batch_latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "max": round(latencies[-1] * 1000, 1),
        },
        "cpu": meter.summary(),
    }
    log(f"  {label}: {result['docs_per_s']} docs/s ({seconds:.2f} s, cpu {result['cpu']})")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    docs = documents(args.docs)
    payloads = bodies(docs, args.batch_size)
    load_before = load_average()
    busy_before = busy_cores(2.0)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")

    async def measure(databases: Databases, pg_pid: int | None) -> list[dict]:
        return [
            await one_run(databases, payloads, len(docs), args, pg_pid, f"run {r + 1}/{args.repeats}")
            for r in range(args.repeats)
        ]

    runs, facts, kind = on_server(measure)
    median = statistics.median(r["docs_per_s"] for r in runs)
    emit(
        {
            "benchmark": "bulk_ingest",
            "machine": machine_info(),
            "config": {
                "docs": len(docs),
                "batch_size": args.batch_size,
                "concurrency": args.concurrency,
                "write_models": [FROM_MODEL] if args.write_models == 1 else [FROM_MODEL, TO_MODEL],
                "repeats": args.repeats,
                "without_index": args.without_index,
                "documents": DOCUMENTS,
                "fake_encoder": FAKE_ENCODER,
                "database": kind,
                "server": facts,
            },
            "median_docs_per_s": median,
            "best_docs_per_s": max(r["docs_per_s"] for r in runs),
            "target_docs_per_s": TARGET_DOCS_PER_S,
            "target_met": median >= TARGET_DOCS_PER_S,
            "runs": runs,
            "load_average_before": load_before,
            "machine_busy_cores_before_start": busy_before,
            "notes": [
                "seconds: from the first POST to the last answer, in this process (client and gateway share "
                "it); bodies serialised beforehand; docs_per_s = documents / seconds",
                "cpu.other_processes_cores > 0.1 means something else used the CPU at the same time",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
