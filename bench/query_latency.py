#!/usr/bin/env python
"""Benchmark: query latency and throughput of the real gateway, micro-batching on vs off.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

What it does:
  1. starts a throwaway embedded PostgreSQL + pgvector (or uses DATABASE_URL when set) and
     creates a fresh database in it, dropped again at the end;
  2. starts the real gateway app in this process on 127.0.0.1 (bench/_gateway.py);
  3. creates a collection with --model and loads --docs Vaswani abstracts through
     POST /v1/collections/{c}/documents (gateway.loadtest.runner.seed_collection);
  4. for each micro-batching setting (a separate app on the same database: the collection
     persists) and each concurrency, runs closed-loop workers (each sends its next query as
     soon as the previous answer arrived) that POST /v1/collections/{c}/query with a text from
     the Vaswani queries (cycled), first for --warmup seconds (not recorded), then for
     --seconds (recorded).

The client is an aiohttp.ClientSession in the same process and on the same event loop as
the server, so client, server (and PostgreSQL) share this machine's cores. Only loopback
is targeted, and every point stops by itself after its duration.

    python bench/query_latency.py --seconds 8          # the README's figure
    python bench/query_latency.py --docs 50 --seconds 1 --warmup 0.5   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid

import aiohttp
import asyncpg
from _common import CpuMeter, closed_loop, emit, load_average, log, machine_info, pct, setup_logging
from _db import Databases, PostgresServer
from _gateway import Gateway

from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.encoders.catalog import CATALOG


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default="paraphrase-MiniLM-L3-v2", help="catalog key of the collection's model")
    parser.add_argument("--docs", type=int, default=2000, help="Vaswani documents to load")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration of each point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each point")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated closed-loop worker counts")
    parser.add_argument(
        "--batching", default="off,on", help="comma-separated micro-batching settings to run, in this order (on/off)"
    )
    parser.add_argument(
        "--window-ms",
        type=float,
        default=None,
        help="models.batch_window_ms when batching is on (default: the gateway's default)",
    )
    parser.add_argument("--k", type=int, default=10, help="hits per query")
    parser.add_argument("--collection", default="bench", help="collection name")
    parser.add_argument("--pool-max", type=int, default=None, help="database.pool_max (default: the gateway's default)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    parser.add_argument("--verbose", action="store_true", help="gateway INFO logs to stderr")
    args = parser.parse_args(argv)
    if args.model not in CATALOG:
        parser.error(f"unknown model {args.model!r}; known: {', '.join(CATALOG)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    modes = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}
    try:
        args.batching = [modes[b.strip().lower()] for b in args.batching.split(",") if b.strip()]
    except KeyError as exc:
        parser.error(f"--batching takes on/off, got {exc}")
    if not args.concurrency or min(args.concurrency) < 1 or not args.batching:
        parser.error("--concurrency needs positive integers and --batching at least one setting")
    if args.docs < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--docs and --seconds must be positive, --warmup >= 0")
    return args


async def measure_point(gateway: Gateway, args, texts, concurrency: int, batching: bool, pg_pid) -> dict:
    """One closed-loop point: `concurrency` workers on their own session, warm-up, then measured."""
    url = f"{gateway.base}/v1/collections/{args.collection}/query"
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=args.timeout)) as session:

        async def query(_worker: int, _n: int) -> bool | str:
            async with session.post(url, json={"text": texts[next(counter) % len(texts)], "k": args.k}) as resp:
                body = await resp.read()  # read, not parsed: the client's cost stays small
                return True if resp.status == 200 else f"HTTP {resp.status}: {body[:200]!r}"

        async with session.post(url, json={"text": texts[0], "k": args.k}) as resp:
            sample = await resp.json(content_type=None)
            if resp.status != 200 or len(sample.get("hits", [])) != args.k:
                raise RuntimeError(f"sanity query answered {resp.status}: {str(sample)[:300]}")
        if args.warmup > 0:
            await closed_loop(concurrency, args.warmup, query)
        texts_before, batches_before = gateway.encode_stats(args.model)
        with CpuMeter(pg_pid) as meter:
            latencies, errors, elapsed = await closed_loop(concurrency, args.seconds, query)
        texts_after, batches_after = gateway.encode_stats(args.model)
    inferences = batches_after - batches_before
    point = {
        "micro_batching": batching,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": len(latencies) + sum(errors.values()),
        "qps": round(len(latencies) / elapsed, 2),
        **pct(latencies),
        "errors": sum(errors.values()),
        # texts per onnxruntime call, from the gateway's batch-size histogram: >1 means batching happened
        "texts_per_inference": round((texts_after - texts_before) / inferences, 2) if inferences else None,
        "inferences": int(inferences),
        "cpu": meter.summary(),
    }
    if errors:
        point["error_samples"] = list(errors)[:5]
    log(
        f"  micro_batching={batching} concurrency={concurrency}: {point['qps']} qps, "
        f"p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, errors {point['errors']}, "
        f"texts/inference {point['texts_per_inference']}, cpu {point['cpu']}"
    )
    return point


def settings_for(args: argparse.Namespace, batching: bool):
    models = {"micro_batching": batching}
    if args.window_ms is not None:
        models["batch_window_ms"] = args.window_ms
    database = {"pool_max": args.pool_max, "pool_min": min(2, args.pool_max)} if args.pool_max else {}
    return load_settings(None, models=models, **({"database": database} if database else {}))


async def run(args: argparse.Namespace, server: PostgresServer) -> dict:
    async with Databases(server.server_dsn) as databases:
        try:
            dsn = databases.dsn(await databases.create("bench"))
        except asyncpg.InsufficientPrivilegeError:
            # a DATABASE_URL whose role may not create databases: use its database, with a
            # collection name of our own (left behind: the gateway has no API to drop one)
            dsn = server.server_dsn
            args.collection = f"{args.collection}_{uuid.uuid4().hex[:8]}"
            log(f"cannot create a database; using the DATABASE_URL database, collection {args.collection}")
        dataset = vaswani(limit=args.docs)
        texts = [text for _, text in dataset.queries]
        points: list[dict] = []
        load: dict | None = None
        settings_used = {}
        for batching in args.batching:
            settings = settings_for(args, batching)
            settings_used[str(batching).lower()] = {
                "micro_batching": settings.models.micro_batching,
                "batch_window_ms": settings.models.batch_window_ms,
                "intra_op_threads": settings.models.intra_op_threads,
                "pool_min": settings.database.pool_min,
                "pool_max": settings.database.pool_max,
                "hnsw_ef_search": settings.database.hnsw_ef_search,
            }
            log(f"starting gateway with micro_batching={batching} (window {settings.models.batch_window_ms} ms)")
            started = time.perf_counter()
            async with Gateway(settings, dsn, timeout_s=600) as gateway:
                if load is None:  # the first app loads; the next ones find the collection
                    load = {
                        **await gateway.seed(args.collection, args.model, dataset.corpus),
                        "micro_batching": batching,
                    }
                log(f"gateway up in {time.perf_counter() - started:.1f} s at {gateway.base}")
                for concurrency in args.concurrency:
                    points.append(await measure_point(gateway, args, texts, concurrency, batching, server.pid))
    return {"load": load, "points": points, "settings": settings_used}


def speedups(points: list[dict]) -> dict[str, float | None]:
    runs: dict[tuple[bool, int], list[float]] = {}
    for p in points:  # a setting listed twice in --batching is averaged
        runs.setdefault((p["micro_batching"], p["concurrency"]), []).append(p["qps"])
    by = {key: sum(qps) / len(qps) for key, qps in runs.items()}
    out: dict[str, float | None] = {}
    for concurrency in sorted({c for _, c in by}):
        on, off = by.get((True, concurrency)), by.get((False, concurrency))
        out[str(concurrency)] = round(on / off, 3) if on and off else None
    return out


NOTES = [
    "client (aiohttp.ClientSession) and server (aiohttp AppRunner) run in the same process on the "
    "same event loop, and share this machine's cores with each other and with PostgreSQL; the "
    "client's own CPU use lowers the server's throughput, so absolute qps is a lower bound",
    "closed-loop workers: each sends its next query when the previous answer arrived; qps = "
    "successful answers / measured seconds; p50/p90/p99 over successful answers, client-side, "
    "including the client's own event-loop delays; response bodies are read but not parsed",
    "each micro-batching setting is a separate app (new pool, new thread pool, same ONNX session: "
    "encoders are cached per process) on the same database and collection",
    "texts_per_inference: mean texts per onnxruntime call during the point (from the gateway's "
    "driftgate_encode_batch_size histogram); 1.0 means no batching happened",
    "cpu: cores busy during the measured seconds; own_process_cores = client + gateway, "
    "postgres_cores = the embedded server's processes (absent with DATABASE_URL), "
    "other_processes_cores > 0 means something else shared the CPU and the numbers are noisy",
    "speedup_at_16 = qps(micro_batching on, 16) / qps(off, 16)",
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    load_before = load_average()
    with PostgresServer() as server:
        result = asyncio.run(run(args, server))
    by_concurrency = speedups(result["points"])
    emit(
        {
            "benchmark": "query_latency",
            "machine": machine_info(),
            "config": {
                "model": args.model,
                "collection": args.collection,
                "k": args.k,
                "seconds_per_point": args.seconds,
                "warmup_seconds_per_point": args.warmup,
                "concurrency": args.concurrency,
                "batching_order": args.batching,
                "window_ms": args.window_ms,
                "database": server.kind,
                "queries": "gateway/data/vaswani/queries.jsonl (93 texts, cycled)",
                "gateway_settings": result["settings"],
            },
            "load": result["load"],
            "results": result["points"],
            "speedup_at_16": by_concurrency.get("16"),
            "speedup_by_concurrency": by_concurrency,
            "load_average_before": load_before,
            "notes": NOTES,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
