"""What `gateway.client.Client` costs per call over a bare httpx request to the same endpoint.

The gateway runs in this process on its own event loop in a thread (bench/_gateway.py); the
calls are made from the main thread, alternating bare and client in blocks, over one pooled
connection each. Per call we record the wall time and the CPU time of the calling thread
(`time.thread_time`): the client's own work (building the request, encoding, decoding into
frozen dataclasses, the retry wrapper) is CPU in that thread, while the gateway's CPU is in its
own thread and not counted. The overhead is the difference of the means (goal: <= 0.1 ms).

A gateway in the same process shares the GIL with the caller, so those numbers are noisy. The
`in_memory` rows isolate the client's own work: the same calls, both sides, through an httpx
transport that returns the answers the real gateway gave (recorded first), so no network,
server or other thread is involved and the difference is what the client adds.

    python bench/client_overhead.py                  # 2,000 calls per operation and side
    python bench/client_overhead.py --calls 300      # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable

import httpx
from _common import emit, log, machine_info
from _db import Databases, PostgresServer, with_database
from _gateway import Gateway

from gateway.client import Client
from gateway.config import load_settings

MODEL = "paraphrase-MiniLM-L3-v2"
COLLECTION = "bench"
BLOCK = 50  # calls per side before switching, so drift in machine load hits both sides alike


class GatewayThread:
    """bench/_gateway.Gateway served from a thread, so that synchronous clients can call it."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.base = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        settings = load_settings(None, database={"pool_min": 1, "pool_max": 4}, backfill={"enabled": False})
        async with Gateway(settings, self._dsn) as gateway:
            self.base = gateway.base
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        if not self._ready.wait(300):
            raise RuntimeError("the gateway did not start")
        return self

    def __exit__(self, *exc) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def timed(call: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """Wall and calling-thread CPU time of `n` calls, in microseconds."""
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.thread_time()
        call()
        cpu.append((time.thread_time() - c) * 1e6)
        wall.append((time.perf_counter() - w) * 1e6)
    return wall, cpu


def _paths(vector: list[float]) -> list[tuple[str, str, dict | None]]:
    c = f"/v1/collections/{COLLECTION}"
    return [
        ("GET", f"{c}/documents/d7", None),
        ("POST", f"{c}/documents:get", {"ids": [f"d{i}" for i in range(10)]}),
        ("POST", f"{c}/query", {"vector": vector, "model": MODEL, "k": 10}),
    ]


def operations(base: str, http: httpx.Client, client: Client, vector: list[float]) -> dict[str, tuple]:
    """Per operation: (bare httpx call, client call); both check the status and decode the answer."""
    doc = f"{base}/v1/collections/{COLLECTION}/documents/d7"
    query = f"{base}/v1/collections/{COLLECTION}/query"
    many = f"{base}/v1/collections/{COLLECTION}/documents:get"
    ids = [f"d{i}" for i in range(10)]
    body = {"vector": vector, "model": MODEL, "k": 10}

    def bare(method: str, url: str, json: dict | None = None) -> Callable[[], object]:
        def call() -> object:
            response = http.request(method, url, json=json)
            response.raise_for_status()
            return response.json()

        return call

    return {
        "get_document": (bare("GET", doc), lambda: client.get_document(COLLECTION, "d7")),
        "get_documents_10": (bare("POST", many, {"ids": ids}), lambda: client.get_documents(COLLECTION, ids)),
        "query_vector_k10": (bare("POST", query, body), lambda: client.query(COLLECTION, vector=vector, model=MODEL)),
    }


class Replay(httpx.BaseTransport):
    """Answers every request with the recorded answer of the real gateway for its path."""

    def __init__(self, answers: dict[str, httpx.Response]) -> None:
        self._answers = answers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        recorded = self._answers[request.url.path]
        return httpx.Response(recorded.status_code, headers=recorded.headers, content=recorded.content)


def record(base: str, http: httpx.Client, paths: list[tuple[str, str, dict | None]]) -> dict[str, httpx.Response]:
    answers = {}
    for method, path, body in paths:
        response = http.request(method, base + path, json=body)
        response.read()
        answers[path] = response
    return answers


def measure(bare: Callable, typed: Callable, calls: int) -> dict:
    samples: dict[str, tuple[list[float], list[float]]] = {"bare_httpx": ([], []), "client": ([], [])}
    timed(bare, BLOCK), timed(typed, BLOCK)  # warm both paths
    for _ in range(max(1, calls // BLOCK)):
        for side, call in (("bare_httpx", bare), ("client", typed)):
            wall, cpu = timed(call, BLOCK)
            samples[side][0].extend(wall)
            samples[side][1].extend(cpu)
    row: dict = {}
    for side, (wall, cpu) in samples.items():
        row[side] = {
            "calls": len(wall),
            "wall_us_median": round(statistics.median(wall), 1),
            "cpu_us_mean": round(statistics.fmean(cpu), 1),
            "cpu_us_median": round(statistics.median(cpu), 1),
        }
    row["overhead_cpu_us_mean"] = round(row["client"]["cpu_us_mean"] - row["bare_httpx"]["cpu_us_mean"], 1)
    row["overhead_wall_us_median"] = round(row["client"]["wall_us_median"] - row["bare_httpx"]["wall_us_median"], 1)
    return row


async def _database(server: PostgresServer, databases: Databases) -> str:
    return with_database(server.server_dsn, await databases.create_or_exit("client"))


def run(calls: int) -> dict:
    results: dict = {}
    with PostgresServer() as server:
        loop = asyncio.new_event_loop()
        databases = Databases(server.server_dsn)
        dsn = loop.run_until_complete(_database(server, databases))
        try:
            with GatewayThread(dsn) as gateway, httpx.Client() as http, Client(gateway.base) as client:
                client.create_collection(COLLECTION, MODEL)
                client.put_documents(
                    COLLECTION, [{"id": f"d{i}", "text": f"document {i}", "metadata": {"i": i}} for i in range(200)]
                )
                vector = list(client.embed(MODEL, "a document", input_type="query").vectors[0])
                for name, (bare, typed) in operations(gateway.base, http, client, vector).items():
                    results[name] = {"end_to_end": measure(bare, typed, calls)}
                    log(f"{name} end to end: {results[name]['end_to_end']}")
                answers = record(gateway.base, http, _paths(vector))
            base = "http://replay"
            with httpx.Client(transport=Replay(answers)) as http, Client(base, transport=Replay(answers)) as client:
                for name, (bare, typed) in operations(base, http, client, vector).items():
                    results[name]["in_memory"] = measure(bare, typed, calls)
                    log(f"{name} in memory: {results[name]['in_memory']}")
        finally:
            loop.run_until_complete(databases.__aexit__(None, None, None))
            loop.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per operation and side")
    args = parser.parse_args()
    results = run(args.calls)
    emit(
        {
            "benchmark": "client_overhead",
            "goal_us": 100,
            "results": results,
            "worst_in_memory_overhead_us": max(r["in_memory"]["overhead_cpu_us_mean"] for r in results.values()),
            "machine": machine_info(),
        }
    )


if __name__ == "__main__":
    main()
