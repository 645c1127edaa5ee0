"""Shared setup for shadow_overhead.py and gateway_overhead.py: database, gateway with an admin token."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from _common import log
from aiohttp import web
from query_latency import create_database, drop_database, postmaster_pid  # noqa: F401  (re-exported)

from gateway.api.app import create_app
from gateway.store.database import EmbeddedPostgres

ADMIN_TOKEN = "bench-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Gateway:
    """One gateway app (admin API on) served on 127.0.0.1 with AppRunner, on a free port."""

    def __init__(self, settings, dsn: str) -> None:
        self.app = create_app(settings, dsn, admin_token=ADMIN_TOKEN)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.base = ""

    async def __aenter__(self) -> Gateway:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


class Postgres:
    """DATABASE_URL, or a throwaway embedded server; a fresh database in it either way."""

    def __enter__(self) -> Postgres:
        self.embedded = None
        self.pid = None
        if os.environ.get("DATABASE_URL"):
            self.server_dsn = os.environ["DATABASE_URL"]
            self.kind = "DATABASE_URL"
        else:
            self.embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="driftgate-bench-")) / "pgdata",
                                             ephemeral=True)
            log(f"starting embedded PostgreSQL in {self.embedded.data_dir} ...")
            self.server_dsn = self.embedded.start()
            self.pid = postmaster_pid(self.embedded.data_dir)
            self.kind = "embedded (ephemeral)"
        return self

    def __exit__(self, *exc) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            try:
                self.embedded.data_dir.parent.rmdir()
            except OSError:
                pass


async def load_collection(session: aiohttp.ClientSession, base: str, name: str, model: str,
                          docs: list[tuple[str, str]], batch: int = 250) -> float:
    started = time.perf_counter()
    async with session.put(f"{base}/v1/collections/{name}", json={"model": model}) as resp:
        if resp.status not in (200, 201):
            raise RuntimeError(f"PUT collection answered {resp.status}: {await resp.text()}")
    for start in range(0, len(docs), batch):
        chunk = docs[start:start + batch]
        payload = {"documents": [{"id": i, "text": t} for i, t in chunk]}
        async with session.post(f"{base}/v1/collections/{name}/documents", json=payload) as resp:
            if resp.status != 200:
                raise RuntimeError(f"POST documents answered {resp.status}: {await resp.text()}")
        log(f"loaded {start + len(chunk)}/{len(docs)} documents")
    return time.perf_counter() - started


async def admin(session: aiohttp.ClientSession, base: str, method: str, path: str, body: dict | None = None,
                ok=(200, 202)) -> dict:
    async with session.request(method, f"{base}/admin/v1/collections/{path}", json=body, headers=AUTH) as resp:
        data = await resp.json(content_type=None)
        if resp.status not in ok:
            raise RuntimeError(f"{method} {path} answered {resp.status}: {data}")
        return data


def pct(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    a = np.asarray(values_ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "mean_ms": round(float(a.mean()), 2), "max_ms": round(float(a.max()), 2)}
