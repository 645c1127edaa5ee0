"""Where an exact scan is as cheap as the HNSW index: the `database.exact_scan_max_rows` threshold.

A query that can match at most that many documents skips the index and compares every matching
row (services/collections.py), which is exact and never misses an unreachable node. This times
both plans on one collection as it grows (unfiltered k=10 queries), and filtered queries on the
largest one for several filter selectivities, at the SQL level (store/documents.search through
the app's pool), plus the bounded count that decides between them. Vectors come from the
benchmarks' hash encoder (bench/_fake_encoder.py), 384 dimensions like the small catalog models.

    python bench/exact_scan.py                       # up to 20,000 documents
    python bench/exact_scan.py --sizes 1000,5000     # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np
from _common import emit, log, machine_info
from _db import Databases, PostgresServer
from _fake_encoder import fake_loader
from _gateway import Gateway

from gateway.api.keys import POOL
from gateway.config import load_settings
from gateway.domain.filters import parse_filter
from gateway.store import documents as documents_sql

MODEL = "paraphrase-MiniLM-L3-v2"  # 384 dimensions; its vectors here come from the hash encoder
COLLECTION = "scan"
QUERIES = 60


async def timed_search(pool, vectors: np.ndarray, k: int, flt, exact: bool) -> dict:
    times, found = [], []
    async with pool.acquire() as conn:
        for vector in vectors:
            started = time.perf_counter()
            hits = await documents_sql.search(conn, COLLECTION, MODEL, vector, k, flt, exact=exact)
            times.append((time.perf_counter() - started) * 1000)
            found.append([h.id for h in hits])
    return {"p50_ms": round(statistics.median(times), 2), "ids": found}


async def timed_count(pool, flt, bound: int) -> float:
    async with pool.acquire() as conn:
        started = time.perf_counter()
        for _ in range(10):
            await documents_sql.count_matching(conn, COLLECTION, flt, limit=bound + 1)
        return round((time.perf_counter() - started) * 100, 2)  # ms per count


def recall(index_ids: list[list[str]], exact_ids: list[list[str]]) -> float:
    return round(
        statistics.fmean(len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(index_ids, exact_ids, strict=True)), 4
    )


async def point(pool, vectors: np.ndarray, k: int, flt, bound: int) -> dict:
    exact = await timed_search(pool, vectors, k, flt, True)
    index = await timed_search(pool, vectors, k, flt, False)
    return {
        "exact_p50_ms": exact["p50_ms"],
        "index_p50_ms": index["p50_ms"],
        "index_recall_at_k": recall(index["ids"], exact["ids"]),
        "bounded_count_ms": await timed_count(pool, flt, bound),
    }


async def run(sizes: list[int], bound: int) -> dict:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((QUERIES, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    settings = load_settings(None, database={"pool_min": 1, "pool_max": 4}, backfill={"enabled": False})
    out: dict = {"unfiltered": [], "filtered": []}
    with PostgresServer() as server:
        async with Databases(server.server_dsn) as databases:
            dsn = databases.dsn(await databases.create_or_exit("scan"))
            async with Gateway(settings, dsn, loader=fake_loader) as gateway:
                pool = gateway.app[POOL]
                await gateway.call("PUT", f"/v1/collections/{COLLECTION}", {"model": MODEL})
                loaded = 0
                for size in sorted(sizes):
                    corpus = [(f"d{i:06d}", f"document {i}") for i in range(loaded, size)]
                    for start in range(0, len(corpus), 500):
                        batch = [
                            {"id": i, "text": t, "metadata": {"g": int(i[1:])}} for i, t in corpus[start : start + 500]
                        ]
                        status, _ = await gateway.call(
                            "POST", f"/v1/collections/{COLLECTION}/documents", {"documents": batch}
                        )
                        assert status == 200, status
                    loaded = size
                    row = {"documents": size, **await point(pool, vectors, 10, None, bound)}
                    log(f"unfiltered {row}")
                    out["unfiltered"].append(row)
                for matching in (100, 500, 2000, 5000):
                    if matching >= loaded:
                        continue
                    flt = parse_filter({"g": {"$lt": matching}})
                    row = {"documents": loaded, "matching": matching, **await point(pool, vectors, 10, flt, bound)}
                    log(f"filtered {row}")
                    out["filtered"].append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,1000,2000,5000,10000,20000", help="collection sizes, ascending")
    parser.add_argument("--bound", type=int, default=2000, help="exact_scan_max_rows for the bounded count")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    emit(
        {
            "benchmark": "exact_scan_threshold",
            "k": 10,
            "queries_per_point": QUERIES,
            "results": asyncio.run(run(sizes, args.bound)),
            "machine": machine_info(),
        }
    )


if __name__ == "__main__":
    main()
