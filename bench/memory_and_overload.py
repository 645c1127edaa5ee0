"""What a gateway costs in memory, and how it behaves after an overload, as JSON.

Runs a real `driftgate serve` process (its RSS is read from /proc) on a throwaway database:

1. memory: RSS idle after start, after loading `--docs` Vaswani abstracts with
   paraphrase-MiniLM-L3-v2, the peak while 8 clients ask k=1000 queries at once, and after;
2. overload (issue 14): 16 clients each send 300 texts of 4,000 characters to /v1/embeddings
   and give up after 1 s; 5 s later one text query is timed. Before the fair encoder scheduler
   the gateway kept encoding the abandoned work for ~70 s and that query timed out (504).

    python bench/memory_and_overload.py                    # defaults: 1,000 documents
    python bench/memory_and_overload.py --docs 200         # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import aiohttp
from _common import emit, machine_info
from _db import PostgresServer
from _gateway import gateway_process

from gateway.client import AsyncClient
from gateway.datasets import vaswani
from gateway.loadtest.runner import seed_collection

MODEL = "paraphrase-MiniLM-L3-v2"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)


async def measure(base: str, pid: int, docs: int) -> dict:
    out: dict = {"rss_mb": {"idle": round(rss_mb(pid), 1)}}
    corpus = vaswani(limit=docs).corpus
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        async with AsyncClient(base, timeout=600) as client:
            await seed_collection(client, "mem", MODEL, corpus)
        out["rss_mb"]["loaded"] = round(rss_mb(pid), 1)
        sampler = PeakSampler(pid)
        sampler.start()

        async def big(i: int) -> int:
            async with http.post(f"{base}/v1/collections/mem/query", json={"text": corpus[i][1], "k": 1000}) as r:
                return len(await r.read())

        sizes = await asyncio.gather(*(big(i) for i in range(8)))
        sampler.stop.set()
        sampler.join()
        await asyncio.sleep(2)
        out["rss_mb"].update(peak_8_queries_k1000=round(sampler.peak, 1), after=round(rss_mb(pid), 1))
        out["k1000_answer_mb"] = round(max(sizes) / 2**20, 2)
        out["overload"] = await overload(base, http)
    return out


async def overload(base: str, http: aiohttp.ClientSession) -> dict:
    text = ("antenna impedance measurements at microwave frequencies " * 80)[:4000]
    body = {"model": MODEL, "input": [f"{i} {text}" for i in range(300)]}
    statuses: list[str] = []

    async def abandon() -> None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
                async with session.post(f"{base}/v1/embeddings", json=body) as response:
                    statuses.append(str(response.status))
        except (TimeoutError, aiohttp.ClientError):
            statuses.append("abandoned")

    await asyncio.gather(*(abandon() for _ in range(16)))
    await asyncio.sleep(5)
    started = time.perf_counter()
    async with http.post(f"{base}/v1/collections/mem/query", json={"text": "radio waves", "k": 10}) as response:
        status = response.status
        await response.read()
    return {
        "clients": 16,
        "texts_each": 300,
        "client_outcomes": {s: statuses.count(s) for s in sorted(set(statuses))},
        "query_after_5s": {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="Vaswani abstracts to load (default 1000)")
    args = parser.parse_args()
    with PostgresServer() as server, gateway_process(server.server_dsn) as (base, pid):
        result = asyncio.run(measure(base, pid, args.docs))
    emit({"benchmark": "memory_and_overload", "model": MODEL, "docs": args.docs, **result, "machine": machine_info()})


if __name__ == "__main__":
    main()
