#!/usr/bin/env python
"""Benchmark: what the backfill's write costs next to COPY, piece by piece.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

The backfill engine's writes take 3-4x COPY's time (bench/backfill_engine.py, `against_floor`);
this says where that goes. In a fresh database with the gateway's schema, one collection holds
--docs documents (Vaswani title + abstract); each variant writes one vector per document into a
fresh table, --step rows per transaction, on one connection, after a CHECKPOINT:

  copy            COPY into a bare table (doc_id, embedding, source_version): the floor
  unnest          INSERT ... SELECT FROM unnest($ids, $vectors, $versions) into the bare table
  engine_no_fk    gateway.store.backfill.write_if_current into the model's table with its
                  foreign key to the documents dropped: + the join at the version embedded,
                  the KEY SHARE row lock, ON CONFLICT keeping a fresher dual-written row
  engine          write_if_current into the model's table as the gateway creates it: + the
                  foreign key (ON DELETE CASCADE), checked row by row

The variants run in turn, --repeats times over; the JSON has each one's median seconds and the
differences between neighbours (what each piece adds).

    python bench/backfill_write.py                      # 20,000 documents, steps of 256, 3 repeats
    python bench/backfill_write.py --docs 2000 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import time

import asyncpg
import numpy as np
from _backfill import DOCUMENTS, documents
from _common import emit, log, machine_info, setup_logging
from _db import Databases, on_server
from _fake_encoder import HashEncoder

from gateway.encoders.catalog import CATALOG
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store.schema import apply_schema
from gateway.store.vector_codec import Vector, register_vector

COLLECTION, MODEL = "bench", "all-MiniLM-L6-v2"
VARIANTS = ("copy", "unnest", "engine_no_fk", "engine")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="documents written by each variant")
    parser.add_argument("--step", type=int, default=256, help="rows per transaction (a backfill step)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all the variants")
    parser.add_argument("--verbose", action="store_true", help="debug logs to stderr")
    args = parser.parse_args(argv)
    if min(args.docs, args.step, args.repeats) < 1:
        parser.error("--docs, --step and --repeats must be positive")
    return args


async def setup(conn: asyncpg.Connection, docs: list[tuple[str, str]], dim: int) -> None:
    """The gateway's schema, a collection holding `docs` at version 1, its registry row stubbed."""
    await apply_schema(conn)
    await conn.execute(
        """INSERT INTO driftgate.models (key, name, revision, dim, fingerprint, probe_texts, probe_vectors)
           VALUES ($1, $1, 'bench', $2, 'bench', '{}', '[]')""",
        MODEL,
        dim,
    )
    async with conn.transaction():
        await collections_sql.create_collection(conn, COLLECTION, MODEL, dim, with_index=False)
    await conn.copy_records_to_table(
        "documents",
        schema_name=collections_sql.collection_schema(COLLECTION),
        records=[(i, t, 1) for i, t in docs],
        columns=["id", "content", "version"],
    )
    await conn.execute(f"VACUUM ANALYZE {collections_sql.documents_table(COLLECTION)}")


async def fresh_target(conn: asyncpg.Connection, variant: str, dim: int) -> str:
    """An empty table for `variant` to write into: a bare one, or the model's table as the gateway makes it."""
    table = collections_sql.model_table(COLLECTION, MODEL)
    await conn.execute(f"DROP TABLE IF EXISTS {table}, bare")
    await conn.execute("DELETE FROM driftgate.embedding_tables")
    if variant in ("copy", "unnest"):
        await conn.execute(
            f'CREATE TABLE bare (doc_id text COLLATE "C" PRIMARY KEY, embedding vector({dim}) NOT NULL, '
            "source_version bigint NOT NULL, embedded_at timestamptz NOT NULL DEFAULT now())"
        )
        return "bare"
    await collections_sql.create_model_table(conn, COLLECTION, MODEL, dim, with_index=False)
    if variant == "engine_no_fk":
        name = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'", table
        )
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return table


async def write(conn: asyncpg.Connection, variant: str, ids: list[str], vectors: np.ndarray) -> None:
    """One step: the variant's statement for these rows, in one transaction."""
    versions = [1] * len(ids)
    async with conn.transaction():
        if variant == "copy":
            await conn.copy_records_to_table(
                "bare",
                records=list(zip(ids, [Vector(v) for v in vectors], versions, strict=True)),
                columns=["doc_id", "embedding", "source_version"],
            )
        elif variant == "unnest":
            await conn.execute(
                """INSERT INTO bare (doc_id, embedding, source_version)
                   SELECT * FROM unnest($1::text[], $2::vector[], $3::bigint[])""",
                ids,
                [Vector(v) for v in vectors],
                versions,
            )
        else:
            written = await backfill_sql.write_if_current(conn, COLLECTION, MODEL, ids, vectors, versions)
            if written != len(ids):
                raise RuntimeError(f"{variant}: wrote {written} of {len(ids)} rows")


async def measure(databases: Databases, args: argparse.Namespace) -> dict:
    docs = documents(args.docs)
    dim = CATALOG[MODEL].dim
    vectors = HashEncoder(dim).encode([t for _, t in docs]).vectors
    ids = [i for i, _ in docs]
    db = await databases.create_or_exit("bench_write")
    conn = await asyncpg.connect(databases.dsn(db))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await register_vector(conn)
        await setup(conn, docs, dim)
        seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for rep in range(args.repeats):
            for variant in VARIANTS:
                await fresh_target(conn, variant, dim)
                await databases.checkpoint()
                started = time.perf_counter()
                for lo in range(0, len(ids), args.step):
                    await write(conn, variant, ids[lo : lo + args.step], vectors[lo : lo + args.step])
                seconds[variant].append(round(time.perf_counter() - started, 3))
                log(f"  round {rep + 1}/{args.repeats}: {variant} {seconds[variant][-1]} s")
    finally:
        await conn.close()
        await databases.drop(db)
    medians = {v: round(statistics.median(s), 3) for v, s in seconds.items()}
    return {
        "seconds": seconds,
        "median_s": medians,
        "adds_s": {
            "unnest_over_copy": round(medians["unnest"] - medians["copy"], 3),
            "join_lock_upsert": round(medians["engine_no_fk"] - medians["unnest"], 3),
            "foreign_key": round(medians["engine"] - medians["engine_no_fk"], 3),
        },
        "engine_over_copy": round(medians["engine"] / medians["copy"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    result, facts, kind = on_server(lambda databases, _pid: measure(databases, args))
    emit(
        {
            "benchmark": "backfill_write",
            "machine": machine_info(),
            "config": {
                "docs": args.docs,
                "step": args.step,
                "repeats": args.repeats,
                "model": MODEL,
                "documents": DOCUMENTS,
                "database": kind,
                "server": facts,
            },
            **result,
            "notes": [
                "one connection, one transaction per step, a CHECKPOINT before each variant; vectors from the "
                "benchmarks' hash encoder, made before the clock starts",
                "engine = gateway.store.backfill.write_if_current on the table gateway.store.collections makes",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
