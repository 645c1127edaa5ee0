"""A query whose k reaches the number of matching documents returns every one of them.

An HNSW graph of many short, similar (here: repeated) texts leaves nodes unreachable: the index
alone answers an unfiltered k=1000 query on these 600 documents with about 540 of them. Two gateways share
one database here: one with the default `exact_scan_max_rows` (a small collection is scanned
exactly), one with 0 (the index is used, and a short answer is run again exactly).
"""

from __future__ import annotations

import asyncpg
import pytest

from gateway.client import Client
from gateway.store.collections import model_table
from tests.helpers import L3
from tests.live import ServerThread, module_database

DOCUMENTS = 600


@pytest.fixture(scope="module")
def gateways(server_dsn):
    dsn = module_database(server_dsn, "exact_scan")
    small = ServerThread(dsn, backfill={"enabled": False}).start()
    indexed = ServerThread(dsn, backfill={"enabled": False}, database={"exact_scan_max_rows": 0}).start()
    with Client(small.url, timeout=300) as dg:
        dg.create_collection("short", L3)
        dg.put_documents(
            "short",
            [
                {"id": f"d{i:03d}", "text": f"short text {i % 10}", "metadata": {"odd": i % 2 == 1}}
                for i in range(DOCUMENTS)
            ],
        )
    yield dsn, small.url, indexed.url
    indexed.stop()
    small.stop()


@pytest.mark.parametrize("which", ["small collection: exact scan", "index, then exact when short"])
def test_k_at_least_the_matching_count_returns_every_matching_document(gateways, which):
    _, small, indexed = gateways
    with Client(small if which.startswith("small") else indexed, timeout=300) as dg:
        everything = dg.query("short", text="short text", k=1000)
        assert len(everything.hits) == DOCUMENTS and len({h.id for h in everything.hits}) == DOCUMENTS
        scores = [h.score for h in everything.hits]
        assert scores == sorted(scores, reverse=True)
        odd = dg.query("short", text="short text", k=1000, filter={"odd": True})
        assert {h.id for h in odd.hits} == {f"d{i:03d}" for i in range(1, DOCUMENTS, 2)}
        few = dg.query("short", text="short text 7", k=5, filter={"odd": True})
        assert len(few.hits) == 5 and all(h.metadata["odd"] for h in few.hits)


async def test_the_exact_answer_is_the_true_nearest_neighbours(gateways):
    dsn, small, _ = gateways
    with Client(small, timeout=300) as dg:
        vector = dg.embed(L3, ["a short text about 3"], input_type="query").vectors[0]
        hits = dg.query("short", vector=vector, model=L3, k=100).hits
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_indexscan = off")
        rows = await conn.fetch(
            f"SELECT 1 - (embedding <=> $1::vector) AS score FROM {model_table('short', L3)} "
            "ORDER BY embedding <=> $1::vector LIMIT 100",
            str(list(vector)),
        )
    finally:
        await conn.close()
    # repeated texts tie, so the scores are compared, not the order of equal ones
    assert [round(h.score, 5) for h in hits] == [round(r["score"], 5) for r in rows]
