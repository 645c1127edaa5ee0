"""Adoption speed: import rate and end to end (import + HNSW index) of a 20,000 x 384-d table.

What is measured, honestly:
- `import`: the chunked INSERT ... SELECT of every row into the collection's documents and its
  model table (the adoption row's `started_at` -> `imported_at`, database clock).
- `end_to_end`: wall clock from the POST /adopt request to adoption state `done`, i.e. import,
  the hand-over to the backfill, and the HNSW index built CONCURRENTLY, with the gateway running.
- The 20,000-row table is generated in SQL with random normalised vectors and synthetic texts,
  so it is adopted with `sample: 0` (the check would rightly refuse random vectors). The sample
  check is measured on its own, on a table of real Vaswani abstracts with their real vectors
  from the model (default 200 rows re-embedded), and added to give `end_to_end_with_sample_check`.

Usage: python bench/adopt.py [--rows 20000] [--sample 200] > bench/results/bench-adopt.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import asyncpg
from _common import CpuMeter, load_average, log, machine_info
from _db import Databases, PostgresServer, with_database
from _gateway import Gateway

from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.store.vector_codec import register_vector

MODEL = "paraphrase-MiniLM-L3-v2"  # 384-d


async def generate(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        # the correlated `WHERE i > 0` makes PostgreSQL draw a new vector for every row
        await conn.execute(
            """CREATE TABLE items (id bigint PRIMARY KEY, body text, lang text, embedding vector(384));
               INSERT INTO items
               SELECT i, 'synthetic document number ' || i, CASE WHEN i % 2 = 0 THEN 'en' ELSE 'fr' END,
                      l2_normalize(ARRAY(SELECT random() - 0.5 FROM generate_series(1, 384) WHERE i > 0)::vector)
               FROM generate_series(1, $1) AS i;
               ANALYZE items;""".replace("$1", str(int(rows)))
        )
    finally:
        await conn.close()


async def real_table(dsn: str, embed, rows: int) -> None:
    texts = [t for _, t in vaswani(limit=rows).corpus]
    vectors = await embed(texts)
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        await conn.execute("CREATE TABLE real_items (id bigint PRIMARY KEY, body text, embedding vector(384))")
        await conn.executemany(
            "INSERT INTO real_items VALUES ($1, $2, $3)",
            [(i, t, v) for i, (t, v) in enumerate(zip(texts, vectors, strict=False))],
        )
    finally:
        await conn.close()


async def wait_done(gw: Gateway, name: str) -> dict:
    while True:
        status = await gw.admin("GET", name, "status")
        if status["adoption"]["state"] == "done" and status["models"][MODEL]["index_ready"]:
            return status
        await asyncio.sleep(0.05)


async def wait_imported(gw: Gateway, name: str) -> None:
    while (await gw.admin("GET", name, "status"))["adoption"]["state"] == "importing":
        await asyncio.sleep(0.02)


async def run(rows: int, sample: int) -> dict:
    settings = load_settings(
        None,
        database={"pool_min": 2, "pool_max": 8},
        backfill={"poll_interval_s": 0.2},
        adoption={"poll_interval_s": 0.1},
    )
    with PostgresServer() as pg:
        async with Databases(pg.server_dsn) as databases:
            dsn = with_database(pg.server_dsn, await databases.create("adopt"))
            log(f"generating {rows} x 384-d rows in SQL ...")
            started = time.perf_counter()
            await generate(dsn, rows)
            log(f"generated in {time.perf_counter() - started:.1f} s")
            async with Gateway(settings, dsn) as gw:
                from gateway.api.keys import EMBEDDINGS

                embeddings = gw.app[EMBEDDINGS]

                async def embed(texts):
                    return (await embeddings.embed(MODEL, texts, "document", bulk=True)).vectors

                await real_table(dsn, embed, sample)
                body = {"id_column": "id", "text_column": "body", "vector_column": "embedding", "model": MODEL}
                log(f"sample check: {sample} real rows re-embedded and compared ...")
                t = time.perf_counter()
                checked = await gw.admin(
                    "POST", "real", "adopt", {**body, "table": "public.real_items", "sample": sample}
                )
                sample_s = time.perf_counter() - t
                await wait_done(gw, "real")

                log(f"adopting {rows} rows (sample 0) ...")
                load = load_average()
                t = time.perf_counter()
                with CpuMeter(pg.pid) as meter:
                    with CpuMeter(pg.pid) as import_meter:
                        await gw.admin(
                            "POST",
                            "items",
                            "adopt",
                            {**body, "table": "public.items", "metadata_columns": ["lang"], "sample": 0},
                        )
                        await wait_imported(gw, "items")
                    status = await wait_done(gw, "items")
                end_to_end_s = time.perf_counter() - t
            conn = await asyncpg.connect(dsn)
            try:
                row = await conn.fetchrow(
                    """SELECT rows_read, rows_imported, extract(epoch FROM imported_at - started_at) AS import_s,
                              extract(epoch FROM finished_at - imported_at) AS index_s
                       FROM driftgate.adoptions WHERE collection = 'items'"""
                )
            finally:
                await conn.close()
    import_s = float(row["import_s"])
    return {
        "benchmark": "adopt",
        "rows": rows,
        "dim": 384,
        "chunk_rows": settings.adoption.chunk_rows,
        "source": "generated in SQL: random normalised vectors, synthetic texts (adopted with sample 0)",
        "import_s": round(import_s, 3),
        "import_rows_per_s": round(row["rows_read"] / import_s),
        "embed_and_index_s": round(float(row["index_s"]), 3),
        "end_to_end_s": round(end_to_end_s, 3),
        "end_to_end_rows_per_s": round(rows / end_to_end_s),
        "end_to_end_includes": "request, chunked import, backfill hand-over, HNSW index CONCURRENTLY, state done",
        "cpu": {"end_to_end": meter.summary(), "import": import_meter.summary()},
        "document_count": status["document_count"],
        "coverage": status["models"][MODEL]["coverage"],
        "sample_check": {
            "rows": sample,
            "source": "real Vaswani abstracts with their real model vectors",
            "seconds": round(sample_s, 3),
            "cosine_min": checked["adoption"]["sample"]["cosine_min"],
        },
        "end_to_end_with_sample_check_rows_per_s": round(rows / (end_to_end_s + sample_s)),
        "targets": {"import_rows_per_s": 20000, "end_to_end_rows_per_s": 3000},
        "machine": {**machine_info(), "load_average_before": load, "postgres": pg.kind},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rows, args.sample)), indent=2))


if __name__ == "__main__":
    main()
