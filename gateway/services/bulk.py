"""Bulk loads: a stream of documents written chunk by chunk, with the HNSW index deferred.

pgvector maintains an HNSW graph per inserted row at ~2 ms of database CPU each, so a large
load with the index in place runs at the index's speed, not the encoder's. A bulk load may
drop the collection's indexes first (searches then run as exact scans, correct but slower),
write every chunk through the collection's one write path (all write models, versions, the
state-version check), and build the indexes CONCURRENTLY when it ends.

Chunks are pipelined: the next one is parsed while the ones before it are embedded (on the
encoders' bulk lanes, one chunk each) and the oldest of those commits, so the database write
and the parsing hide behind the model. Each chunk is one transaction: a bad line stops the load before its chunk, and
everything before that chunk stays committed (the answer says how many lines that was, so
a client resumes there; writes are upserts by id, so sending a line twice is harmless).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from gateway.config import BackfillConfig
from gateway.domain.errors import BadLine, BulkLoadStopped
from gateway.services.collections import CollectionService, NewDocument, PreparedWrite
from gateway.store import collections as collections_sql
from gateway.store.retry import with_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Consecutive lines of the input: their documents and the number of the last line."""

    documents: Sequence[NewDocument]
    last_line: int


class IndexMode(StrEnum):
    """What a bulk load does with the collection's HNSW indexes."""

    AUTO = "auto"  # keep them for a load small next to the collection, else as rebuild (see `rebuild_after`)
    REBUILD = "rebuild"  # drop them first, build them (CONCURRENTLY) when the load ends: fastest for large loads
    LATER = "later"  # drop them first and leave them unbuilt: several loads in a row, then POST .../index
    KEEP = "keep"  # keep them: every row is inserted into the graph (a small load into a large collection)


def rebuild_after(existing_rows: int, fraction: float) -> int:
    """With index=auto, how many rows a load writes with the indexes kept before it drops them
    (and builds them again when it ends): `fraction` of the rows the collection held when the
    load began, so an empty collection drops them at once. A stream's size is not known up
    front; a load that passes this share is large enough that one rebuild costs less than
    inserting the rest of it into the graph row by row (~2 ms of database CPU each)."""
    return int(existing_rows * fraction)


@dataclass(frozen=True)
class BulkReport:
    loaded: int
    chunks: int
    lines: int
    truncated: int
    index: str  # "built", "deferred" (the caller asked to build later) or "kept" (never dropped)


class BulkLoader:
    """Bulk loads into collections. `encode_ahead` chunks are embedded while the one before them
    commits (the encoders' bulk lanes: one chunk each), so the database write hides behind the
    model; `index` holds the index build settings and index=auto's `bulk_rebuild_fraction`."""

    def __init__(
        self, pool: asyncpg.Pool, collections: CollectionService, index: BackfillConfig, *, encode_ahead: int = 2
    ) -> None:
        self._pool = pool
        self._collections = collections
        self._index = index
        self._encode_ahead = max(1, encode_ahead)

    async def load(self, name: str, chunks: AsyncIterator[Chunk], *, index: IndexMode) -> BulkReport:
        """Write every chunk; with the indexes dropped (at the start, or with index=auto once the
        load passes `rebuild_after` rows) build them when the input ends (not with index=later),
        also when it ends at a bad line."""
        state = await self._collections.state(name)
        keep_rows: float = math.inf  # rows written before the indexes are dropped (auto)
        if index is IndexMode.AUTO:
            existing = await with_connection(
                self._pool, functools.partial(collections_sql.about_how_many_documents, collection=name)
            )
            keep_rows = rebuild_after(existing, self._index.bulk_rebuild_fraction)
        dropped = index in (IndexMode.REBUILD, IndexMode.LATER)
        if dropped:
            await self._drop_indexes(name, state.write_models)
        loaded = written_chunks = truncated = committed_lines = 0
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=1)
        reader = asyncio.create_task(_read_ahead(chunks, queue))
        embedding: deque[tuple[Chunk, asyncio.Task[PreparedWrite]]] = deque()
        ended = False
        stop: BaseException | None = None  # a bad line, or the input broke off (the client went away)
        getter: asyncio.Task | None = None
        try:
            while True:
                # start embedding the chunks that arrive until `encode_ahead` are in flight, or the
                # oldest one is embedded (then it commits first)
                while not ended and len(embedding) < self._encode_ahead:
                    getter = getter or asyncio.create_task(queue.get())
                    if embedding:
                        await asyncio.wait((getter, embedding[0][1]), return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            break
                    item, getter = await getter, None
                    if item is None or isinstance(item, BaseException):
                        ended, stop = True, item
                        break
                    task = asyncio.create_task(self._collections.embed_documents(name, item.documents, bulk=True))
                    embedding.append((item, task))
                if not embedding:
                    break
                chunk, task = embedding.popleft()
                prepared = await task
                if not dropped and loaded + len(chunk.documents) > keep_rows:
                    await self._drop_indexes(name, state.write_models)
                    dropped = True
                results = await self._collections.write_embedded(prepared)
                loaded += len(results)
                truncated += sum(r.truncated for r in results)
                written_chunks += 1
                committed_lines = chunk.last_line
            if isinstance(stop, BadLine):
                raise BulkLoadStopped(stop, committed_lines, loaded)
            if stop is not None:
                raise stop
        finally:
            pending = [reader, *(t for _, t in embedding), *([getter] if getter else [])]
            for leftover in pending:
                leftover.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if dropped and index is not IndexMode.LATER:
                await self.build_indexes(name)
        log.info("bulk load into %s: %d documents in %d chunks", name, loaded, written_chunks)
        report_index = "kept" if not dropped else ("deferred" if index is IndexMode.LATER else "built")
        return BulkReport(loaded, written_chunks, committed_lines, truncated, report_index)

    async def _drop_indexes(self, name: str, models: Sequence[str]) -> None:
        for model in models:
            await with_connection(
                self._pool, functools.partial(collections_sql.drop_index, collection=name, model_key=model)
            )

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
