"""Verification before cutover, in the manner of Vitess VDiff.

Per model table: counts, missing and stale documents (listed, capped), and a random sample
of stored vectors re-embedded with the pinned model and compared (min and mean cosine),
plus the registered probe texts. The latest report is stored; the read-model switch
requires it to have passed.
"""

from __future__ import annotations

import logging

import asyncpg
import numpy as np

from gateway.domain.errors import Conflict
from gateway.domain.vectors import row_cosines
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.store import collections as collections_sql
from gateway.store import documents as documents_sql
from gateway.store import registry as registry_sql
from gateway.store.retry import with_connection

log = logging.getLogger(__name__)

LIST_CAP = 20


class Verifier:
    def __init__(self, pool: asyncpg.Pool, collections: CollectionService, embeddings: EmbeddingService) -> None:
        self._pool = pool
        self._collections = collections
        self._embeddings = embeddings

    async def verify(self, name: str, sample: int) -> dict:
        state = await self._collections.state(name)
        reports = {}
        for model in state.write_models:
            try:
                reports[model] = await self._verify_model(name, model, sample)
            except asyncpg.UndefinedTableError:  # retired or aborted meanwhile: its table is gone
                raise Conflict(
                    f"model {model!r} of collection {name!r} was retired or aborted while verify ran; run verify again",
                    code="state_changed",
                ) from None
        log.info(
            "collection %s verified (sample %d): %s",
            name,
            sample,
            ", ".join(f"{model} {'passed' if r['passed'] else 'FAILED'}" for model, r in reports.items()),
        )
        return {
            "collection": name,
            "state_version": state.state_version,
            "passed": all(r["passed"] for r in reports.values()),
            "models": reports,
        }

    async def _verify_model(self, name: str, model: str, sample: int) -> dict:
        spec = self._embeddings.spec(model)

        async def read(conn: asyncpg.Connection) -> tuple:
            return (
                await collections_sql.coverage(conn, name, model),
                await collections_sql.incomplete_ids(conn, name, model, LIST_CAP),
                await documents_sql.sample_embeddings(conn, name, model, sample),
                await registry_sql.get_model(conn, model),
            )

        cover, listed, stored, registered = await with_connection(self._pool, read)
        cosines = np.zeros(0)
        if stored:
            encoded = await self._embeddings.embed(model, [r.text for r in stored], "document", bulk=True)
            kept = np.vstack([r.embedding for r in stored]).astype(np.float32)
            cosines = row_cosines(encoded.vectors, kept)
        below = [stored[i].id for i in np.argsort(cosines) if cosines[i] < spec.verify_min_cosine][:LIST_CAP]
        probe_problem = await self._embeddings.drift(registered) if registered else "model is not registered"
        report = {
            **cover,
            "missing_ids": listed["missing"],
            "stale_ids": listed["stale"],
            "sampled": len(stored),
            "cosine_min": float(cosines.min()) if len(cosines) else None,
            "cosine_mean": float(cosines.mean()) if len(cosines) else None,
            "threshold": spec.verify_min_cosine,
            "below_threshold_ids": below,
            "probe_ok": probe_problem is None,
            "probe_problem": probe_problem,
        }
        report["passed"] = cover["coverage"] >= 1.0 and not below and probe_problem is None
        await with_connection(self._pool, lambda conn: collections_sql.save_verification(conn, name, model, report))
        return report
