"""Helpers shared by the test modules: model keys, admin calls, seeding, and waiting without
wall-clock limits on slowness.

A test on a busy machine may take several times longer than on a quiet one; what it must
never do is hang. So every wait here fails when nothing has *moved* for `stall_s` seconds
(no progress in what it watches), never because the total took long.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Settings, load_settings
from gateway.loadtest.cluster import free_port

__all__ = ["free_port"]

# the catalog models the tests use, named once
L3 = "paraphrase-MiniLM-L3-v2"  # small and fast: the usual old model
L6 = "all-MiniLM-L6-v2"  # the usual new model, same dimension
USE = "use-multilingual-v3"  # 512-d: a dimension change
L6_INT8 = "all-MiniLM-L6-v2-int8"  # the int8 export that all-MiniLM-L6-v2 used to mean
MPNET = "all-mpnet-base-v2"  # 768-d: the usual "better model" of a 384 -> 768 upgrade
SRE = "sre-embedding-model"  # a fine-tune of all-MiniLM-L6-v2: same dimension, another space

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STALL_S = 60.0  # how long nothing may move before a wait fails

T = TypeVar("T")


async def wait_for_progress(
    poll: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    progress: Callable[[T], Hashable],
    *,
    stall_s: float = STALL_S,
    interval_s: float = 0.1,
) -> T:
    """Poll until `done(value)`; fail if `progress(value)` stays the same for `stall_s` seconds."""
    watch = StallWatch(stall_s)
    while True:
        value = await poll()
        if done(value):
            return value
        watch.check(progress(value), f"last seen: {value}")
        await asyncio.sleep(interval_s)


async def settle(check: Callable[[], Awaitable[tuple[T, Hashable]]], what: str, *, stall_s: float = STALL_S) -> T:
    """Poll `check()` -> (value, progress) until the value is truthy; fail on a stall of `progress`."""
    value = await wait_for_progress(check, lambda answer: bool(answer[0]), lambda answer: answer[1], stall_s=stall_s)
    return value[0]


async def until(check: Callable[[], Awaitable[T]], what: str, *, stall_s: float = STALL_S) -> T:
    """Poll `check()` until it returns something truthy, for one change of state with nothing
    observable in between (a circuit closing, a drift check firing): `stall_s` without it is the stall."""

    async def answer() -> tuple[T, Hashable]:
        return await check(), what

    return await settle(answer, what, stall_s=stall_s)


async def finish_without_stalling(
    task: Awaitable[T], progress: Callable[[], Hashable], *, stall_s: float = STALL_S
) -> T:
    """Await `task`, failing only if `progress()` stops changing for `stall_s` seconds meanwhile."""
    future = asyncio.ensure_future(task)
    watch = StallWatch(stall_s)
    while True:
        finished, _ = await asyncio.wait({future}, timeout=0.2)
        if finished:
            return future.result()
        try:
            watch.check(progress())
        except AssertionError:
            future.cancel()
            raise


def status_progress(report: dict) -> Hashable:
    """What moves while a migration makes progress: its phase, backfill counts, state version."""
    backfill = report.get("backfill") or {}
    index = backfill.get("index_build") or {}
    return (
        report["phase"],
        report["state_version"],
        backfill.get("state"),
        backfill.get("done"),
        tuple(sorted(index.items())) if index else None,
        tuple((k, m["rows"], m["index_ready"]) for k, m in sorted(report["models"].items())),
    )


def settings_with(**backfill) -> Settings:
    return load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        backfill={"chunk_size": 32, "poll_interval_s": 0.2, **backfill},
        server={"sync_poll_interval_s": 0.5, "request_timeout_s": 600},
    )


async def create_collection(client: TestClient, name: str = "docs", model: str = L3) -> None:
    response = await client.put(f"/v1/collections/{name}", json={"model": model})
    assert response.status == 201, await response.text()


async def admin(
    client: TestClient, method: str, path: str, body: dict | None = None, *, collection: str = "docs"
) -> tuple[int, dict]:
    response = await client.request(method, f"/admin/v1/collections/{collection}/{path}", json=body, headers=AUTH)
    return response.status, await response.json()


async def seed(client: TestClient, n: int = 40, model: str = L3) -> None:
    """Create collection `docs` on `model` with `n` small documents d000..."""
    await create_collection(client, "docs", model)
    docs = [{"id": f"d{i:03d}", "text": f"document number {i} about topic {i % 7}"} for i in range(n)]
    assert (await client.post("/v1/collections/docs/documents", json={"documents": docs})).status == 200


async def status(client: TestClient, collection: str = "docs") -> dict:
    code, body = await admin(client, "GET", "status", collection=collection)
    assert code == 200, body
    return body


async def wait_for_status(
    client: TestClient, predicate: Callable[[dict], bool], *, collection: str = "docs", stall_s: float = STALL_S
) -> dict:
    """Poll the admin status until `predicate` holds; fail only when the migration stops moving."""
    return await wait_for_progress(lambda: status(client, collection), predicate, status_progress, stall_s=stall_s)


async def wait_phase(client: TestClient, phase: str, *, collection: str = "docs") -> dict:
    return await wait_for_status(client, lambda s: s["phase"] == phase, collection=collection)


def request(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """A blocking JSON request (for gateways running as subprocesses or in a thread)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def in_json_api(route: web.AbstractRoute) -> bool:
    """Whether a route is part of the JSON API (OpenAPI, fuzzing); the console's HTML pages for
    people under /console are not (tests/test_console.py covers them)."""
    return route.resource is not None and not route.resource.canonical.startswith("/console")


DRIFTGATE = [sys.executable, "-m", "gateway"]


def run(*args: str, stdin: str = "", env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `driftgate` CLI as a subprocess; `timeout` only catches a hung command."""
    return subprocess.run(
        [*DRIFTGATE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_until(
    poll: Callable[[], T], done: Callable[[T], bool], progress: Callable[[T], Hashable], *, stall_s: float = STALL_S
) -> T:
    """`wait_for_progress` for blocking callers (a gateway in a `ServerThread`, a sync client)."""
    watch = StallWatch(stall_s)
    while True:
        value = poll()
        if done(value):
            return value
        watch.check(progress(value), f"last seen: {value}")
        time.sleep(0.1)


class StallWatch:
    """For hand-written polling loops: `check(progress)` fails once `progress` has not changed
    for `stall_s` seconds (a stall), however long the whole wait takes on a slow machine."""

    def __init__(self, stall_s: float = STALL_S) -> None:
        self.stall_s = stall_s
        self._last: Hashable = object()
        self._changed = time.monotonic()

    def check(self, progress: Hashable, context: str = "") -> None:
        if progress != self._last:
            self._last, self._changed = progress, time.monotonic()
        assert time.monotonic() - self._changed < self.stall_s, f"no progress for {self.stall_s:.0f} s. {context}"


def temp_folders(prefix: str) -> set[Path]:
    """The `prefix*` folders in the temporary directory: compared before and after a command,
    what its throwaway database or working folder left behind."""
    return set(Path(tempfile.gettempdir()).glob(f"{prefix}*"))
