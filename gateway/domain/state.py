"""A collection's migration state as a plain, frozen value (the database row is the truth)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.domain.phases import Phase


class ReadMode(StrEnum):
    NATIVE = "native"  # text queries are embedded with the read model
    ADAPTED = "adapted"  # embedded with the to-model and mapped into the read (from-) model's space


@dataclass(frozen=True)
class CollectionState:
    name: str
    phase: Phase
    read_model: str
    write_models: tuple[str, ...]
    shadow_model: str | None
    shadow_sample_rate: float
    state_version: int
    from_model: str | None = None  # the old model while a migration is in flight
    to_model: str | None = None  # the new model while a migration is in flight
    noise_floor_rate: float = 0.0  # share of queries shadowed A/A (read model, exact search)
    read_mode: ReadMode = ReadMode.NATIVE
    translate_vectors: bool = False  # a raw vector of the migration's other model is mapped, not refused
    adapter_version: int | None = None  # the fitted adapter every replica serves (store/adapters.py)

    @property
    def adapted(self) -> bool:
        """Text queries are embedded with the to-model and mapped into the from-model's complete index."""
        return (
            self.read_mode is ReadMode.ADAPTED
            and self.adapter_version is not None
            and self.to_model is not None
            and self.read_model == self.from_model
        )

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the collection depends on: the read model first, then the write set."""
        return tuple(dict.fromkeys((self.read_model, *self.write_models)))

    def as_dict(self) -> dict:
        return {
            "phase": self.phase.value,
            "read_model": self.read_model,
            "write_models": list(self.write_models),
            "shadow_model": self.shadow_model,
            "shadow_sample_rate": self.shadow_sample_rate,
            "from_model": self.from_model,
            "to_model": self.to_model,
            "noise_floor_rate": self.noise_floor_rate,
            "read_mode": self.read_mode.value,
            "translate_vectors": self.translate_vectors,
            "adapter_version": self.adapter_version,
            "state_version": self.state_version,
        }
