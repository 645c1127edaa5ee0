"""Shared parts of the backfill benchmarks (backfill_engine.py, backfill_real_model.py, backfill_processes.py).

Each timed run works on its own copy (CREATE DATABASE ... TEMPLATE) of a database loaded once
through the public API, starts a migration of collection COLLECTION from FROM_MODEL to TO_MODEL
with POST /admin/v1/collections/{c}/migrations, and is timed until the collection's phase leaves
"dual_write" (the worker moves it to "ready" after building the HNSW index). What the database
recorded about the run (chunks per worker, timestamps, rows, index) comes back with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable

import asyncpg
from _common import CpuMeter, busy_cores, emit, load_average, log, machine_info, setup_logging
from _db import Databases, on_server
from _fake_encoder import fake_loader
from _gateway import Gateway

import gateway.store.collections as collections_sql
from gateway.api.keys import EMBEDDINGS, POOL
from gateway.config import BackfillConfig, load_settings
from gateway.datasets import vaswani
from gateway.domain.identifiers import collection_schema, embedding_table, quote_ident
from gateway.domain.phases import Phase
from gateway.services.backfill import BackfillWorker

FROM_MODEL = "paraphrase-MiniLM-L3-v2"
TO_MODEL = "all-MiniLM-L6-v2"
COLLECTION = "bench"
ENGINE_TARGET_DOCS_PER_S = 5000.0

FAKE_ENCODER = (
    "bench/_fake_encoder.py HashEncoder: BLAKE2b-64 of the text picks 3 rows of a seeded "
    "4096 x dim table, mixed and L2-normalised (~6 us/text)"
)
DOCUMENTS = "gateway.datasets.vaswani() title + abstract, copies suffixed ' [copy N]', ids '<vaswani id>-<N>'"
NOTES = [
    "seconds: from just before POST /admin/v1/collections/{c}/migrations (which plans the chunks) until "
    "a 20 ms poll of driftgate.collections sees the phase leave dual_write (it moves to ready when the "
    "worker has built the HNSW index); docs_per_s = documents / seconds",
    "index_build_s: wall time of gateway.store.collections.build_index (CREATE INDEX CONCURRENTLY ... "
    "USING hnsw), timed by wrapping it in the benchmark; db_last_chunk_to_backfill_done_s is the same "
    "from the database's timestamps (now() of the last chunk's and of the final state change's "
    "transactions, so it also holds the last chunk's own work and the sweep query)",
    "every timed run works on its own copy (CREATE DATABASE ... TEMPLATE) of a database loaded once, "
    "after a CHECKPOINT; the embedded server runs with its stock settings (see config.server)",
    "cpu: cores busy during the timed section (1.0 = one core); own_process_cores = the benchmark "
    "process (gateway, in-process worker, encoder threads); postgres_cores = the embedded server's "
    "processes, including reaped ones such as parallel index-build workers (absent with DATABASE_URL); "
    "worker_processes_cores = separate worker processes; other_processes_cores > 0.1 means something "
    "else used the CPU at the same time and the numbers are noisy",
]


WORKER_CHOICES = {
    "bench": "one BackfillWorker in the benchmark process, on the app's pool and EmbeddingService, "
    "run(stop, burst=True); the app's own worker disabled",
    "app": "the app's own worker (settings backfill.enabled=true)",
}


def add_common_args(parser: argparse.ArgumentParser, *, worker_choice: bool = False) -> None:
    """Options every backfill benchmark takes (--worker: those with one worker in this process)."""
    if worker_choice:
        parser.add_argument(
            "--worker",
            choices=tuple(WORKER_CHOICES),
            default="bench",
            help="'bench' runs one BackfillWorker(...).run(stop, burst=True) on the app's pool and "
            "EmbeddingService, in this process, with the in-app worker disabled; "
            "'app' enables the app's own worker (settings backfill.enabled)",
        )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=BackfillConfig().poll_interval_s,
        help="the workers' poll_interval_s (the gateway's default); it matters to how fast an "
        "idle worker notices a new migration and how soon a worker retries a sweep",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for each timed run, seconds")
    parser.add_argument("--verbose", action="store_true", help="gateway INFO logs to stderr")


def index_options(args: argparse.Namespace) -> dict:
    """backfill.index_* settings given on the command line (--index-workers, --index-ef-construction)."""
    options = {
        "index_parallel_workers": getattr(args, "index_workers", None),
        "index_ef_construction": getattr(args, "index_ef_construction", None),
    }
    return {k: v for k, v in options.items() if v is not None}


def documents(count: int) -> list[tuple[str, str]]:
    """`count` (id, text) pairs: the Vaswani corpus, then copies of it with a suffix; ids unique."""
    base = vaswani().corpus
    out: list[tuple[str, str]] = []
    copy = 0
    while len(out) < count:
        for doc_id, text in base[: count - len(out)]:
            out.append((f"{doc_id}-{copy}", text if copy == 0 else f"{text} [copy {copy}]"))
        copy += 1
    return out


def settings_for(chunk_size: int, pipelines: int, app_worker: bool, poll_interval_s: float, **backfill):
    return load_settings(
        None,
        backfill={
            "enabled": app_worker,
            "chunk_size": chunk_size,
            "pipelines": pipelines,
            "poll_interval_s": poll_interval_s,
            **backfill,
        },
        database={"pool_min": 2, "pool_max": max(10, pipelines + 6)},
        server={"sync_poll_interval_s": 1.0},
    )


async def load_template(databases: Databases, prefix: str, docs: list[tuple[str, str]]) -> tuple[str, dict]:
    """A database holding collection COLLECTION (its from-model: the hash encoder) with `docs`.

    Setup, not a measurement: the from-model's HNSW index is dropped before the load and built
    after it (pgvector's per-row index inserts made the load of 100,000 documents take minutes;
    bench/bulk_ingest.py measures the write path as it is).
    """
    name = await databases.create_or_exit(prefix)
    settings = settings_for(BackfillConfig().chunk_size, 1, False, 1.0)
    async with Gateway(settings, databases.dsn(name), loader=fake_loader) as gw:
        status, body = await gw.call("PUT", f"/v1/collections/{COLLECTION}", {"model": FROM_MODEL})
        if status != 201:
            raise RuntimeError(f"creating {COLLECTION}: {status} {body}")
        conn = await asyncpg.connect(databases.dsn(name))
        try:
            await conn.execute(f"DROP INDEX {index_name(COLLECTION, FROM_MODEL)}")
            load = await gw.seed(COLLECTION, FROM_MODEL, docs)
            await collections_sql.build_index(conn, COLLECTION, FROM_MODEL)
        finally:
            await conn.close()
    return name, {**load, "encoder": "hash encoder", "index": "dropped before the load, built after it"}


def index_name(collection: str, model: str) -> str:
    """The schema-qualified name of a model table's HNSW index (as gateway.store.collections names it)."""
    return f"{quote_ident(collection_schema(collection))}.{quote_ident(embedding_table(model) + '_hnsw')}"


# -- instrumentation ----------------------------------------------------------------------------

INDEX_BUILDS: list[dict] = []  # one entry per build_index call in this process, newest last


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
            INDEX_BUILDS.append(
                {
                    "collection": collection,
                    "model": model_key,
                    "seconds": time.perf_counter() - started,
                    "ended": time.time(),
                }
            )

    setattr(timed, "_bench_timed", True)  # noqa: B010 (an attribute functools.wraps' type does not declare)
    collections_sql.build_index = timed


PROGRESS_EVERY_S = 10.0  # a long run says how far it got on stderr this often


async def wait_phase_left(conn: asyncpg.Connection, phase: str, deadline: float, interval: float = 1.0) -> str:
    """Wait until the phase is no longer `phase`; return the new one.

    Woken by the gateway's NOTIFY of a state change (so the clock stops at its commit), and
    otherwise looking once per `interval`: a poll every few milliseconds would take CPU from the
    index build it is timing, which the floor's build does not share with anything."""
    changed = asyncio.Event()

    def notified(*_args: object) -> None:
        changed.set()

    await conn.add_listener(collections_sql.STATE_CHANNEL, notified)
    started = next_report = time.perf_counter()
    try:
        while True:
            changed.clear()
            current = await conn.fetchval("SELECT phase FROM driftgate.collections WHERE name = $1", COLLECTION)
            if current != phase:
                return current
            now = time.perf_counter()
            if now > deadline:
                raise TimeoutError(f"phase still {phase!r} at the time limit")
            if now >= next_report + PROGRESS_EVERY_S:
                next_report = now
                done, total = await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE done), count(*) FROM driftgate.backfill_chunks WHERE collection = $1",
                    COLLECTION,
                )
                log(
                    f"    {now - started:.0f} s: {done}/{total} chunks done"
                    + (" (index build)" if done == total else "")
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), interval)
    finally:
        await conn.remove_listener(collections_sql.STATE_CHANNEL, notified)


async def run_facts(conn: asyncpg.Connection, model: str) -> dict:
    """What the database recorded: chunks per worker, chunk timestamps, audit timestamps, rows, index."""
    workers = await conn.fetch(
        """SELECT worker, count(*) AS chunks, sum(docs) AS docs, sum(written) AS written
           FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2
           GROUP BY worker ORDER BY worker""",
        COLLECTION,
        model,
    )
    chunks = await conn.fetchrow(
        """SELECT count(*) AS chunks, count(*) FILTER (WHERE done) AS done, max(round) AS rounds,
                  min(done_at) AS first_done, max(done_at) AS last_done
           FROM driftgate.backfill_chunks WHERE collection = $1 AND model_key = $2""",
        COLLECTION,
        model,
    )
    audit = {
        r["action"]: r["at"]
        for r in await conn.fetch(
            "SELECT action, max(at) AS at FROM driftgate.audit WHERE collection = $1 GROUP BY action", COLLECTION
        )
    }
    table = await conn.fetchrow(
        "SELECT table_name, index_ready FROM driftgate.embedding_tables WHERE collection = $1 AND model_key = $2",
        COLLECTION,
        model,
    )
    rows = (
        await conn.fetchval(f"SELECT count(*) FROM {collections_sql.model_table(COLLECTION, model)}") if table else None
    )
    errors = await conn.fetchval(
        "SELECT count(*) FROM driftgate.backfill_errors WHERE collection = $1 AND model_key = $2", COLLECTION, model
    )

    def span(a, b):
        return round((b - a).total_seconds(), 3) if a is not None and b is not None else None

    per_worker = {
        r["worker"]: {"chunks": int(r["chunks"]), "docs": int(r["docs"]), "written": int(r["written"])} for r in workers
    }
    return {
        "chunks": int(chunks["chunks"]),
        "chunks_done": int(chunks["done"]),
        "rounds": chunks["rounds"],
        "per_worker": per_worker,
        "documents": sum(w["docs"] for w in per_worker.values()),
        "rows_written": rows,
        "errors": int(errors),
        "index_ready": table["index_ready"] if table else None,
        # done_at and audit.at are now() = the start of their transaction
        "db_start_to_last_chunk_s": span(audit.get("start"), chunks["last_done"]),
        "db_last_chunk_to_backfill_done_s": span(chunks["last_done"], audit.get("backfill_done")),
    }


def check_complete(label: str, phase: str, facts: dict, docs: int | None = None) -> None:
    """Raise unless the backfill reached ready with every document written and the index built."""
    expected = facts["documents"] if docs is None else docs
    if phase != Phase.READY or facts["rows_written"] != expected or not facts["index_ready"]:
        raise RuntimeError(f"{label}: backfill did not complete: phase {phase}, facts {facts}")


# -- one worker in this process ---------------------------------------------------------------


async def timed_backfill(
    databases: Databases,
    template: str,
    loader,
    chunk_size: int,
    pipelines: int,
    args: argparse.Namespace,
    pg_pid: int | None,
    label: str,
    *,
    app_worker: bool = False,
) -> dict:
    """Copy the template, start the migration to TO_MODEL, time until the phase leaves dual_write.

    The worker is one BackfillWorker(...).run(stop, burst=True) on the app's pool and
    EmbeddingService, in this process; with `app_worker` the app's own worker does the work.
    """
    db = await databases.create_or_exit("bench_run", template=template)
    await databases.checkpoint()
    settings = settings_for(chunk_size, pipelines, app_worker, args.poll_interval, **index_options(args))
    install_index_timer()
    INDEX_BUILDS.clear()
    try:
        async with Gateway(settings, databases.dsn(db), loader=loader) as gw:
            embeddings = gw.app[EMBEDDINGS]
            await embeddings.load(TO_MODEL)  # a real model's session loads here, outside the clock
            watch = await asyncpg.connect(databases.dsn(db))
            stop = asyncio.Event()
            worker = task = None
            try:
                with CpuMeter(pg_pid) as meter:
                    started = time.perf_counter()
                    deadline = started + args.timeout
                    await gw.admin("POST", COLLECTION, "migrations", {"to_model": TO_MODEL})
                    posted = time.perf_counter()
                    if not app_worker:
                        worker = BackfillWorker(
                            gw.app[POOL],
                            embeddings,
                            "bench-w0",
                            chunk_size=chunk_size,
                            pipelines=pipelines,
                            poll_interval_s=args.poll_interval,
                            index_memory_mb=settings.backfill.index_memory_mb,
                            index_parallel_workers=settings.backfill.index_parallel_workers,
                            index_ef_construction=settings.backfill.index_ef_construction,
                        )
                        task = asyncio.create_task(worker.run(stop, burst=True))
                    phase = await wait_phase_left(watch, Phase.DUAL_WRITE, deadline)
                    seconds = time.perf_counter() - started
                if task is not None:
                    await asyncio.wait_for(task, timeout=max(1.0, deadline - time.perf_counter()))
                facts = await run_facts(watch, TO_MODEL)
            finally:
                stop.set()
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await watch.close()
    finally:
        await databases.drop(db)
    check_complete(label, phase, facts)
    docs = facts["documents"]
    index_s = INDEX_BUILDS[-1]["seconds"] if INDEX_BUILDS else None
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
    log(
        f"  {label}: chunk_size={chunk_size} pipelines={pipelines}: {result['docs_per_s']} docs/s "
        f"({seconds:.2f} s, index build {result['index_build_s']} s, cpu {result['cpu']})"
    )
    return result


# -- main -------------------------------------------------------------------------------------

Body = Callable[[Databases, "int | None"], Awaitable[dict]]


def run_benchmark(name: str, args: argparse.Namespace, body: Body, config: dict, notes: list[str]) -> int:
    """Start the database server, run `body(databases, postmaster pid)`, print the JSON.

    Every database the body creates is dropped at the end, whatever happens.
    """
    setup_logging(args.verbose)
    load_before = load_average()
    busy_before = busy_cores(2.0)
    log(f"machine busy before the start: {busy_before} cores (load average {load_before})")

    result, facts, kind = on_server(body)
    emit(
        {
            "benchmark": name,
            "machine": machine_info(),
            "config": {
                **config,
                "poll_interval_s": args.poll_interval,
                "from_model": FROM_MODEL,
                "to_model": TO_MODEL,
                "documents": DOCUMENTS,
                "database": kind,
                "server": facts,
            },
            **result,
            "load_average_before": load_before,
            "machine_busy_cores_before_start": busy_before,
            "notes": NOTES + notes,
        }
    )
    return 0
