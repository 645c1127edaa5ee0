#!/usr/bin/env python
"""Benchmark: backfill throughput of the engine (trivial encoder) shared by several worker processes.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

The collection of backfill_engine.py (--docs documents, hash encoder for both models) migrates
with no in-app worker; --workers OS processes (multiprocessing, 'spawn') each run asyncio.run of
a pool + EmbeddingService(hash encoder) + BackfillWorker(worker_id="w<i>").run(stop, burst=True),
as `driftgate backfill-worker --burst` would. The processes are started, load everything and
wait at a barrier first; the clock runs from the migration POST until the phase is "ready".
Reports docs/s and the chunks each worker did. With --baseline (the default) every repeat also
times the same migration with ONE worker in the benchmark process (backfill_engine.py's run),
so the speedup of the processes comes from the same machine at the same time.

The database server is a throwaway embedded PostgreSQL + pgvector, or DATABASE_URL when set
(its role must be allowed to create databases).

    python bench/backfill_processes.py --chunk-size 512 --pipelines 4 --repeats 2   # the README's figure (c)
    python bench/backfill_processes.py --docs 300 --chunk-size 100 --pipelines 1 --repeats 1   # a quick check

(Formerly `python bench/backfill.py --only c`, which took the best chunk size and pipelines of
(a); --c-workers, --c-chunk-size and --c-pipelines are now --workers, --chunk-size and --pipelines.)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue as queue_module
import statistics
import time

import asyncpg
from _backfill import (
    COLLECTION,
    ENGINE_TARGET_DOCS_PER_S,
    FAKE_ENCODER,
    INDEX_BUILDS,
    TO_MODEL,
    add_common_args,
    check_complete,
    documents,
    install_index_timer,
    load_template,
    run_benchmark,
    run_facts,
    settings_for,
    timed_backfill,
    wait_phase_left,
)
from _common import CpuMeter, log, setup_logging
from _fake_encoder import fake_loader
from _gateway import Gateway

from gateway.domain.phases import Phase
from gateway.services.backfill import BackfillWorker
from gateway.services.embedding import EmbeddingService
from gateway.store.database import open_database


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the collection")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--chunk-size", type=int, default=512, help="backfill chunk size")
    parser.add_argument("--pipelines", type=int, default=4, help="pipelines per worker")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the median is reported")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time one worker in this process each repeat, for the speedup",
    )
    add_common_args(parser)
    args = parser.parse_args(argv)
    if min(args.docs, args.workers, args.chunk_size, args.repeats) < 1 or args.timeout <= 0:
        parser.error("--docs, --workers, --chunk-size, --repeats and --timeout must be positive")
    if not 1 <= args.pipelines <= 16:
        parser.error("--pipelines is 1 to 16 (the gateway's limit)")
    return args


# -- inside a worker process ------------------------------------------------------------------


def worker_process(dsn: str, index: int, args: argparse.Namespace, go, results) -> None:
    """Entry point of a spawned worker process (module level: 'spawn' imports it by name)."""
    setup_logging(args.verbose, prefix=f"w{index} ")
    try:
        results.put(asyncio.run(_worker_main(dsn, index, args, go, results)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put({"worker": f"w{index}", "error": repr(exc)})


async def _worker_main(dsn: str, index: int, args: argparse.Namespace, go, results) -> dict:
    install_index_timer()
    settings = settings_for(args.chunk_size, args.pipelines, False, args.poll_interval)
    config = settings.backfill
    pool = await open_database(dsn, settings.database, max_size=config.pipelines + 2)
    embeddings = EmbeddingService.from_settings(settings, loader=fake_loader)
    try:
        await embeddings.load(TO_MODEL)
        results.put({"ready": index})
        if not await asyncio.get_running_loop().run_in_executor(None, go.wait, args.timeout):
            return {"worker": f"w{index}", "error": "no go signal"}
        started = time.perf_counter()
        worker = BackfillWorker(
            pool,
            embeddings,
            f"w{index}",
            chunk_size=config.chunk_size,
            pipelines=config.pipelines,
            poll_interval_s=config.poll_interval_s,
            index_memory_mb=config.index_memory_mb,
        )
        await asyncio.wait_for(worker.run(asyncio.Event(), burst=True), args.timeout)
        counters = {k: v for k, v in vars(worker.counters).items() if k != "per_collection"}
        return {
            "worker": f"w{index}",
            "pid": os.getpid(),
            "run_s": round(time.perf_counter() - started, 3),
            "counters": counters,
            "index_build_s": round(INDEX_BUILDS[-1]["seconds"], 3) if INDEX_BUILDS else None,
        }
    finally:
        await embeddings.close()
        await pool.close()


# -- in the benchmark process -----------------------------------------------------------------


async def start_workers(ctx, dsn: str, args, go, results, procs: list) -> float:
    """Spawn the worker processes (into `procs`, so a failure still stops them) and wait until each
    has loaded everything; returns the seconds that took."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for i in range(args.workers):
        proc = ctx.Process(target=worker_process, name=f"bench-backfill-w{i}", args=(dsn, i, args, go, results))
        proc.start()
        procs.append(proc)
    ready = 0
    while ready < len(procs):
        item = await loop.run_in_executor(None, results.get, True, 120)
        if "ready" in item:
            ready += 1
        elif "error" in item:
            raise RuntimeError(f"worker failed before the start: {item}")
    return time.perf_counter() - started


async def stop_workers(procs, results, report_wait_s: float) -> dict[str, dict]:
    """Collect the workers' reports, then join them (terminating any that hangs)."""
    loop = asyncio.get_running_loop()
    reports: dict[str, dict] = {}
    while len(reports) < len(procs):
        try:
            item = await loop.run_in_executor(None, results.get, True, report_wait_s)
        except queue_module.Empty:
            break
        if "worker" in item:
            reports[item["worker"]] = item
    for proc in procs:
        await loop.run_in_executor(None, proc.join, 30)
        if proc.is_alive():
            log(f"worker process {proc.pid} did not stop; terminating it")
            proc.terminate()
            proc.join(10)
    return reports


async def measure_processes(databases, args, pg_pid, template: str, docs: int) -> dict:
    db = await databases.create_or_exit("bench_run", template=template)
    await databases.checkpoint()
    dsn = databases.dsn(db)
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs: list = []
    settings = settings_for(args.chunk_size, args.pipelines, False, args.poll_interval)
    try:
        async with Gateway(settings, dsn, loader=fake_loader) as gw:
            spawn_s = await start_workers(ctx, dsn, args, go, results, procs)
            log(f"  {len(procs)} worker processes ready in {spawn_s:.1f} s")
            watch = await asyncpg.connect(dsn)
            try:
                with CpuMeter(pg_pid, [p.pid for p in procs]) as meter:
                    started = time.perf_counter()
                    await gw.admin("POST", COLLECTION, "migrations", {"to_model": TO_MODEL})
                    go.set()
                    phase = await wait_phase_left(watch, Phase.DUAL_WRITE, started + args.timeout)
                    seconds = time.perf_counter() - started
                facts = await run_facts(watch, TO_MODEL)
            finally:
                await watch.close()
    finally:
        go.set()  # a worker still waiting finds no work and stops
        reports = await stop_workers(procs, results, max(5.0, args.timeout))
        await databases.drop(db)
    check_complete("processes", phase, facts, docs)
    index_s = next((r["index_build_s"] for r in reports.values() if r.get("index_build_s")), None)
    result = {
        "workers": len(procs),
        "start_method": "spawn",
        "chunk_size": args.chunk_size,
        "pipelines_per_worker": args.pipelines,
        "poll_interval_s": args.poll_interval,
        "documents": docs,
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 1),
        "index_build_s": index_s,
        "docs_per_s_excluding_index_build": round(docs / (seconds - index_s), 1) if index_s else None,
        "chunks_per_worker": {w: v["chunks"] for w, v in facts["per_worker"].items()},
        "db": facts,
        "worker_reports": reports,
        "processes_ready_s": round(spawn_s, 2),
        "cpu": meter.summary(),
    }
    log(
        f"  {len(procs)} processes: {result['docs_per_s']} docs/s ({seconds:.2f} s, index build {index_s} s, "
        f"chunks per worker {result['chunks_per_worker']})"
    )
    return result


async def measure(databases, args, pg_pid) -> dict:
    docs = documents(args.docs)
    log(f"loading {len(docs)} documents into a template database ...")
    template, load = await load_template(databases, "bench_tpl_c", docs)
    log(f"{args.workers} worker processes, chunk_size={args.chunk_size} pipelines={args.pipelines} ...")
    runs, baseline = [], []
    for rep in range(args.repeats):
        runs.append(await measure_processes(databases, args, pg_pid, template, len(docs)))
        if args.baseline:
            baseline.append(
                await timed_backfill(
                    databases,
                    template,
                    fake_loader,
                    args.chunk_size,
                    args.pipelines,
                    args,
                    pg_pid,
                    f"one in-process worker {rep + 1}/{args.repeats}",
                )
            )
    median = statistics.median(r["docs_per_s"] for r in runs)
    out = {
        "load": load,
        "workers": args.workers,
        "chunk_size": args.chunk_size,
        "pipelines_per_worker": args.pipelines,
        "median_docs_per_s": round(median, 1),
        "best_docs_per_s": max(r["docs_per_s"] for r in runs),
        "median_index_build_s": round(statistics.median(r["index_build_s"] or 0.0 for r in runs), 3),
        "chunks_per_worker_by_run": [r["chunks_per_worker"] for r in runs],
        "target_docs_per_s": ENGINE_TARGET_DOCS_PER_S,
        "target_met": median >= ENGINE_TARGET_DOCS_PER_S,
        "runs": runs,
    }
    if baseline:
        one = statistics.median(r["docs_per_s"] for r in baseline)
        out["one_worker_in_process"] = {"median_docs_per_s": round(one, 1), "runs": baseline}
        out["speedup_vs_one_worker"] = round(median / one, 3)
    return {"c_processes": out}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {
        "docs": args.docs,
        "workers": args.workers,
        "chunk_size": args.chunk_size,
        "pipelines": args.pipelines,
        "repeats": args.repeats,
        "baseline": args.baseline,
        "fake_encoder": FAKE_ENCODER,
    }
    return run_benchmark("backfill_processes", args, lambda dbs, pid: measure(dbs, args, pid), config, [])


if __name__ == "__main__":
    raise SystemExit(main())
