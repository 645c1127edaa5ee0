"""Does one hostile client freeze the event loop? /healthz latency idle and during each attack, as JSON.

Runs a real `driftgate serve` process on a throwaway database (collection `freeze`, one
document). A probe asks GET /healthz back to back, first with nothing else running, then
while one hostile client (in its own thread and event loop) loops one request of issue 23,
point 2, each a 16 MB body holding 8,000,000 numbers:

- `metadata_8M`: PUT a document whose metadata holds the 8M-number array (metadata_too_large, 8-11 s each before);
- `filter_8M`: the same array as a query filter (7 s each before);
- `vector_8M`: an 8M-number query vector (1.5 s each; /healthz p50 1,444 ms before);
- `batch_8M`: a one-document batch carrying the same metadata;
- `metadata_at_budget`: metadata just under limits.max_json_values (so it is parsed), refused by its size.

    python bench/loop_freeze.py                        # 10 s per phase
    python bench/loop_freeze.py --seconds 5 --only metadata_8M
    python bench/loop_freeze.py --source /path/to/other/checkout   # another revision, same machine

Goal (issue 23): /healthz p99 < 50 ms during each attack.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import aiohttp
from _common import emit, load_average, log, machine_info, pct
from _db import PostgresServer
from _gateway import gateway_process

from gateway.config import LimitsConfig

MODEL = "paraphrase-MiniLM-L3-v2"
N = 8_000_000
NUMBERS = b"[" + b",".join([b"0"] * N) + b"]"  # 16 MB
AT_BUDGET = b"[" + b",".join([b"0"] * (LimitsConfig().max_json_values - 100)) + b"]"


def attacks() -> dict[str, tuple[str, str, bytes]]:
    return {
        "metadata_8M": ("PUT", "/v1/collections/freeze/documents/x", b'{"text": "t", "metadata": {"a": %s}}' % NUMBERS),
        "filter_8M": ("POST", "/v1/collections/freeze/query", b'{"text": "t", "filter": {"a": %s}}' % NUMBERS),
        "vector_8M": (
            "POST",
            "/v1/collections/freeze/query",
            b'{"vector": %s, "model": "%s"}' % (NUMBERS, MODEL.encode()),
        ),
        "batch_8M": (
            "POST",
            "/v1/collections/freeze/documents",
            b'{"documents": [{"id": "x", "text": "t", "metadata": {"a": %s}}]}' % NUMBERS,
        ),
        "metadata_at_budget": (
            "PUT",
            "/v1/collections/freeze/documents/x",
            b'{"text": "t", "metadata": {"a": %s}}' % AT_BUDGET,
        ),
    }


class Hostile(threading.Thread):
    """One client looping one request back to back, in its own event loop, until stopped."""

    def __init__(self, base: str, method: str, path: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.method, self.body = base + path, method, body
        self.stop = threading.Event()
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}

    def run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    async with http.request(self.method, self.url, data=self.body, headers=headers) as response:
                        body = await response.json(content_type=None)
                        label = f"{response.status} {body.get('error', {}).get('code', 'ok')}"
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    label = type(exc).__name__
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                self.statuses[label] = self.statuses.get(label, 0) + 1


async def probe(base: str, seconds: float) -> list[float]:
    """GET /healthz back to back for `seconds`; latencies in ms."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with http.get(base + "/healthz") as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.005)
    return latencies


async def measure(base: str, seconds: float, only: list[str]) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.put(base + "/v1/collections/freeze", json={"model": MODEL}) as response:
            assert response.status in (200, 201), await response.text()
        async with http.put(base + "/v1/collections/freeze/documents/d", json={"text": "a document"}) as response:
            assert response.status == 200, await response.text()
    out: dict = {"idle": {"healthz": pct(await probe(base, seconds))}}
    for name, (method, path, body) in attacks().items():
        if only and name not in only:
            continue
        log(f"attack {name}: {len(body) / 2**20:.1f} MB body, {seconds:.0f} s")
        hostile = Hostile(base, method, path, body)
        hostile.start()
        await asyncio.sleep(0.5)  # the first request is in flight
        healthz = await probe(base, seconds)
        hostile.stop.set()
        await asyncio.to_thread(hostile.join, 180)
        out[name] = {
            "body_mb": round(len(body) / 2**20, 1),
            "healthz": pct(healthz),
            "hostile_requests": len(hostile.latencies_ms),
            "hostile_answers": hostile.statuses,
            "hostile_latency": pct(hostile.latencies_ms),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--only", action="append", default=[], help="run only this attack (repeatable)")
    parser.add_argument("--source", help="run the gateway package of this checkout instead (e.g. old main)")
    args = parser.parse_args()
    with PostgresServer() as server, gateway_process(server.server_dsn, source=args.source) as (base, _pid):
        result = asyncio.run(measure(base, args.seconds, args.only))
    emit(
        {
            "benchmark": "loop_freeze",
            "goal": "/healthz p99 < 50 ms during each attack",
            "source": args.source or "this checkout",
            "seconds_per_phase": args.seconds,
            **result,
            "load_average": load_average(),
            "machine": machine_info(),
        }
    )


if __name__ == "__main__":
    main()
