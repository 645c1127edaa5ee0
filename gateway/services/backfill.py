"""The backfill worker: re-embeds documents that lack an up-to-date vector in a migration's
new model, chunk by chunk, in any number of processes.

Each pipeline loops: claim a chunk (FOR UPDATE SKIP LOCKED), read its stale documents,
embed them on the encoder thread, write only rows whose document still has the version
embedded, and mark the chunk done, all in the chunk's one transaction. Several pipelines
per worker keep the database and the model busy at the same time. When no chunk is left, a
sweep plans another round for anything still missing; when none is, the HNSW index is
built and the collection moves to `ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import numpy as np

from gateway.config import BackfillConfig
from gateway.domain.audit import AuditAction
from gateway.domain.backfill import BackfillState, plan_chunks, should_hold, step_size
from gateway.domain.errors import EncoderBadReply, EncoderFailed, EncoderUnavailable, ModelDrift, VectorOutOfRange
from gateway.domain.pacing import Pacer
from gateway.domain.phases import Action, Phase, next_phase
from gateway.services.embedding import EmbeddingService
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store import locks as locks_sql
from gateway.store import replicas as replicas_sql
from gateway.store.retry import TRANSIENT_ERRORS, in_transaction, with_connection

log = logging.getLogger(__name__)


@dataclass
class WorkerCounters:
    """Health counters, in the manner of arq: what this worker did since it started."""

    chunks: int = 0
    documents: int = 0
    written: int = 0
    failed_documents: int = 0
    retried: int = 0
    unexpected_errors: int = 0
    held_for_latency: int = 0
    holding: bool = False


class BackfillWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        embeddings: EmbeddingService,
        worker_id: str,
        *,
        chunk_size: int = 256,
        pipelines: int = 2,
        poll_interval_s: float = 1.0,
        read_p99_ceiling_ms: float | None = None,
        index_memory_mb: int = 256,
        index_parallel_workers: int | None = None,
        index_ef_construction: int | None = None,
        on_written: Callable[[str, str, int], None] | None = None,
        on_tokens: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self.worker_id = worker_id
        self._chunk_size = chunk_size
        self._pipelines = pipelines
        self._poll_interval_s = poll_interval_s
        self._ceiling_ms = read_p99_ceiling_ms
        self._on_written = on_written or (lambda _c, _m, _n: None)
        self._on_tokens = on_tokens or (lambda _c, _m, _n: None)  # tokens a remote model used, per migration
        self._index_memory_mb = index_memory_mb
        self._index_parallel_workers = index_parallel_workers
        self._index_ef_construction = index_ef_construction
        self._wake = asyncio.Event()
        self.counters = WorkerCounters()

    @classmethod
    def from_config(
        cls, pool: asyncpg.Pool, embeddings: EmbeddingService, worker_id: str, config: BackfillConfig, **callbacks
    ) -> BackfillWorker:
        """A worker as `[backfill]` in the config describes it (the app's and `driftgate backfill-worker`'s)."""
        return cls(
            pool,
            embeddings,
            worker_id,
            chunk_size=config.chunk_size,
            pipelines=config.pipelines,
            poll_interval_s=config.poll_interval_s,
            read_p99_ceiling_ms=config.read_p99_ceiling_ms,
            index_memory_mb=config.index_memory_mb,
            index_parallel_workers=config.index_parallel_workers,
            index_ef_construction=config.index_ef_construction,
            **callbacks,
        )

    def wake(self) -> None:
        """Look for work now (a state change was announced) instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Work until `stop` is set; with `burst`, return as soon as no backfill is active."""
        log.info("backfill worker %s started (pipelines=%d)", self.worker_id, self._pipelines)
        while not stop.is_set():
            active: list | None = None  # None: unknown, the database did not answer
            try:
                active = await self._active()
                for collection, model in active:
                    await self.process(collection, model, stop)
            except TRANSIENT_ERRORS as exc:
                self.counters.retried += 1
                log.warning("backfill worker: database unavailable (%r); retrying", exc)
            # the chunk rolled back: nothing lost, nothing mixed (VectorOutOfRange: a halfvec table
            # cannot hold the model's vectors; it holds until an operator aborts the migration)
            except (EncoderUnavailable, ModelDrift, VectorOutOfRange) as exc:
                self.counters.retried += 1
                log.warning("backfill worker: holding, the model cannot be used now: %s", exc.message)
                await asyncio.sleep(getattr(exc, "retry_after", 0.0))
            except Exception:  # a bug must not silently end the worker: log it and try again
                self.counters.unexpected_errors += 1
                log.exception("backfill worker: unexpected error; retrying after the poll interval")
            if burst and active == []:
                return
            await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Sleep until the next poll, a wake-up, or stop."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=self._poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    async def _active(self) -> list[tuple[str, str]]:
        return await with_connection(self._pool, backfill_sql.active_backfills)

    async def process(self, collection: str, model: str, stop: asyncio.Event) -> None:
        """Run the pipelines over a collection's chunks, then sweep and maybe finish.

        The model registry is asked first whether the model drifted (once per process; the drift
        watch keeps it current): a drifted model's chunks are refused and roll back."""
        await self._embeddings.check_once(self._pool, model)
        await asyncio.gather(*(self._pipeline(collection, model, stop) for _ in range(self._pipelines)))
        if not stop.is_set():
            await self._sweep_or_finish(collection, model)

    async def _pipeline(self, collection: str, model: str, stop: asyncio.Event) -> None:
        pacer = Pacer(0.0, burst_s=0.0)  # this pipeline's share of the rate cap, in documents

        async def look(conn: asyncpg.Connection) -> tuple[backfill_sql.BackfillSettings | None, bool]:
            """This migration's settings while it runs (else None), and whether reads ask it to hold."""
            settings = await backfill_sql.backfill_settings(conn, collection)
            if settings is None or settings.state != BackfillState.RUNNING or settings.to_model != model:
                return None, False
            return settings, await self._hold_for_latency(conn)

        while not stop.is_set():
            settings, hold = await with_connection(self._pool, look)
            if settings is None:
                return
            if hold:
                await asyncio.sleep(self._poll_interval_s)
                continue
            share = settings.max_rate / self._pipelines if settings.max_rate else None
            step = step_size(self._chunk_size, self._embeddings.spec(model).max_batch, share)
            pacer.per_minute = share * 60.0 if share else 0.0
            wait = pacer.reserve(time.monotonic(), step)
            if wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    return
            docs = await in_transaction(
                self._pool,
                functools.partial(self._one_step, collection=collection, model=model, step=step),
                max_seconds=30,
            )
            if docs is None:
                return
            pacer.refund(step - docs)  # a short step leaves its unused share to the next one

    async def _hold_for_latency(self, conn: asyncpg.Connection) -> bool:
        if self._ceiling_ms is None:
            return False
        p99 = await replicas_sql.max_read_p99_ms(conn)
        holding = should_hold(p99, self._ceiling_ms, self.counters.holding)
        if holding and not self.counters.holding:
            log.warning("backfill holding: read p99 %.1f ms > ceiling %.1f ms", p99, self._ceiling_ms)
        if holding:
            self.counters.held_for_latency += 1
        self.counters.holding = holding
        return holding

    async def _one_step(self, conn: asyncpg.Connection, *, collection: str, model: str, step: int) -> int | None:
        """One step of a chunk = one transaction (the caller's): claim the chunk, embed up to
        `step` of its documents, write those still current, count them; a step that finds
        fewer than `step` documents left closes the chunk. None when no chunk is left."""
        chunk = await backfill_sql.claim_chunk(conn, collection, model)
        if chunk is None:
            return None
        rows = await backfill_sql.chunk_documents(conn, collection, model, chunk, limit=step)
        written = 0
        if rows:
            ids, vectors, versions, failures = await self._embed(model, rows, collection)
            if ids:
                written = await backfill_sql.write_if_current(conn, collection, model, ids, vectors, versions)
            for doc_id, version, reason in failures:
                await backfill_sql.record_error(conn, collection, model, doc_id, version, reason)
            self.counters.failed_documents += len(failures)
        done = len(rows) < step
        await backfill_sql.record_step(
            conn,
            collection,
            model,
            chunk.chunk_no,
            processed=len(rows),
            written=written,
            worker=self.worker_id,
            done=done,
        )
        self.counters.chunks += int(done)
        self.counters.documents += len(rows)
        self.counters.written += written
        self._on_written(collection, model, written)
        return len(rows)

    async def _embed(self, model: str, rows: list, collection: str = "") -> tuple[list, np.ndarray, list, list]:
        """Embed a chunk's texts; if they fail together, embed them one by one and report the documents that fail."""
        texts = [r["content"] for r in rows]
        try:
            encoded = await self._embeddings.embed(model, texts, "document", bulk=True)
            self._on_tokens(collection, model, sum(encoded.tokens))
            return [r["id"] for r in rows], encoded.vectors, [r["version"] for r in rows], []
        except (EncoderFailed, EncoderBadReply):
            log.warning("backfill chunk of %d documents failed to embed; retrying one by one", len(rows))
        ids, vectors, versions, failures = [], [], [], []
        for row in rows:
            try:
                encoded = await self._embeddings.embed(model, [row["content"]], "document", bulk=True)
                self._on_tokens(collection, model, sum(encoded.tokens))
            except (EncoderFailed, EncoderBadReply) as exc:
                failures.append((row["id"], row["version"], str(exc.__cause__ or exc)))
                continue
            ids.append(row["id"])
            vectors.append(encoded.vectors[0])
            versions.append(row["version"])
        matrix = np.vstack(vectors) if vectors else np.zeros((0, 1), dtype=np.float32)
        return ids, matrix, versions, failures

    async def _sweep_or_finish(self, collection: str, model: str) -> None:
        """With every chunk done: plan a catch-up round, or build the index and mark `ready`.

        One worker at a time does this (advisory lock); the others carry on or wait.
        """
        key = f"driftgate-backfill:{collection}:{model}"

        async def locked(conn: asyncpg.Connection) -> None:
            async with locks_sql.try_lock(conn, key) as mine:
                if mine:
                    await self._sweep_or_finish_locked(conn, collection, model)

        await with_connection(self._pool, locked)

    async def _sweep_or_finish_locked(self, conn: asyncpg.Connection, collection: str, model: str) -> None:
        settings = await backfill_sql.backfill_settings(conn, collection)
        if settings is None or settings.state != BackfillState.RUNNING or settings.to_model != model:
            return
        done = await backfill_sql.progress(conn, collection, model)
        if done["chunks_done"] < done["chunks"]:
            return  # a chunk is still in flight elsewhere
        missing = await backfill_sql.incomplete_document_ids(conn, collection, model)
        if missing:
            round_no = await backfill_sql.current_round(conn, collection, model) + 1
            log.info(
                "backfill sweep of %s/%s: %d documents still missing; round %d",
                collection,
                model,
                len(missing),
                round_no,
            )
            async with conn.transaction():
                await backfill_sql.plan_round(conn, collection, model, plan_chunks(missing, self._chunk_size), round_no)
            return
        errors = done["errors"]
        final_state = BackfillState.FAILED if errors else BackfillState.DONE
        if not errors:
            tables = await collections_sql.model_tables(conn, collection)
            if model in tables and not tables[model]["index_ready"]:
                log.info("building the HNSW index of %s/%s", collection, model)
                await collections_sql.build_index(
                    conn,
                    collection,
                    model,
                    maintenance_work_mem_mb=self._index_memory_mb,
                    parallel_workers=self._index_parallel_workers,
                    ef_construction=self._index_ef_construction,
                )
        async with conn.transaction():
            state = await collections_sql.get_state(conn, collection, lock="UPDATE")
            if state is None or state.to_model != model:
                return
            changes: dict = {"backfill_state": final_state}
            if final_state == BackfillState.DONE and state.phase == Phase.DUAL_WRITE:
                changes["phase"] = next_phase(state.phase, Action.BACKFILL_DONE)
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.of_backfill_end(final_state),
                actor="backfill",
                replica=self.worker_id,
                detail={"errors": errors},
                **changes,
            )
        log.info("backfill of %s/%s %s (%d errors)", collection, model, final_state, errors)
