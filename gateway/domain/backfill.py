"""Backfill planning and throttling as pure functions over plain values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class BackfillState(StrEnum):
    """Where a migration's backfill is; stored as text in `driftgate.collections.backfill_state`."""

    IDLE = "idle"  # no migration in flight
    RUNNING = "running"
    PAUSED = "paused"  # by an operator; `resume` continues
    DONE = "done"  # every document embedded and the index built
    FAILED = "failed"  # finished with documents that failed to embed; `resume` retries them


class BackfillAction(StrEnum):
    """What an operator can ask of a running backfill."""

    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class Chunk:
    lo: str  # first id (inclusive, byte order)
    hi: str  # last id (inclusive)
    docs: int  # how many ids the plan saw in [lo, hi]


def plan_chunks(sorted_ids: Sequence[str], chunk_size: int) -> list[Chunk]:
    """Split ids (ascending, byte order) into consecutive ranges of at most `chunk_size` ids.

    Ranges are inclusive and disjoint; together they cover every id given. A document added
    later inside a range is picked up by whoever processes that range, and the catch-up
    sweep plans a new round for anything still missing at the end.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    return [
        Chunk(sorted_ids[i], sorted_ids[min(i + chunk_size, len(sorted_ids)) - 1], min(chunk_size, len(sorted_ids) - i))
        for i in range(0, len(sorted_ids), chunk_size)
    ]


def step_size(chunk_size: int, batch_size: int, max_rate: float | None) -> int:
    """How many documents one transaction of a chunk takes on.

    A whole chunk when nothing asks otherwise; one inference batch when batches are smaller
    (a remote model's progress then moves per request, not per 256 documents); and at most
    half a second's worth of a rate cap, so the cap holds over any window of a few seconds
    instead of a chunk committing at full speed between long sleeps.
    """
    step = min(chunk_size, max(1, batch_size))
    if max_rate and max_rate > 0:
        step = min(step, max(1, math.ceil(max_rate / 2)))
    return step


def should_hold(read_p99_ms: float | None, ceiling_ms: float | None, holding: bool, *, recover: float = 0.8) -> bool:
    """Whether the backfill should hold off because reads are slow (with hysteresis:
    once holding, it resumes only when p99 falls below `recover` x the ceiling)."""
    if ceiling_ms is None or read_p99_ms is None:
        return False
    if holding:
        return read_p99_ms > ceiling_ms * recover
    return read_p99_ms > ceiling_ms


def eta_seconds(done: int, total: int, rate_per_s: float) -> float | None:
    if rate_per_s <= 0:
        return None
    return max(0, total - done) / rate_per_s
