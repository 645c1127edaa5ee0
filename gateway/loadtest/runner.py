"""The one load-driving runner behind `driftgate demo` and `driftgate loadtest`.

`seed_collection` loads a corpus through the public API; `migrate_under_load` runs the open-loop
generator while `run_migration` walks the migration through the admin API, then reads every
tracked document back and returns what the caller reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from gateway.client import AsyncClient, Document, Status
from gateway.loadtest.generator import OpenLoopGenerator, Sample
from gateway.loadtest.report import check_final_state, failed, per_phase
from gateway.loadtest.scenario import Timeline, run_migration

SEED_BATCH = 200


def admin_client(url: str, token: str) -> AsyncClient:
    """The client of the demo and the load test: admin token, generous timeout, and retries that
    outlast a fault in progress (a replica restarting, PostgreSQL restarting) or a verify slower
    than the gateway's request timeout on a busy machine (504: the scenario's calls may run twice)."""
    return AsyncClient(url, admin_token=token, timeout=120.0, retries=20, max_retry_wait=2.0, retry_statuses=(503, 504))


async def seed_collection(
    client: AsyncClient,
    collection: str,
    model: str,
    corpus: Sequence[tuple[str, str]],
    *,
    metadata: Mapping | None = None,
    label: str | None = None,
) -> dict[str, int]:
    """Create `collection` on `model` and write `corpus` (id, text) in batches; id -> version."""
    await client.create_collection(collection, model)
    versions: dict[str, int] = {}
    with tqdm(total=len(corpus), desc=label or f"seeding {collection} with {model}", unit="doc") as bar:
        for start in range(0, len(corpus), SEED_BATCH):
            chunk = corpus[start : start + SEED_BATCH]
            documents = [Document(i, t, metadata or {}) for i, t in chunk]
            versions.update({r.id: r.version for r in await client.put_documents(collection, documents)})
            bar.update(len(chunk))
    return versions


@dataclass(frozen=True)
class LoadPlan:
    """What to drive: the traffic and the migration's pace."""

    from_model: str
    to_model: str
    rate: float
    mix: Mapping[str, float]
    shadow_rate: float
    dwell_s: float
    warmup_s: float
    retries: int = 0
    read_mode: str = "native"  # "adapted": reads go through the adapter during the backfill (scenario.py)


@dataclass
class RunResult:
    samples: list[Sample]
    timeline: Timeline
    phases: dict  # per phase: requests, failures, latency (also per operation)
    state: dict  # {checked, lost, resurrected}
    status: Status  # the collection's admin status at the end
    uncertain: int

    @property
    def failed_requests(self) -> int:
        return sum(failed(s) for s in self.samples)

    @property
    def passed(self) -> bool:
        return self.failed_requests == 0 and not self.state["lost"] and not self.state["resurrected"]


async def migrate_under_load(
    client: AsyncClient,
    urls: list[str],
    collection: str,
    corpus: Sequence[tuple[str, str]],
    fresh: list[str],
    seeds: dict[str, int],
    plan: LoadPlan,
    *,
    on_phase: Callable[[str, float], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    fault: Callable[[Timeline], Awaitable[None]] | None = None,
) -> RunResult:
    """Open-loop traffic over `urls` through a whole migration (a `steady` warm-up first); `client`
    (with the admin token) drives the migration and reads the documents back at the end."""
    generator = OpenLoopGenerator(
        urls, collection, list(corpus), rate=plan.rate, mix=dict(plan.mix), retries=plan.retries, fresh_texts=fresh
    )
    timeline = Timeline(started=time.monotonic())
    stop = asyncio.Event()
    load = asyncio.create_task(generator.run(stop))
    await asyncio.sleep(0)
    timeline.started = generator.started or timeline.started

    def set_phase(phase: str) -> None:
        generator.phase = phase
        if on_phase is not None:
            on_phase(phase, timeline.now())

    try:
        set_phase("steady")
        timeline.phases.append((0.0, "steady"))
        await asyncio.sleep(plan.warmup_s)

        async def fault_hook(_when: str) -> None:
            if fault is not None:
                await fault(timeline)

        await run_migration(
            client,
            collection,
            timeline,
            set_phase,
            to_model=plan.to_model,
            from_model=plan.from_model,
            shadow_rate=plan.shadow_rate,
            dwell_s=plan.dwell_s,
            fault=fault_hook if fault else None,
            on_progress=on_progress,
            read_mode=plan.read_mode,
        )
    finally:
        stop.set()
        await load
    starts = [*timeline.phases, (timeline.now(), "end")]
    durations = {phase: starts[i + 1][0] - at for i, (at, phase) in enumerate(timeline.phases)}
    state = await check_final_state(client, collection, generator.ledger, seeds)
    status = await client.status(collection)
    return RunResult(
        samples=generator.samples,
        timeline=timeline,
        phases=per_phase(generator.samples, durations),
        state=state,
        status=status,
        uncertain=len(generator.ledger.uncertain),
    )
