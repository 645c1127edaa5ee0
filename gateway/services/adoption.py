"""Adopting an existing pgvector table as a collection, and following its legacy writers.

`adopt` checks everything before writing anything: names, the catalog, and a random sample
of stored vectors re-embedded with the declared model (the drift check at the door). Then
one transaction creates the collection (its index comes later), the adoption row and, with
`follow`, the capture triggers. The `AdoptionRunner` (one per app, in a cleanup_ctx) does
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

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import numpy as np

from gateway.domain.adoption import (
    ACTIVE_STATES,
    AdoptionState,
    SourceSpec,
    judge_sample,
)
from gateway.domain.backfill import plan_chunks
from gateway.domain.errors import Conflict, InvalidRequest, ModelDrift, NotFound
from gateway.domain.identifiers import validate_collection_name
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.store import adoption as adoption_sql
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store import documents as documents_sql
from gateway.store import registry as registry_sql
from gateway.store.retry import TRANSIENT_ERRORS, db_retrying

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdoptRequest:
    source: SourceSpec
    model: str
    sample: int = 200
    follow: bool = False


class AdoptionService:
    """The operator's side: adopt, stop, and the write guard of followed collections."""

    def __init__(self, pool: asyncpg.Pool, collections: CollectionService, embeddings: EmbeddingService,
                 *, replica: str, on_change: Callable[[], None] | None = None) -> None:
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
                "on the table, and TRIGGER for --follow", code="insufficient_privilege") from None

    async def _adopt(self, name: str, request: AdoptRequest, actor: str | None) -> dict:
        validate_collection_name(name)
        spec = self._embeddings.spec(request.model)
        async with self._pool.acquire() as conn:
            if await collections_sql.get_state(conn, name) is not None:
                raise Conflict(f"collection {name!r} already exists; adopt into a new collection name",
                               code="collection_exists")
            source = await adoption_sql.inspect_source(conn, request.source)
            if source.vector_dim is not None and source.vector_dim != spec.dim:
                raise InvalidRequest(
                    f"column {request.source.vector_column!r} holds {source.vector_dim}-d vectors, model "
                    f"{request.model!r} makes {spec.dim}-d ones; name the model that made them",
                    code="dimension_mismatch")
            rows = await adoption_sql.sample_rows(conn, source, request.sample) if request.sample else []
        sample = await self._check_sample(request, rows)
        registration = await self._embeddings.registration(request.model)
        async for attempt in db_retrying():
            with attempt:
                async with self._pool.acquire() as conn, conn.transaction():
                    stored = await registry_sql.register_model(conn, registration)
                    if stored.fingerprint != spec.fingerprint:
                        raise ModelDrift(f"model {request.model!r} is registered with another fingerprint; "
                                         "re-index required: adopt with a model registered under a new key")
                    state = await collections_sql.create_collection(conn, name, request.model, spec.dim,
                                                                    with_index=False)
                    if state is None:
                        raise Conflict(f"collection {name!r} already exists", code="collection_exists")
                    await adoption_sql.create_adoption(conn, name, source, request.model, request.follow, sample)
                    if request.follow:  # from here on, every committed change is queued
                        await adoption_sql.install_follow(conn, name, source)
                    await collections_sql.change_state(
                        conn, state, action="adopt", actor=actor, replica=self._replica,
                        detail={"table": request.source.qualified, "follow": request.follow, "sample": sample})
        self._writable.discard(name)
        log.info("adopting %s into %s with %s (follow=%s, sample %s)", request.source.qualified, name,
                 request.model, request.follow, sample)
        self._on_change()
        async with self._pool.acquire() as conn:
            return await adoption_status(conn, name)

    async def _check_sample(self, request: AdoptRequest, rows: list) -> dict:
        """Re-embed the sample with the declared model; 409 `vectors_mismatch` when any differs."""
        spec = self._embeddings.spec(request.model)
        if not rows:
            return {"sampled": 0, "threshold": spec.verify_min_cosine, "cosine_min": None}
        wrong = [r["id"] for r in rows if len(r["embedding"].to_numpy()) != spec.dim]
        if wrong:
            raise InvalidRequest(f"rows {', '.join(wrong[:5])} hold vectors that are not {spec.dim}-d; model "
                                 f"{request.model!r} makes {spec.dim}-d vectors", code="dimension_mismatch")
        encoded = await self._embeddings.embed(request.model, [r["content"] for r in rows], "document", bulk=True)
        stored = np.vstack([r["embedding"].to_numpy() for r in rows]).astype(np.float32)
        cosines = (encoded.vectors * stored).sum(axis=1) / (
            np.linalg.norm(encoded.vectors, axis=1) * np.linalg.norm(stored, axis=1) + 1e-12)
        verdict = judge_sample([r["id"] for r in rows], [float(c) for c in cosines], spec.verify_min_cosine)
        if not verdict.passed:
            worst = ", ".join(f"{i} ({c:.4f})" for i, c in verdict.worst[:5])
            raise Conflict(
                f"{verdict.below} of {verdict.sampled} sampled vectors do not match model {request.model!r} "
                f"re-embedding their text (cosine below {verdict.threshold}; worst: {worst}): they were made by "
                "another model or version. Adopt with the model that made them, or import the documents with "
                "re-embedding through the API (POST /v1/collections/{c}/documents). Nothing was created.",
                code="vectors_mismatch")
        return {"sampled": verdict.sampled, "threshold": verdict.threshold,
                "cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean())}

    async def stop(self, name: str, actor: str | None, runner: AdoptionRunner) -> dict:
        """Stop following: drop the triggers, apply what they queued, drop the queue."""
        validate_collection_name(name)
        async with self._pool.acquire() as conn:
            row = await adoption_sql.get_adoption(conn, name)
        if row is None:
            raise NotFound(f"collection {name!r} was not adopted from a table", code="not_adopted")
        if not row["follow"]:
            async with self._pool.acquire() as conn:
                return {**await adoption_status(conn, name), "changed": False}
        if row["state"] == AdoptionState.IMPORTING.value:
            raise Conflict(f"collection {name!r} is still importing; stop following once the import is done "
                           "(status: adoption.state)", code="adoption_importing")
        source = adoption_sql.source_of(row)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _follow_lock(name))
            await adoption_sql.remove_triggers(conn, name, source)  # no change is captured after this
        while await runner.apply_changes(row):
            pass
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _follow_lock(name))
            await adoption_sql.drop_queue(conn, name)
            after = AdoptionState.STOPPED if row["state"] == AdoptionState.FOLLOWING.value \
                else AdoptionState(row["state"])
            await adoption_sql.set_state(conn, name, after, follow=False)
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            assert state is not None
            await collections_sql.change_state(conn, state, action="adopt_stop", actor=actor,
                                               replica=self._replica, detail={"table": source.spec.qualified})
        log.info("collection %s stopped following %s", name, source.spec.qualified)
        async with self._pool.acquire() as conn:
            return {**await adoption_status(conn, name), "changed": True}

    async def guard_write(self, name: str) -> None:
        """Refuse gateway writes to a collection that follows a table (see the module docstring)."""
        if name in self._writable:
            return
        async with self._pool.acquire() as conn:
            exists, following = await conn.fetchrow(
                """SELECT EXISTS (SELECT 1 FROM driftgate.collections WHERE name = $1),
                          EXISTS (SELECT 1 FROM driftgate.adoptions WHERE collection = $1 AND follow)""", name)
        if following:
            raise Conflict(
                f"collection {name!r} follows a legacy table: write to that table (the gateway applies the "
                f"change), or stop following with `driftgate adopt {name} --stop` once your writers write "
                "through the gateway", code="collection_followed")
        if exists:  # adoption needs a new collection, so an existing unfollowed one stays writable
            self._writable.add(name)


def _follow_lock(name: str) -> str:
    return f"driftgate-follow:{name}"


async def adoption_status(conn: asyncpg.Connection, name: str) -> dict | None:
    """The `adoption` block of the status report, or None for a collection made through the API."""
    row = await adoption_sql.get_adoption(conn, name)
    if row is None:
        return None
    follow = None
    if row["follow"]:
        follow = await adoption_sql.queue_lag(conn, name)
    return {
        "state": row["state"],
        "table": f"{row['source_schema']}.{row['source_table']}",
        "columns": {"id": row["id_column"], "text": row["text_column"], "vector": row["vector_column"],
                    "metadata": list(row["metadata_columns"])},
        "model": row["model_key"],
        "follow": row["follow"],
        "rows_total": row["rows_total"],
        "rows_read": row["rows_read"],
        "rows_imported": row["rows_imported"],
        "rows_skipped": row["rows_skipped"],
        "rows_to_embed": row["rows_to_embed"],
        "changes_applied": row["changes_applied"],
        "follow_lag": follow,
        "sample": json.loads(row["sample"]) if row["sample"] else None,
        "started_at": row["started_at"].isoformat(),
        "imported_at": row["imported_at"].isoformat() if row["imported_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


class AdoptionRunner:
    """The background half: import, hand over to the backfill, apply followed changes."""

    def __init__(self, pool: asyncpg.Pool, embeddings: EmbeddingService, *, replica: str, chunk_rows: int,
                 max_rows_per_s: float | None, apply_batch: int, backfill_chunk: int, poll_interval_s: float,
                 on_lag: Callable[[str, dict], None] | None = None) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self._replica = replica
        self._chunk_rows = chunk_rows
        self._max_rate = max_rows_per_s
        self._apply_batch = apply_batch
        self._backfill_chunk = backfill_chunk
        self._poll_s = poll_interval_s
        self._on_lag = on_lag or (lambda _c, _l: None)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            busy = False
            try:
                busy = await self.step(stop)
            except TRANSIENT_ERRORS as exc:
                log.warning("adoption runner: database unavailable (%r); retrying", exc)
            except Exception:  # a bug must not end the runner silently
                log.exception("adoption runner: unexpected error; retrying after the poll interval")
            if not busy:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                self._wake.clear()

    async def step(self, stop: asyncio.Event) -> bool:
        """One pass over the active adoptions; True when there was work (look again at once)."""
        async with self._pool.acquire() as conn:
            rows = await adoption_sql.adoptions_in(conn, ACTIVE_STATES)
        busy = False
        for row in rows:
            if stop.is_set():
                break
            state = AdoptionState(row["state"])
            if state == AdoptionState.IMPORTING:
                busy |= await self._import(row, stop)
                continue
            if state == AdoptionState.INDEXING:
                await self._finish_if_indexed(row)
            if row["follow"]:
                busy |= bool(await self.apply_changes(row))
                async with self._pool.acquire() as conn:
                    if (await adoption_sql.get_adoption(conn, row["collection"]))["follow"]:
                        self._on_lag(row["collection"], await adoption_sql.queue_lag(conn, row["collection"]))
        return busy

    # -- import ------------------------------------------------------------------------------------

    async def _import(self, row: asyncpg.Record, stop: asyncio.Event) -> bool:
        name = row["collection"]
        async with self._pool.acquire() as lock:
            if not await lock.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"driftgate-import:{name}"):
                return False  # another replica imports it
            try:
                return await self._import_locked(name, stop)
            finally:
                await lock.execute("SELECT pg_advisory_unlock(hashtext($1))", f"driftgate-import:{name}")

    async def _import_locked(self, name: str, stop: asyncio.Event) -> bool:
        async with self._pool.acquire() as conn:
            row = await adoption_sql.get_adoption(conn, name)
            if row is None or row["state"] != AdoptionState.IMPORTING.value:
                return False
            source = adoption_sql.source_of(row)
            if row["cursor"] is None:
                await conn.execute("UPDATE driftgate.adoptions SET rows_total = $2 WHERE collection = $1",
                                   name, await adoption_sql.count_rows(conn, source))
            dim = self._embeddings.spec(row["model_key"]).dim
        cursor, model = row["cursor"], row["model_key"]
        log.info("importing %s into %s from cursor %r", source.spec.qualified, name, cursor)
        started, done = time.monotonic(), 0
        while not stop.is_set():
            async for attempt in db_retrying(max_seconds=30):
                with attempt:
                    async with self._pool.acquire() as conn, conn.transaction():
                        cursor, read = await adoption_sql.import_chunk(
                            conn, name, model, dim, source, cursor, self._chunk_rows)
            if not read:
                break
            done += read
            if self._max_rate:  # throttle: sleep until the average rate is back under the limit
                ahead = done / self._max_rate - (time.monotonic() - started)
                if ahead > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), ahead)
        if stop.is_set():
            return False
        await self._hand_to_backfill(name, model)
        log.info("imported %s into %s: %d rows this run in %.1f s", source.spec.qualified, name, done,
                 time.monotonic() - started)
        return True

    async def _hand_to_backfill(self, name: str, model: str) -> None:
        """Plan the rows without a vector as a backfill round of the model; the backfill worker
        embeds them, then builds the HNSW index CONCURRENTLY and marks the backfill done."""
        async with self._pool.acquire() as conn, conn.transaction():
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            assert state is not None
            missing = await backfill_sql.incomplete_document_ids(conn, name, model)
            await backfill_sql.plan_round(conn, name, model, plan_chunks(missing, self._backfill_chunk), 1)
            await adoption_sql.set_state(conn, name, AdoptionState.INDEXING, imported_at=datetime.now(UTC))
            await collections_sql.change_state(
                conn, state, action="adopt_imported", actor="adoption", replica=self._replica,
                detail={"to_embed": len(missing)}, target_model=model, backfill_state="running",
                backfill_started_at=datetime.now(UTC))

    async def _finish_if_indexed(self, row: asyncpg.Record) -> None:
        """Once the backfill is done (index built), clear it and settle the adoption."""
        name, model = row["collection"], row["model_key"]
        async with self._pool.acquire() as conn, conn.transaction():
            settings = await backfill_sql.backfill_settings(conn, name)
            if settings["target_model"] == model and settings["backfill_state"] != "done":
                return
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            assert state is not None
            current = await adoption_sql.get_adoption(conn, name)
            after = AdoptionState.FOLLOWING if current["follow"] else AdoptionState.DONE
            await adoption_sql.set_state(conn, name, after, finished_at=datetime.now(UTC))
            changes = {"target_model": None, "backfill_state": "idle"} if state.target_model == model else {}
            await collections_sql.change_state(conn, state, action="adopt_done", actor="adoption",
                                               replica=self._replica, detail={"state": after.value}, **changes)
        log.info("adoption of %s is complete (%s)", name, after.value)

    # -- follow ------------------------------------------------------------------------------------

    async def apply_changes(self, row: asyncpg.Record) -> int:
        """Apply one batch of queued changes in one transaction; returns how many were applied.

        The per-collection advisory lock makes batches strictly sequential across replicas, so
        each batch reads the source after the previous one committed: the collection never moves
        back to an older value. The state row is held FOR SHARE, as on the API's write path, so
        the write set cannot change between embedding and commit.
        """
        name = row["collection"]
        source = adoption_sql.source_of(row)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _follow_lock(name))
            current = await adoption_sql.get_adoption(conn, name)
            if current is None or current["state"] == AdoptionState.IMPORTING.value or \
                    not await adoption_sql.queue_exists(conn, name):
                return 0
            state = await collections_sql.get_state(conn, name, lock="SHARE")
            entries = await adoption_sql.claim_changes(conn, name, self._apply_batch)
            if not entries:
                return 0
            if any(e["op"] == "T" for e in entries):
                await adoption_sql.delete_absent(conn, name, source)
            ids = list(dict.fromkeys(e["doc_id"] for e in entries if e["doc_id"] is not None))
            rows = await adoption_sql.current_rows(conn, source, ids) if ids else []
            keep = [r for r in rows if r["content"] and r["content"].strip() and 1 <= len(r["id"]) <= 256]
            kept = {r["id"] for r in keep}
            gone = [i for i in ids if i not in kept]
            if keep:
                texts = [r["content"] for r in keep]
                versions = await documents_sql.upsert_documents(
                    conn, name, [r["id"] for r in keep], texts, [_json(r["metadata"]) for r in keep])
                ordered = [versions[r["id"]] for r in keep]
                for model in state.write_models:
                    encoded = await self._embeddings.embed(model, texts, "document", bulk=True)
                    await documents_sql.upsert_embeddings(conn, name, model, [r["id"] for r in keep],
                                                          encoded.vectors, ordered)
            if gone:
                await adoption_sql.delete_documents(conn, name, gone)
            await adoption_sql.record_applied(conn, name, len(entries))
        return len(entries)


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value)
