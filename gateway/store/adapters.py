"""SQL for adapters: the training pairs a migration's tables hold, and the fitted maps.

One row per collection and pair of model fingerprints: a map is only ever served between the
exact models it was fitted on. A new fit replaces the row and bumps its version in the same
transaction that points the collection's state at it (services/adapter.py), so every replica
moves from one complete adapter to the next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg
import numpy as np

from gateway.domain.adapter import FittedAdapter, LinearMap, MapKind
from gateway.store.collections import model_table


@dataclass(frozen=True)
class StoredAdapter:
    collection: str
    from_model: str
    to_model: str
    from_fingerprint: str
    to_fingerprint: str
    version: int
    adapt: LinearMap
    translate: LinearMap
    validation: dict  # {"adapt": {...}, "translate": {...}, "pairs": n, "floor": f}
    fitted_at: str


async def sample_pairs(
    conn: asyncpg.Connection, collection: str, from_model: str, to_model: str, limit: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Up to `limit` documents embedded by both models at the same version: (ids, from vectors, to vectors).

    The sample is ordered by a hash of the id, so the same tables always give the same sample
    (the fit is deterministic) and a growing backfill keeps the documents it already gave.
    """
    rows = await conn.fetch(
        f"""SELECT a.doc_id, a.embedding::real[] AS a, b.embedding::real[] AS b
            FROM {model_table(collection, from_model)} a
            JOIN {model_table(collection, to_model)} b USING (doc_id)
            WHERE a.source_version = b.source_version
            ORDER BY md5(a.doc_id), a.doc_id
            LIMIT $1""",
        limit,
    )
    if not rows:
        return [], np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return (
        [r["doc_id"] for r in rows],
        np.array([r["a"] for r in rows], dtype=np.float32),
        np.array([r["b"] for r in rows], dtype=np.float32),
    )


async def save_adapter(
    conn: asyncpg.Connection,
    collection: str,
    from_model: str,
    to_model: str,
    fingerprints: tuple[str, str],
    fitted: FittedAdapter,
    validation: dict,
) -> int:
    """Insert or replace the adapter of (collection, fingerprints); returns its new version."""
    return await conn.fetchval(
        """INSERT INTO driftgate.adapters AS t (collection, from_model, to_model, from_fingerprint, to_fingerprint,
               adapt_kind, translate_kind, from_dim, to_dim, adapt_weights, adapt_bias, translate_weights,
               translate_bias, validation)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
           ON CONFLICT (collection, from_fingerprint, to_fingerprint) DO UPDATE SET
               version = t.version + 1, from_model = EXCLUDED.from_model, to_model = EXCLUDED.to_model,
               adapt_kind = EXCLUDED.adapt_kind, translate_kind = EXCLUDED.translate_kind,
               from_dim = EXCLUDED.from_dim, to_dim = EXCLUDED.to_dim,
               adapt_weights = EXCLUDED.adapt_weights, adapt_bias = EXCLUDED.adapt_bias,
               translate_weights = EXCLUDED.translate_weights, translate_bias = EXCLUDED.translate_bias,
               validation = EXCLUDED.validation, fitted_at = now()
           RETURNING version""",
        collection,
        from_model,
        to_model,
        *fingerprints,
        fitted.adapt.kind.value,
        fitted.translate.kind.value,
        fitted.translate.dim_in,
        fitted.translate.dim_out,
        _bytes(fitted.adapt.weights),
        _bytes(fitted.adapt.bias),
        _bytes(fitted.translate.weights),
        _bytes(fitted.translate.bias),
        json.dumps(validation),
    )


async def load_adapter(
    conn: asyncpg.Connection, collection: str, fingerprints: tuple[str, str]
) -> StoredAdapter | None:
    """The adapter fitted between exactly these two fingerprints, or None."""
    row = await conn.fetchrow(
        """SELECT * FROM driftgate.adapters
           WHERE collection = $1 AND from_fingerprint = $2 AND to_fingerprint = $3""",
        collection,
        *fingerprints,
    )
    if row is None:
        return None
    from_dim, to_dim = row["from_dim"], row["to_dim"]
    return StoredAdapter(
        collection=row["collection"],
        from_model=row["from_model"],
        to_model=row["to_model"],
        from_fingerprint=row["from_fingerprint"],
        to_fingerprint=row["to_fingerprint"],
        version=row["version"],
        adapt=_map(row["adapt_kind"], row["adapt_weights"], row["adapt_bias"], to_dim, from_dim),
        translate=_map(row["translate_kind"], row["translate_weights"], row["translate_bias"], from_dim, to_dim),
        validation=json.loads(row["validation"]),
        fitted_at=row["fitted_at"].isoformat(),
    )


def _bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _map(kind: str, weights: bytes, bias: bytes, dim_in: int, dim_out: int) -> LinearMap:
    return LinearMap(
        MapKind(kind),
        np.frombuffer(weights, dtype="<f4").reshape(dim_in, dim_out).astype(np.float32),
        np.frombuffer(bias, dtype="<f4").astype(np.float32),
    )
