"""The migration the load test drives through the admin API, phase by phase."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp


class ScenarioError(RuntimeError):
    pass


@dataclass
class Timeline:
    started: float
    phases: list[tuple[float, str]] = field(default_factory=list)  # (seconds, phase entered)
    progress: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds, done, total)
    events: list[tuple[float, str]] = field(default_factory=list)  # faults

    def now(self) -> float:
        return time.monotonic() - self.started


class Admin:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str, collection: str) -> None:
        self.session, self.url, self.collection = session, url, collection
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, action: str, body: dict | None = None, *, ok=(200, 202)) -> dict:
        for attempt in range(20):  # the admin side retries too: a fault may be in progress
            try:
                async with self.session.request(
                    method,
                    f"{self.url}/admin/v1/collections/{self.collection}/{action}",
                    json=body,
                    headers=self.headers,
                ) as response:
                    payload = await response.json(content_type=None)
                    if response.status in ok:
                        return payload
                    if response.status < 500:
                        raise ScenarioError(f"{action}: {response.status} {payload}")
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.5 + attempt * 0.25)
        raise ScenarioError(f"{action}: no answer after retries")


async def run_migration(
    admin: Admin,
    timeline: Timeline,
    set_phase: Callable[[str], None],
    *,
    to_model: str,
    from_model: str,
    shadow_rate: float,
    dwell_s: float,
    fault: Callable[[str], Awaitable[None]] | None = None,
    deadline_s: float = 600.0,
    on_progress: Callable[[int, int], None] | None = None,
    read_mode: str = "native",
) -> None:
    """start -> backfill -> verify -> shadow -> cutover -> rollback -> cutover -> retire.

    With `read_mode="adapted"` an adapter is fitted once a third of the backfill is done and reads
    switch to it (new-model queries against the old index), and it is fitted again, replacing the
    first, when the backfill is complete; cutover then reads the new model natively.
    """

    async def enter(phase: str) -> None:
        set_phase(phase)
        timeline.phases.append((timeline.now(), phase))

    async def dwell() -> None:
        await asyncio.sleep(dwell_s)

    await enter("dual_write")
    await admin.call("POST", "migrations", {"to_model": to_model})
    fault_done = adapted = False
    while True:
        status = await admin.call("GET", "status")
        backfill = status["backfill"]
        timeline.progress.append((timeline.now(), backfill.get("done", 0), backfill.get("total", 0)))
        if on_progress:
            on_progress(backfill.get("done", 0), backfill.get("total", 0))
        if fault and not fault_done and backfill.get("total") and backfill["done"] >= backfill["total"] / 3:
            fault_done = True
            await fault("backfill")
        if (
            read_mode == "adapted"
            and not adapted
            and backfill.get("total")
            and backfill["done"] >= backfill["total"] / 3
        ):
            adapted = True
            await adapt(admin, timeline, enter)
        if status["phase"] == "ready":
            break
        if backfill.get("state") == "failed":
            raise ScenarioError(f"backfill failed: {backfill}")
        if timeline.now() > deadline_s:
            raise ScenarioError(f"backfill did not finish in {deadline_s:.0f} s: {backfill}")
        await asyncio.sleep(0.5)
    if read_mode == "adapted":
        await adapt(admin, timeline, enter, refit=True)
    await enter("verify")
    report = await admin.call("POST", "verify", {"sample": 200})
    if not report["passed"]:
        raise ScenarioError(f"verification failed: {report}")
    await enter("shadow")
    await admin.call("POST", "shadow", {"model": to_model, "sample_rate": shadow_rate})
    await dwell()
    await enter("cutover")
    await admin.call("POST", "read-model", {"model": to_model})
    await dwell()
    await enter("rollback")
    await admin.call("POST", "read-model", {"model": from_model})
    await dwell()
    await enter("cutover_again")
    await admin.call("POST", "read-model", {"model": to_model})
    await dwell()
    await enter("retired")
    await admin.call("POST", "retire", {"model": from_model})
    await dwell()


async def adapt(
    admin: Admin, timeline: Timeline, enter: Callable[[str], Awaitable[None]], *, refit: bool = False
) -> None:
    """Fit the adapter on what the backfill has written so far and read through it (`adapted`)."""
    fit = await admin.call("POST", "adapter", {})
    timeline.events.append((timeline.now(), f"adapter v{fit['version']}: agreement@10 {fit['adapt']['agreement@10']}"))
    if not refit:
        if not fit["adapt"]["passes"]:
            raise ScenarioError(f"the adapter is below its floor: {fit}")
        await admin.call("POST", "read-mode", {"mode": "adapted", "translate_vectors": True})
        await enter("adapted")
