"""Adopting an existing pgvector table as a collection, and following its legacy writers.

`adopt` checks everything before writing anything: names, the catalog, and a random sample
of stored vectors re-embedded with the declared model (the drift check at the door). Then
one transaction creates the collection (its index comes later), the adoption row and, with
`follow`, the capture triggers. The `AdoptionRunner` (services/follow.py, one per app, in a cleanup_ctx) does
the rest, resumably, on whichever replica gets there first:

    importing  chunks of `INSERT ... SELECT` with a persisted cursor (a session advisory
               lock keeps one importer per collection; a killed one loses its chunk only)
    indexing   rows without a vector are planned as a backfill round for the model, and the
               existing backfill worker embeds them and builds the HNSW index CONCURRENTLY
    following  queued changes are applied in commit order, embedded with the current write
               models, so following continues through a later migration

A write through the gateway to a followed collection is refused (409 `collection_followed`):
the source table is the one writer while it is followed, so nothing the gateway accepts can
be silently overwritten by an older legacy change. `stop` hands writing over to the gateway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import numpy as np

from gateway.domain.adoption import (
    AdoptionState,
    SourceSpec,
    effective_state,
    judge_sample,
)
from gateway.domain.audit import AuditAction
from gateway.domain.errors import Conflict, InvalidRequest, ModelDrift, NotFound
from gateway.domain.identifiers import validate_collection_name
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.services.follow import AdoptionRunner, FollowBatch
from gateway.store import adoption as adoption_sql
from gateway.store import collections as collections_sql
from gateway.store import follow as follow_sql
from gateway.store import registry as registry_sql
from gateway.store.retry import in_transaction, with_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdoptRequest:
    source: SourceSpec
    model: str
    sample: int = 200
    follow: bool = False


class AdoptionService:
    """The operator's side: adopt, stop, and the write guard of followed collections."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        collections: CollectionService,
        embeddings: EmbeddingService,
        *,
        replica: str,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        self._collections = collections
        self._embeddings = embeddings
        self._replica = replica
        self._on_change = on_change or (lambda: None)
        self._writable: set[str] = set()  # collections known never to be followed again

    async def adopt(self, name: str, request: AdoptRequest, actor: str | None) -> dict:
        """Check, sample, then create the collection and the adoption (and triggers) in one go."""
        try:
            return await self._adopt(name, request, actor)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise InvalidRequest(
                f"the gateway's database role may not use {request.source.qualified!r} ({exc}); grant it SELECT "
                "on the table, and TRIGGER for --follow",
                code="insufficient_privilege",
            ) from None

    async def _adopt(self, name: str, request: AdoptRequest, actor: str | None) -> dict:
        validate_collection_name(name)
        spec = self._embeddings.spec(request.model)

        async def inspect(conn: asyncpg.Connection) -> tuple[adoption_sql.SourceTable, list]:
            if await collections_sql.get_state(conn, name) is not None:
                raise Conflict(
                    f"collection {name!r} already exists; adopt into a new collection name", code="collection_exists"
                )
            source = await adoption_sql.inspect_source(conn, request.source, follow=request.follow)
            if source.vector_dim is not None and source.vector_dim != spec.dim:
                raise InvalidRequest(
                    f"column {request.source.vector_column!r} holds {source.vector_dim}-d vectors, model "
                    f"{request.model!r} makes {spec.dim}-d ones; name the model that made them",
                    code="dimension_mismatch",
                )
            rows = await adoption_sql.sample_rows(conn, source, request.sample) if request.sample else []
            return source, rows

        source, rows = await with_connection(self._pool, inspect)
        sample = await self._check_sample(request, rows)
        registration = await self._embeddings.registration(request.model)

        async def create(conn: asyncpg.Connection) -> None:
            stored = await registry_sql.register_model(conn, registration)
            if stored.fingerprint != spec.fingerprint:
                raise ModelDrift(
                    f"model {request.model!r} is registered with another fingerprint; "
                    "re-index required: adopt with a model registered under a new key"
                )
            state = await collections_sql.create_collection(conn, name, request.model, spec.dim, with_index=False)
            if state is None:
                raise Conflict(f"collection {name!r} already exists", code="collection_exists")
            await adoption_sql.create_adoption(conn, name, source, request.model, request.follow, sample)
            writers: list[str] = []
            if request.follow:  # from here on, every committed change is queued
                writers = await follow_sql.install_follow(conn, name, source)
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.ADOPT,
                actor=actor,
                replica=self._replica,
                detail={
                    "table": request.source.qualified,
                    "follow": request.follow,
                    "sample": sample,
                    "queue_writers": writers,
                },
            )

        await in_transaction(self._pool, create)
        self._writable.discard(name)
        log.info(
            "adopting %s into %s with %s (follow=%s, sample %s)",
            request.source.qualified,
            name,
            request.model,
            request.follow,
            sample,
        )
        self._on_change()
        return await self._status(name)

    async def _check_sample(self, request: AdoptRequest, rows: list) -> dict:
        """Re-embed the sample with the declared model; 409 `vectors_mismatch` when any differs."""
        spec = self._embeddings.spec(request.model)
        if not rows:
            return {"sampled": 0, "threshold": spec.verify_min_cosine, "cosine_min": None}
        wrong = [r["id"] for r in rows if len(r["embedding"].to_numpy()) != spec.dim]
        if wrong:
            raise InvalidRequest(
                f"rows {', '.join(wrong[:5])} hold vectors that are not {spec.dim}-d; model "
                f"{request.model!r} makes {spec.dim}-d vectors",
                code="dimension_mismatch",
            )
        encoded = await self._embeddings.embed(request.model, [r["content"] for r in rows], "document", bulk=True)
        stored = np.vstack([r["embedding"].to_numpy() for r in rows]).astype(np.float32)
        cosines = (encoded.vectors * stored).sum(axis=1) / (
            np.linalg.norm(encoded.vectors, axis=1) * np.linalg.norm(stored, axis=1) + 1e-12
        )
        verdict = judge_sample([r["id"] for r in rows], [float(c) for c in cosines], spec.verify_min_cosine)
        if not verdict.passed:
            worst = ", ".join(f"{i} ({c:.4f})" for i, c in verdict.worst[:5])
            raise Conflict(
                f"{verdict.below} of {verdict.sampled} sampled vectors do not match model {request.model!r} "
                f"re-embedding their text (cosine below {verdict.threshold}; worst: {worst}): they were made by "
                "another model or version. Adopt with the model that made them, or import the documents with "
                "re-embedding through the API (POST /v1/collections/{c}/documents). Nothing was created.",
                code="vectors_mismatch",
            )
        return {
            "sampled": verdict.sampled,
            "threshold": verdict.threshold,
            "cosine_min": float(cosines.min()),
            "cosine_mean": float(cosines.mean()),
        }

    async def stop(self, name: str, actor: str | None, runner: AdoptionRunner) -> dict:
        """Stop following, all or nothing: apply what is queued, then in one transaction drop the
        triggers, apply the rest, drop the queue and record the stop. A failure (the table was
        changed so its rows cannot be read) rolls all of it back: still following, nothing lost."""
        validate_collection_name(name)
        row = await with_connection(self._pool, lambda conn: adoption_sql.get_adoption(conn, name))
        if row is None:
            raise NotFound(f"collection {name!r} was not adopted from a table", code="not_adopted")
        if not row["follow"]:
            return {**await self._status(name), "changed": False}
        step = effective_state(row["state"], row["failed_state"])
        if step == AdoptionState.IMPORTING:
            raise Conflict(
                f"collection {name!r} is still importing; stop following once the import is done "
                "(status: adoption.state)",
                code="adoption_importing",
            )
        source = adoption_sql.source_of(row)
        while await runner.apply_changes(row):  # drain first: the transaction below stays short
            pass

        async def finish(conn: asyncpg.Connection) -> None:  # in the transaction that applied the rest
            await follow_sql.drop_queue(conn, name)
            await adoption_sql.set_state(
                conn, name, AdoptionState.STOPPED if step == AdoptionState.FOLLOWING else step, follow=False
            )
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            assert state is not None
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.ADOPT_STOP,
                actor=actor,
                replica=self._replica,
                detail={"table": source.spec.qualified},
            )

        # the rest goes through the one write path: the triggers are dropped and the queue read under
        # the follow lock, what the rest needs embedded outside that transaction, then all committed
        rest = FollowBatch(name, source, limit=None, stopping=True, finish=finish)
        await self._collections.writer.write(name, rest, bulk=True, max_seconds=30)
        log.info("collection %s stopped following %s", name, source.spec.qualified)
        return {**await self._status(name), "changed": True}

    async def guard_write(self, name: str) -> None:
        """Refuse gateway writes to a collection that follows a table (see the module docstring)."""
        if name in self._writable:
            return
        exists, following = await with_connection(self._pool, lambda conn: adoption_sql.exists_and_follows(conn, name))
        if following:
            raise Conflict(
                f"collection {name!r} follows a legacy table: write to that table (the gateway applies the "
                f"change), or stop following with `driftgate adopt {name} --stop` once your writers write "
                "through the gateway",
                code="collection_followed",
            )
        if exists:  # adoption needs a new collection, so an existing unfollowed one stays writable
            self._writable.add(name)

    async def _status(self, name: str) -> dict:
        """The collection's `adoption` block (it exists: the caller just created or changed it)."""
        status = await with_connection(self._pool, lambda conn: adoption_status(conn, name))
        assert status is not None
        return status


async def adoption_status(conn: asyncpg.Connection, name: str) -> dict | None:
    """The `adoption` block of the status report, or None for a collection made through the API."""
    row = await adoption_sql.get_adoption(conn, name)
    if row is None:
        return None
    follow = None
    if row["follow"]:
        follow = await follow_sql.queue_lag(conn, name)
    return {
        "state": row["state"],
        "table": f"{row['source_schema']}.{row['source_table']}",
        "columns": {
            "id": row["id_column"],
            "text": row["text_column"],
            "vector": row["vector_column"],
            "metadata": list(row["metadata_columns"]),
            "metadata_json": row["metadata_json_column"],
        },
        "row_filter": {"column": row["filter_column"], "value": row["filter_value"]} if row["filter_column"] else None,
        "model": row["model_key"],
        "follow": row["follow"],
        "rows_total": row["rows_total"],
        "rows_read": row["rows_read"],
        "rows_imported": row["rows_imported"],
        "rows_skipped": row["rows_skipped"],
        "rows_to_embed": row["rows_to_embed"],
        "vectors_unusable": row["vectors_unusable"],
        "changes_applied": row["changes_applied"],
        "error": row["error"],
        "failures": row["failures"],
        "retry_at": row["retry_at"].isoformat() if row["retry_at"] else None,
        "follow_lag": follow,
        "sample": json.loads(row["sample"]) if row["sample"] else None,
        "started_at": row["started_at"].isoformat(),
        "imported_at": row["imported_at"].isoformat() if row["imported_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }
