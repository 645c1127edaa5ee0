"""The one way the benchmarks run the gateway: the real app, in this process, on 127.0.0.1.

In-process (aiohttp's AppRunner) rather than a `driftgate serve` subprocess, so a benchmark can
reach into the app: its Prometheus registry (texts per inference), its pool and its
EmbeddingService (a backfill worker on them), or a stand-in encoder loader. The site binds
port 0 and reads back the port the kernel gave it, so no free port has to be guessed.
Collections are seeded with the package's own `gateway.loadtest.runner.seed_collection`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence

import aiohttp
from _common import log
from aiohttp import web

from gateway.api.app import create_app
from gateway.api.keys import METRICS
from gateway.client import AsyncClient
from gateway.commands.runtime import freeze_startup_objects
from gateway.loadtest.cluster import free_port
from gateway.loadtest.runner import SEED_BATCH, seed_collection

ADMIN_TOKEN = "bench-admin-token"


class Gateway:
    """One gateway app (admin API on, token ADMIN_TOKEN) served on loopback, with a client session.

    `loader` replaces the ONNX encoder loader (see _fake_encoder.py); `connections` caps the
    session's connections (closed-loop points may open their own sessions instead).
    """

    def __init__(self, settings, dsn: str, *, loader=None, connections: int = 100, timeout_s: float = 300.0) -> None:
        self.app = create_app(settings, dsn, encoder_loader=loader, admin_token=ADMIN_TOKEN)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self._connections = connections
        self._timeout_s = timeout_s
        self.base = ""

    async def __aenter__(self) -> Gateway:
        await self.runner.setup()  # runs the cleanup contexts: pool, schema, model checks
        freeze_startup_objects()  # as `driftgate serve` does (gateway/commands/runtime.py)
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections),
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()
        await self.runner.cleanup()

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(status, JSON body) of one request; paths under /admin/ carry the admin token."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if path.startswith("/admin/") else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def admin(self, method: str, collection: str, action: str, body: dict | None = None) -> dict:
        """An admin call on a collection (e.g. "POST", "bench", "migrations"); any non-2xx raises."""
        status, data = await self.call(method, f"/admin/v1/collections/{collection}/{action}", body)
        if status not in (200, 201, 202):
            raise RuntimeError(f"{method} {collection}/{action} answered {status}: {data}")
        return data

    async def seed(self, collection: str, model: str, corpus: Sequence[tuple[str, str]]) -> dict:
        """Create `collection` on `model` holding `corpus` (id, text) through the public API; timed.

        The collection must be new: a benchmark that found data in its fresh database would
        measure something else.
        """
        started = time.perf_counter()
        async with AsyncClient(self.base, timeout=600) as client:
            await seed_collection(client, collection, model, corpus, label=f"loading {collection} ({model})")
        seconds = time.perf_counter() - started
        status, described = await self.call("GET", f"/v1/collections/{collection}")
        if status != 200 or described.get("documents") != len(corpus):
            raise RuntimeError(
                f"collection {collection} holds {described.get('documents')} documents, "
                f"expected {len(corpus)}: {described}"
            )
        log(f"loaded {len(corpus)} documents into {collection} in {seconds:.1f} s")
        return {
            "documents": len(corpus),
            "seconds": round(seconds, 2),
            "docs_per_s": round(len(corpus) / seconds, 1),
            "via": f"POST /v1/collections/{{c}}/documents, {SEED_BATCH} per request (seed_collection)",
        }

    def encode_stats(self, model: str) -> tuple[float, float]:
        """(texts encoded, inference batches) so far, from the app's own Prometheus registry."""
        registry = self.app[METRICS].registry
        total = registry.get_sample_value("driftgate_encode_batch_size_sum", {"model": model}) or 0.0
        count = registry.get_sample_value("driftgate_encode_batch_size_count", {"model": model}) or 0.0
        return total, count


@contextlib.contextmanager
def gateway_process(dsn: str, *, source: str | None = None) -> Iterator[tuple[str, int]]:
    """A real `driftgate serve` process on a free loopback port: (base URL, pid); stopped on exit.

    `source`: a checkout whose `gateway` package runs instead of this one (to measure another
    revision on the same machine and database).
    """
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "DRIFTGATE_LOGGING__LEVEL": "WARNING"}
    if source:
        env["PYTHONPATH"] = source
    process = subprocess.Popen(  # run from `source`: `python -m` puts the working directory first
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=source,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port, process)
        log(f"gateway pid {process.pid} on port {port}")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(60)


def _wait_ready(port: int, process: subprocess.Popen) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")
