"""`driftgate backfill-worker`: a standalone backfill process for any machine that reaches the database.

It holds its own model registry and drift watch, so it refuses a drifted model's vectors exactly
as the gateway does: a model is checked against its registration before its first chunk, and
remote models are re-checked on their timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from gateway.config import Settings
from gateway.services.backfill import BackfillWorker
from gateway.services.drift_watch import DriftWatch
from gateway.services.embedding import EmbeddingService
from gateway.store.database import open_database, replica_id
from gateway.store.registry import all_models
from gateway.store.retry import with_connection

log = logging.getLogger(__name__)


def run(settings: Settings, dsn: str, *, burst: bool, worker_id: str | None) -> int:
    return asyncio.run(_run(settings, dsn, burst, worker_id))


async def _run(settings: Settings, dsn: str, burst: bool, worker_id: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker_process(settings, dsn, worker_id) as worker:
        await worker.run(stop, burst=burst)
    return 0


@contextlib.asynccontextmanager
async def worker_process(settings: Settings, dsn: str, worker_id: str | None = None) -> AsyncIterator[BackfillWorker]:
    """Everything a backfill-worker process runs besides its loop: pool, model registry, drift watch."""
    config = settings.backfill
    pool = await open_database(dsn, settings.database, max_size=config.pipelines + 2)
    embeddings = EmbeddingService.from_settings(settings)
    # keys registered with other catalog files keep those files
    embeddings.recognise(await with_connection(pool, all_models))
    watch = DriftWatch(pool, embeddings)
    await watch.start()
    worker = BackfillWorker.from_config(pool, embeddings, worker_id or "worker-" + replica_id(None), config)
    try:
        yield worker
    finally:
        counters = worker.counters
        log.info(
            "backfill worker %s stopping: %d chunks, %d documents, %d written, %d failed, %d retried",
            worker.worker_id,
            counters.chunks,
            counters.documents,
            counters.written,
            counters.failed_documents,
            counters.retried,
        )
        await watch.stop()
        await embeddings.close()
        await pool.close()
