"""The migration the load test drives through the admin API, phase by phase."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.client import AsyncClient
from gateway.domain.errors import ScenarioError


@dataclass
class Timeline:
    started: float
    phases: list[tuple[float, str]] = field(default_factory=list)  # (seconds, phase entered)
    progress: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds, done, total)
    events: list[tuple[float, str]] = field(default_factory=list)  # faults

    def now(self) -> float:
        return time.monotonic() - self.started


async def run_migration(
    admin: AsyncClient,
    collection: str,
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

    `admin` carries the admin token and retries 503s and refused connections (a fault may be
    in progress); any other error answer ends the scenario.

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
    await admin.start_migration(collection, to_model)
    fault_done = adapted = False
    while True:
        status = await admin.status(collection)
        backfill = status.backfill
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
            await adapt(admin, collection, timeline, enter)
        if status.phase == "ready":
            break
        if backfill.get("state") == "failed":
            raise ScenarioError(f"backfill failed: {backfill}")
        if timeline.now() > deadline_s:
            raise ScenarioError(f"backfill did not finish in {deadline_s:.0f} s: {backfill}")
        await asyncio.sleep(0.5)
    if read_mode == "adapted":
        await adapt(admin, collection, timeline, enter, refit=True)
    await enter("verify")
    report = await admin.verify(collection, 200)
    if not report.passed:
        raise ScenarioError(f"verification failed: {report.raw}")
    await enter("shadow")
    await admin.shadow(collection, to_model, shadow_rate)
    await dwell()
    await enter("cutover")
    await admin.cutover(collection, to_model)
    await dwell()
    await enter("rollback")
    await admin.cutover(collection, from_model)
    await dwell()
    await enter("cutover_again")
    await admin.cutover(collection, to_model)
    await dwell()
    await enter("retired")
    await admin.retire(collection, from_model)
    await dwell()


async def adapt(
    admin: AsyncClient,
    collection: str,
    timeline: Timeline,
    enter: Callable[[str], Awaitable[None]],
    *,
    refit: bool = False,
) -> None:
    """Fit the adapter on what the backfill has written so far and read through it (`adapted`)."""
    fit = await admin.fit_adapter(collection)
    timeline.events.append((timeline.now(), f"adapter v{fit['version']}: agreement@10 {fit['adapt']['agreement@10']}"))
    if not refit:
        if not fit["adapt"]["passes"]:
            raise ScenarioError(f"the adapter is below its floor: {fit.raw}")
        await admin.read_mode(collection, "adapted", translate_vectors=True)
        await enter("adapted")
