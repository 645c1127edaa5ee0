"""The background half of adoption, one runner per app (owned by a cleanup_ctx): it imports
in resumable chunks, hands rows without a vector and the index to the backfill, and applies a
followed table's queued changes (see gateway/services/adoption.py and gateway/store/follow.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.domain.adoption import AdoptionState, effective_state, retry_delay
from gateway.domain.audit import AuditAction
from gateway.domain.backfill import BackfillState, plan_chunks
from gateway.domain.errors import GatewayError
from gateway.domain.identifiers import document_problem
from gateway.services.embedding import EmbeddingService
from gateway.services.writer import Changes, DocumentWriter, NewDocument
from gateway.store import adoption as adoption_sql
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store import follow as follow_sql
from gateway.store import locks as locks_sql
from gateway.store.retry import TRANSIENT_ERRORS, in_transaction, with_connection

log = logging.getLogger(__name__)


class AdoptionRunner:
    """The background half: import, hand over to the backfill, apply followed changes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        embeddings: EmbeddingService,
        writer: DocumentWriter,
        *,
        replica: str,
        chunk_rows: int,
        max_rows_per_s: float | None,
        apply_batch: int,
        backfill_chunk: int,
        poll_interval_s: float,
        on_lag: Callable[[str, dict], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self._writer = writer  # the one write path (services/writer.py)
        self._replica = replica
        self._chunk_rows = chunk_rows
        self._max_rate = max_rows_per_s
        self._apply_batch = apply_batch
        self._backfill_chunk = backfill_chunk
        self._poll_s = poll_interval_s
        self._on_lag = on_lag or (lambda _c, _l: None)
        self._on_failure = on_failure or (lambda _c: None)
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
        """One pass over the active adoptions; True when there was work (look again at once).

        Each adoption succeeds or fails alone: an error in one (a renamed column, a revoked
        grant) marks that one `failed` with the reason and retries it with backoff, and the
        others go on.
        """
        rows = await with_connection(self._pool, adoption_sql.adoptions_due)
        busy = False
        for row in rows:
            if stop.is_set():
                break
            try:
                busy |= await self._step_one(row, stop)
            except TRANSIENT_ERRORS:
                raise  # the database itself is unavailable: every adoption waits (see run)
            except Exception as exc:
                await self._failed(row, exc)
        return busy

    async def _step_one(self, row: asyncpg.Record, stop: asyncio.Event) -> bool:
        name = row["collection"]
        state = effective_state(row["state"], row["failed_state"])
        busy = False
        if state == AdoptionState.IMPORTING:
            busy = await self._import(row, stop)
        elif state == AdoptionState.INDEXING:
            await self._finish_if_indexed(row)
        if row["follow"]:  # while importing this only makes sure the capture runs as the writers
            busy |= bool(await self.apply_changes(row))

            async def lag(conn: asyncpg.Connection) -> dict | None:
                adoption = await adoption_sql.get_adoption(conn, name)
                return await follow_sql.queue_lag(conn, name) if adoption is not None and adoption["follow"] else None

            if (lag_now := await with_connection(self._pool, lag)) is not None:
                self._on_lag(name, lag_now)
        if row["state"] == AdoptionState.FAILED:
            if await with_connection(self._pool, lambda conn: adoption_sql.recover(conn, name)):
                log.info("adoption of %s recovered: %s again", name, state.value)
        return busy

    async def _failed(self, row: asyncpg.Record, exc: Exception) -> None:
        """Record the failure of one adoption (state `failed`, the reason, the next try)."""
        name = row["collection"]
        step = effective_state(row["state"], row["failed_state"])
        reason = exc.message if isinstance(exc, GatewayError) else f"{type(exc).__name__}: {exc}"
        failures = await with_connection(self._pool, lambda conn: adoption_sql.record_failure(conn, name, step, reason))
        self._on_failure(name)
        if failures == 1 and not isinstance(exc, GatewayError | asyncpg.PostgresError):
            log.error("adoption of %s failed while %s", name, step.value, exc_info=exc)  # a bug: keep the trace
        else:
            log.warning(
                "adoption of %s failed while %s (%d in a row; next try in %.0f s): %s",
                name,
                step.value,
                failures,
                retry_delay(failures),
                reason,
            )

    # -- import ------------------------------------------------------------------------------------

    async def _import(self, row: asyncpg.Record, stop: asyncio.Event) -> bool:
        name = row["collection"]

        async def import_if_mine(conn: asyncpg.Connection) -> bool:
            async with locks_sql.try_lock(conn, f"driftgate-import:{name}") as mine:
                if not mine:
                    return False  # another replica imports it
                return await self._import_locked(name, stop)

        return await with_connection(self._pool, import_if_mine)

    async def _import_locked(self, name: str, stop: asyncio.Event) -> bool:
        row = await with_connection(self._pool, lambda conn: adoption_sql.get_adoption(conn, name))
        if row is None or effective_state(row["state"], row["failed_state"]) != AdoptionState.IMPORTING:
            return False
        source = adoption_sql.source_of(row)
        if row["cursor"] is None:

            async def count(conn: asyncpg.Connection) -> None:
                await adoption_sql.set_rows_total(conn, name, await adoption_sql.count_rows(conn, source))

            await with_connection(self._pool, count)
        dim = self._embeddings.spec(row["model_key"]).dim
        cursor, model = row["cursor"], row["model_key"]
        log.info("importing %s into %s from cursor %r", source.spec.qualified, name, cursor)
        started, done = time.monotonic(), 0
        while not stop.is_set():

            async def import_next(conn: asyncpg.Connection, after: str | None = cursor) -> tuple[str | None, int]:
                await adoption_sql.check_unchanged(conn, source, follow=False)
                rows = await adoption_sql.chunk_documents(conn, source, after, self._chunk_rows)
                # the write path's rule (domain/identifiers.py), as for the API and follow
                skip = [r["id"] for r in rows if document_problem(r["id"], r["content"]) is not None]
                return await adoption_sql.import_chunk(conn, name, model, dim, source, after, self._chunk_rows, skip)

            # one snapshot: the rows judged are the rows copied
            cursor, read = await in_transaction(self._pool, import_next, max_seconds=30, isolation="repeatable_read")
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
        log.info(
            "imported %s into %s: %d rows this run in %.1f s",
            source.spec.qualified,
            name,
            done,
            time.monotonic() - started,
        )
        return True

    async def _hand_to_backfill(self, name: str, model: str) -> None:
        """Plan the rows without a vector as a backfill round of the model; the backfill worker
        embeds them, then builds the HNSW index CONCURRENTLY and marks the backfill done."""

        async def hand_over(conn: asyncpg.Connection) -> None:
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            assert state is not None
            missing = await backfill_sql.incomplete_document_ids(conn, name, model)
            await backfill_sql.plan_round(conn, name, model, plan_chunks(missing, self._backfill_chunk), 1)
            await adoption_sql.set_state(conn, name, AdoptionState.INDEXING, imported_at=datetime.now(UTC))
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.ADOPT_IMPORTED,
                actor="adoption",
                replica=self._replica,
                detail={"to_embed": len(missing)},
                to_model=model,
                backfill_state=BackfillState.RUNNING,
                backfill_started_at=datetime.now(UTC),
            )

        await in_transaction(self._pool, hand_over)

    async def _finish_if_indexed(self, row: asyncpg.Record) -> None:
        """Once the backfill is done (index built), clear it and settle the adoption."""
        name, model = row["collection"], row["model_key"]

        async def finish(conn: asyncpg.Connection) -> AdoptionState | None:
            settings = await backfill_sql.backfill_settings(conn, name)
            assert settings is not None
            if settings.to_model == model and settings.state != BackfillState.DONE:
                return None
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            assert state is not None
            current = await adoption_sql.get_adoption(conn, name)
            assert current is not None
            after = AdoptionState.FOLLOWING if current["follow"] else AdoptionState.DONE
            await adoption_sql.set_state(conn, name, after, finished_at=datetime.now(UTC))
            changes: dict[str, Any] = (
                {"to_model": None, "backfill_state": BackfillState.IDLE} if state.to_model == model else {}
            )
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.ADOPT_DONE,
                actor="adoption",
                replica=self._replica,
                detail={"state": after.value},
                **changes,
            )
            return after

        after = await in_transaction(self._pool, finish)
        if after is None:
            return
        log.info("adoption of %s is complete (%s)", name, after.value)

    # -- follow ------------------------------------------------------------------------------------

    async def apply_changes(self, row: asyncpg.Record) -> int:
        """Apply one batch of queued changes; returns how many were applied.

        The per-collection advisory lock makes batches strictly sequential across replicas, so
        each batch reads the source after the previous one committed: the collection never moves
        back to an older value. Before reading, the table is locked against ALTER and checked
        (column types, grants, the capture triggers): a table changed under the follow raises
        `AdoptionBroken` instead of running a query the owner's new types could hijack.

        The lock is held only to read the batch and to commit it, never while embedding: the
        batch goes through the one write path (services/writer.py), which reads the rows under the
        lock, embeds their texts outside it, then under the lock again re-reads them and commits
        only the vectors of the texts the rows hold now. A row that kept changing while it was
        embedded is left queued for a later batch (never written with an older text's vector).
        """
        batch = FollowBatch(row["collection"], adoption_sql.source_of(row), limit=self._apply_batch)
        await self._writer.write(batch.name, batch, bulk=True, may_defer=True)
        return batch.applied


class FollowBatch:
    """A change source of the write path (services/writer.py): the oldest queued changes of a
    followed table and the rows they name, as committed now. Read in the commit transaction, under
    the follow lock; with `stopping` (the end of a follow) the capture triggers are dropped first
    and the whole queue is read, and `finish` runs before the commit."""

    def __init__(
        self,
        name: str,
        source: adoption_sql.SourceTable,
        *,
        limit: int | None,
        stopping: bool = False,
        finish: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> None:
        self.name, self.source, self._limit, self._stopping, self._finish = name, source, limit, stopping, finish
        self.applied = 0
        self.following = True  # False when the follow was stopped (by another replica) meanwhile
        self._entries: list[asyncpg.Record] = []
        self._skipped: list[str] = []

    async def read(self, conn: asyncpg.Connection) -> Changes:
        self._entries, self._skipped, self.applied, self.following = [], [], 0, True
        name, source = self.name, self.source
        await follow_sql.lock_follow(conn, name)
        current = await adoption_sql.get_adoption(conn, name)
        if current is None or not current["follow"] or not await follow_sql.queue_exists(conn, name):
            self.following = False
            return Changes()
        if self._stopping:
            await adoption_sql.check_unchanged(conn, source, follow=False)
            await follow_sql.remove_triggers(conn, name, source)  # no change is captured after this
        else:
            # first of all, even while importing or failed: a follow made by an earlier version ran as the gateway
            if await follow_sql.secure_capture(conn, name, source):
                log.warning("collection %s: capture trigger function now runs with the writers' rights", name)
            if effective_state(current["state"], current["failed_state"]) == AdoptionState.IMPORTING:
                return Changes()
            await adoption_sql.check_unchanged(conn, source, follow=True)
            await follow_sql.check_capturing(conn, name, source)
        self._entries = await follow_sql.queued_changes(conn, name, self._limit)
        if any(e["op"] == "T" for e in self._entries):
            await follow_sql.delete_absent(conn, name, source)
        ids = list(dict.fromkeys(e["doc_id"] for e in self._entries if e["doc_id"] is not None))
        rows = await follow_sql.current_rows(conn, source, ids) if ids else []
        upserts = []
        for r in rows:
            problem = document_problem(r["id"], r["content"])
            if problem is None:
                upserts.append(NewDocument(r["id"], r["content"], _json(r["metadata"])))
            else:  # the API's rule: such a row is not a document; any older version of it goes
                self._skipped.append(f"{r['id']!r} ({problem})")
        kept = {d.id for d in upserts}
        return Changes(upserts=upserts, deletes=[i for i in ids if i not in kept])

    async def committed(self, conn: asyncpg.Connection, changes: Changes, deferred: frozenset[str]) -> None:
        if not self.following:
            return
        done = [e["seq"] for e in self._entries if e["doc_id"] not in deferred]
        if done:
            await follow_sql.delete_changes(conn, self.name, done)
        if done or self._skipped:
            await follow_sql.record_applied(conn, self.name, len(done), len(self._skipped))
        if self._skipped:
            log.warning(
                "collection %s: %d changed rows of %s are not valid documents and were skipped (counted in "
                "rows_skipped): %s",
                self.name,
                len(self._skipped),
                self.source.spec.qualified,
                "; ".join(self._skipped[:5]),
            )
        if self._finish is not None:
            await self._finish(conn)
        self.applied = len(done)


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value)
