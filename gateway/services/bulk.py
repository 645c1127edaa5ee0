"""Bulk loads: a stream of documents written chunk by chunk, with the HNSW index deferred.

pgvector maintains an HNSW graph per inserted row at ~2 ms of database CPU each, so a large
load with the index in place runs at the index's speed, not the encoder's. A bulk load may
drop the collection's indexes first (searches then run as exact scans, correct but slower),
write every chunk through the collection's one write path (all write models, versions, the
state-version check), and build the indexes CONCURRENTLY when it ends.

Chunks are pipelined: the next one is parsed while the current one is embedded and
committed. Each chunk is one transaction: a bad line stops the load before its chunk, and
everything before that chunk stays committed (the answer says how many lines that was, so
a client resumes there; writes are upserts by id, so sending a line twice is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from gateway.config import BackfillConfig
from gateway.domain.errors import BadLine, BulkLoadStopped
from gateway.services.collections import CollectionService, NewDocument
from gateway.store import collections as collections_sql
from gateway.store.retry import with_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Consecutive lines of the input: their documents and the number of the last line."""

    documents: Sequence[NewDocument]
    last_line: int


@dataclass(frozen=True)
class BulkReport:
    loaded: int
    chunks: int
    lines: int
    truncated: int
    index: str  # "built", "deferred" (the caller asked to build later) or "kept" (never dropped)


class BulkLoader:
    def __init__(self, pool: asyncpg.Pool, collections: CollectionService, index: BackfillConfig) -> None:
        self._pool = pool
        self._collections = collections
        self._index = index

    async def load(
        self, name: str, chunks: AsyncIterator[Chunk], *, defer_index: bool, build_index: bool
    ) -> BulkReport:
        """Write every chunk; with `defer_index`, drop the indexes first and (with `build_index`)
        build them when the input ends, also when it ends at a bad line."""
        state = await self._collections.state(name)
        if defer_index:
            for model in state.write_models:
                await with_connection(
                    self._pool, functools.partial(collections_sql.drop_index, collection=name, model_key=model)
                )
        loaded = written_chunks = truncated = committed_lines = 0
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=1)
        reader = asyncio.create_task(_read_ahead(chunks, queue))
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BadLine):
                    raise BulkLoadStopped(item, committed_lines, loaded)
                if isinstance(item, BaseException):  # the input broke off (the client went away)
                    raise item
                results = await self._collections.upsert(name, item.documents, bulk=True)
                loaded += len(results)
                truncated += sum(r.truncated for r in results)
                written_chunks += 1
                committed_lines = item.last_line
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if defer_index and build_index:
                await self.build_indexes(name)
        log.info("bulk load into %s: %d documents in %d chunks", name, loaded, written_chunks)
        index = "kept" if not defer_index else ("built" if build_index else "deferred")
        return BulkReport(loaded, written_chunks, committed_lines, truncated, index)

    async def build_indexes(self, name: str) -> list[str]:
        """Build the HNSW index of every write model's table that lacks one; the models built."""
        state = await self._collections.state(name)

        async def missing(conn: asyncpg.Connection) -> list[str]:
            tables = await collections_sql.model_tables(conn, name)
            return [m for m in state.write_models if m in tables and not tables[m]["index_ready"]]

        built = []
        for model in await with_connection(self._pool, missing):
            log.info("building the HNSW index of %s/%s", name, model)
            build = functools.partial(
                collections_sql.build_index,
                collection=name,
                model_key=model,
                maintenance_work_mem_mb=self._index.index_memory_mb,
                parallel_workers=self._index.index_parallel_workers,
                ef_construction=self._index.index_ef_construction,
            )
            await with_connection(self._pool, build)
            built.append(model)
        return built


async def _read_ahead(chunks: AsyncIterator[Chunk], queue: asyncio.Queue) -> None:
    """Parse the next chunk while the current one is written; a bad line ends the input."""
    try:
        async for chunk in chunks:
            await queue.put(chunk)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bad line, or the input broke off: the writer raises it after its chunk
        await queue.put(exc)
        return
    await queue.put(None)
