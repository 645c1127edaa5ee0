"""Shadow reads: sampled, bounded, time-limited comparisons that never touch the read path.

The handler answers the caller first and then offers the job here; `offer` never waits
(a full queue drops and counts). A few worker tasks encode the query with the shadow model,
search its table (or, for the A/A noise floor, search the read model's table exactly, with
no index), compare the two rankings and publish the result: rolling stats, Prometheus
metrics and, if configured, a row in a bounded table. Candidate errors are swallowed and
counted by category, as github/scientist does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

import asyncpg
import numpy as np

from gateway.domain.errors import EncoderFailed
from gateway.domain.filters import Filter
from gateway.domain.shadow import Comparison, Observation, Pairing, ShadowStats, compare, recommendation, sampled
from gateway.services.collections import QueryResult
from gateway.services.embedding import EmbeddingService
from gateway.store import documents as documents_sql
from gateway.store import shadow as shadow_sql
from gateway.store.retry import TRANSIENT_ERRORS, with_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowJob:
    pairing: Pairing
    collection: str
    text: str
    vector: np.ndarray  # the read model's query vector (reused by the A/A job)
    k: int
    metadata_filter: Filter | None
    read: Observation
    shadow_model: str


class ShadowRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        embeddings: EmbeddingService,
        *,
        queue_size: int = 256,
        concurrency: int = 2,
        timeout_s: float = 2.0,
        window: int = 1000,
        keep_samples: int = 0,
        store_query_text: bool = False,
        metrics=None,
    ) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=queue_size)
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._window = window
        self._keep = keep_samples
        self._store_text = store_query_text
        self._metrics = metrics
        self._tasks: list[asyncio.Task] = []
        self._stats: dict[tuple[str, str], ShadowStats] = {}
        self.dropped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.in_flight = 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(self._concurrency)]

    async def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Let queued jobs finish for up to `drain_timeout_s` (their results are published), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), drain_timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def offer(
        self,
        result: QueryResult,
        *,
        text: str,
        k: int,
        metadata_filter: Filter | None,
        request_id: str | None,
    ) -> list[str]:
        """Queue the shadow jobs this answered query is sampled for; never blocks. Returns the pairings queued.

        Nothing is built unless a job is queued: with shadowing off this is two comparisons.
        """
        state = result.state
        if state is None or result.vector is None:
            return []  # a query by raw vector: there is no text to embed with another model
        plans = []
        if state.shadow_model and state.shadow_model != state.read_model:
            plans.append((Pairing.AB, state.shadow_model, state.shadow_sample_rate))
        if state.noise_floor_rate > 0:
            plans.append((Pairing.AA, state.read_model, state.noise_floor_rate))
        queued: list[str] = []
        read: Observation | None = None
        for pairing, model, rate in plans:
            if not sampled(rate, f"{pairing}:{request_id}" if request_id else None, random.random()):
                continue
            read = read or Observation(
                result.model, tuple(h.id for h in result.hits), tuple(h.score for h in result.hits), result.latency_ms
            )
            job = ShadowJob(pairing, state.name, text, result.vector, k, metadata_filter, read, model)
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self.dropped[f"{state.name}:{pairing}"] += 1
                if self._metrics:
                    self._metrics.shadow_dropped.labels(state.name, pairing).inc()
                continue
            queued.append(pairing)
        return queued

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self.in_flight += 1
            try:
                comparison = await asyncio.wait_for(self._run(job), self._timeout_s)
                await self._publish(job, comparison)
            except TimeoutError:
                self._count_error(job, "timeout")
            except TRANSIENT_ERRORS:
                self._count_error(job, "database")
            except asyncpg.PostgresError:
                self._count_error(job, "database")
            except asyncio.CancelledError:
                raise
            except EncoderFailed as exc:
                log.debug("shadow job failed to embed: %r", exc)
                self._count_error(job, "encoder")
            except Exception as exc:  # a shadow failure never reaches the caller
                log.debug("shadow job failed: %r", exc)
                self._count_error(job, "other")
            finally:
                self.in_flight -= 1
                self._queue.task_done()

    def _count_error(self, job: ShadowJob, category: str) -> None:
        self.errors[f"{job.collection}:{job.pairing}:{category}"] += 1
        if self._metrics:
            self._metrics.shadow_errors.labels(job.collection, job.pairing, category).inc()

    async def _run(self, job: ShadowJob) -> Comparison:
        started = time.perf_counter()
        if job.pairing == Pairing.AA:
            vector = job.vector
        else:
            vector = (await self._embeddings.embed_for_shadow(job.shadow_model, job.text)).vectors[0]
        hits = await with_connection(
            self._pool,
            lambda conn: documents_sql.search(
                conn,
                job.collection,
                job.shadow_model,
                vector,
                job.k,
                job.metadata_filter,
                exact=job.pairing == Pairing.AA,
            ),
        )
        shadow = Observation(
            job.shadow_model,
            tuple(h.id for h in hits),
            tuple(h.score for h in hits),
            (time.perf_counter() - started) * 1000,
        )
        return compare(job.pairing, job.read, shadow, job.k)

    async def _publish(self, job: ShadowJob, comparison: Comparison) -> None:
        """The one exit of a finished comparison: stats, metrics, optionally the samples table."""
        self._stats.setdefault((job.collection, job.pairing), ShadowStats(self._window)).add(comparison)
        if self._metrics:
            self._metrics.record_shadow(job.collection, comparison)
        if self._keep > 0:
            row = {
                "pairing": job.pairing,
                "read_model": comparison.read.model,
                "shadow_model": comparison.shadow.model,
                "query_hash": hashlib.sha256(job.text.encode()).hexdigest(),
                "query_text": job.text if self._store_text else None,
                "k": job.k,
                "overlap": comparison.overlap,
                "rbo": comparison.rbo,
                "kendall_tau": comparison.tau,
                "top1": comparison.top1,
                "score_shift": comparison.score_shift,
                "read_ms": comparison.read.latency_ms,
                "shadow_ms": comparison.shadow.latency_ms,
                "read_ids": list(comparison.read.ids),
                "shadow_ids": list(comparison.shadow.ids),
            }
            await with_connection(
                self._pool, lambda conn: shadow_sql.keep_sample(conn, job.collection, row, self._keep)
            )

    async def drain(self) -> None:
        """Wait until every queued job has finished (tests, graceful shutdown)."""
        await self._queue.join()

    def summary(self, collection: str) -> dict:
        ab = self._stats.get((collection, Pairing.AB))
        aa = self._stats.get((collection, Pairing.AA))
        ab_summary = ab.summary() if ab else {"samples": 0}
        aa_summary = aa.summary() if aa else {"samples": 0}

        def errors(pairing: str) -> dict[str, int]:
            prefix = f"{collection}:{pairing}:"
            return {key[len(prefix) :]: n for key, n in self.errors.items() if key.startswith(prefix)}

        return {
            **ab_summary,
            "dropped": self.dropped[f"{collection}:{Pairing.AB}"],
            "errors": errors(Pairing.AB),
            "noise_floor": {
                **aa_summary,
                "dropped": self.dropped[f"{collection}:{Pairing.AA}"],
                "errors": errors(Pairing.AA),
            },
            "recommendation": recommendation(ab_summary, aa_summary),
        }
