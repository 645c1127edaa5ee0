"""A collection's migration state as a plain, frozen value (the database row is the truth)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(str, enum.Enum):
    STEADY = "steady"
    BACKFILL = "dual_write"  # dual-write + backfill towards the new model
    READY = "ready"
    SHADOW = "shadow"
    CUTOVER = "cutover"


@dataclass(frozen=True)
class CollectionState:
    name: str
    phase: Phase
    read_model: str
    write_models: tuple[str, ...]
    shadow_model: str | None
    shadow_sample_rate: float
    state_version: int

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the collection depends on: the read model first, then the write set."""
        return tuple(dict.fromkeys((self.read_model, *self.write_models)))
