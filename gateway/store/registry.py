"""SQL for the models registry: what each model key was registered with (fingerprint, probes)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class RegisteredModel:
    key: str
    name: str
    revision: str
    dim: int
    fingerprint: str
    probe_texts: tuple[str, ...]
    probe_vectors: tuple[tuple[float, ...], ...]


def _row(row: asyncpg.Record) -> RegisteredModel:
    return RegisteredModel(
        key=row["key"],
        name=row["name"],
        revision=row["revision"],
        dim=row["dim"],
        fingerprint=row["fingerprint"],
        probe_texts=tuple(row["probe_texts"]),
        probe_vectors=tuple(tuple(v) for v in json.loads(row["probe_vectors"])),
    )


async def get_model(conn: asyncpg.Connection, key: str) -> RegisteredModel | None:
    row = await conn.fetchrow("SELECT * FROM driftgate.models WHERE key = $1", key)
    return _row(row) if row else None


async def register_model(conn: asyncpg.Connection, model: RegisteredModel) -> RegisteredModel:
    """Insert the model if its key is new; return whatever row the registry holds for the key."""
    await conn.execute(
        """INSERT INTO driftgate.models (key, name, revision, dim, fingerprint, probe_texts, probe_vectors)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
           ON CONFLICT (key) DO NOTHING""",
        model.key,
        model.name,
        model.revision,
        model.dim,
        model.fingerprint,
        list(model.probe_texts),
        json.dumps([list(v) for v in model.probe_vectors]),
    )
    stored = await get_model(conn, model.key)
    assert stored is not None
    return stored


async def models_in_use(conn: asyncpg.Connection) -> list[RegisteredModel]:
    """Registered models that some collection reads from or writes to."""
    rows = await conn.fetch(
        """SELECT m.* FROM driftgate.models m
           WHERE EXISTS (SELECT 1 FROM driftgate.collections c
                         WHERE c.read_model = m.key OR m.key = ANY (c.write_models))
           ORDER BY m.key"""
    )
    return [_row(r) for r in rows]


async def all_models(conn: asyncpg.Connection) -> list[RegisteredModel]:
    """Every registered model, in use or not."""
    return [_row(r) for r in await conn.fetch("SELECT * FROM driftgate.models ORDER BY key")]


MODELS_CHANNEL = "driftgate_models"  # NOTIFY: the set of models changed (an import); replicas rescan


async def announce_models_changed(conn: asyncpg.Connection, replica: str) -> None:
    """Tell every replica (LISTENing on MODELS_CHANNEL) to rescan its models; `replica` is the sender."""
    await conn.execute("SELECT pg_notify($1, $2)", MODELS_CHANNEL, replica)
