"""The one write path for documents: validate by one rule, embed outside locks, commit re-checked.

API writes and bulk loads (services/collections.py), a followed table's changes and the end of
a follow (services/follow.py, services/adoption.py) all commit through `DocumentWriter.write`.

1. Validation is the domain's rule (`domain.identifiers.document_problem`): the API answers a bad
   document with a 400 before anything is written; follow skips (and counts) such a row.
2. Embedding happens outside any transaction or lock, for every model of the write set. Vectors
   are kept by text, so a vector is only ever stored for the very text it was made from.
3. One short transaction asks the change source what to write (a source may take its own locks
   and re-read its rows there), re-reads the collection's state row FOR SHARE and commits only
   when it holds a vector of every write model for every text. Otherwise (the write set changed:
   another replica started a migration; a followed row changed while we embedded) it rolls back,
   embeds what is missing, outside the transaction, and tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import numpy as np

from gateway.domain.errors import Conflict, NotFound
from gateway.domain.state import CollectionState
from gateway.services.embedding import EmbeddingService
from gateway.store import collections as collections_sql
from gateway.store import documents as documents_sql
from gateway.store.retry import in_transaction

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 5


@dataclass(frozen=True)
class NewDocument:
    id: str
    text: str
    metadata: Mapping


@dataclass(frozen=True)
class Changes:
    """What one commit writes: documents to insert or replace, ids to delete."""

    upserts: Sequence[NewDocument] = ()
    deletes: Sequence[str] = ()


class ChangeSource(Protocol):
    """Where a write's changes come from. Both methods run inside the commit transaction."""

    async def read(self, conn: asyncpg.Connection) -> Changes:
        """What to write now (under the source's own locks, read again on every attempt)."""
        ...

    async def committed(self, conn: asyncpg.Connection, changes: Changes, deferred: frozenset[str]) -> None:
        """Called after the rows are written, before the commit; `deferred` ids were left unwritten."""
        ...


@dataclass(frozen=True)
class FixedChanges:
    """A source whose changes are known up front (an API write): nothing to re-read."""

    changes: Changes

    async def read(self, conn: asyncpg.Connection) -> Changes:
        return self.changes

    async def committed(self, conn: asyncpg.Connection, changes: Changes, deferred: frozenset[str]) -> None:
        return None


@dataclass
class Vectors:
    """model -> text -> (vector, truncated): what was embedded so far, for this write only."""

    by_model: dict[str, dict[str, tuple[np.ndarray, bool]]] = field(default_factory=dict)

    def missing(self, model: str, texts: Sequence[str]) -> list[str]:
        have = self.by_model.get(model, {})
        return list(dict.fromkeys(t for t in texts if t not in have))

    def has_all(self, models: Sequence[str], text: str) -> bool:
        return all(text in self.by_model.get(m, {}) for m in models)


@dataclass(frozen=True)
class Written:
    """A committed write: the versions of the documents written, the state it committed under,
    and which documents' text was truncated by some write model."""

    versions: dict[str, int]
    state: CollectionState
    changes: Changes
    truncated: dict[str, bool]
    deferred: frozenset[str]


class _Retry(Exception):
    def __init__(self, state: CollectionState, changes: Changes) -> None:
        self.state, self.changes = state, changes


class DocumentWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        embeddings: EmbeddingService,
        *,
        on_state: Callable[[CollectionState], None] | None = None,
        on_missing: Callable[[str], object] | None = None,
    ) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self._on_state = on_state or (lambda _s: None)  # the collection service's state cache
        self._on_missing = on_missing or (lambda _n: None)

    async def write(
        self,
        name: str,
        source: ChangeSource,
        *,
        state: CollectionState | None = None,
        known: Changes | None = None,
        bulk: bool = False,
        may_defer: bool = False,
        max_seconds: float = 5.0,
        vectors: Vectors | None = None,
    ) -> Written:
        """Embed outside, commit inside; see the module docstring.

        `state` and `known` (the cached state, the changes when known up front) let the first
        attempt embed before its transaction; without them the first transaction only reads.
        With `may_defer`, the last attempt writes what it has vectors for and leaves the rest
        (the source's rows that kept changing) to the source's next write, which it must keep.
        `vectors` made beforehand by `embed` (a bulk load embeds its next chunk meanwhile) are used."""
        vectors = vectors if vectors is not None else Vectors()
        for attempt in range(MAX_WRITE_ATTEMPTS):
            if state is not None and known is not None:
                await self.embed(state.write_models, [d.text for d in known.upserts], vectors, bulk=bulk)
            last = attempt == MAX_WRITE_ATTEMPTS - 1

            async def commit(conn: asyncpg.Connection, defer: bool = may_defer and last) -> Written:
                return await self._commit(conn, name, source, vectors, defer=defer)

            try:
                written = await in_transaction(self._pool, commit, max_seconds=max_seconds)
            except _Retry as retry:
                if state is not None and retry.state.write_models != state.write_models:
                    log.info("write set of %s changed to %s; embedding again", name, retry.state.write_models)
                state, known = retry.state, retry.changes
                self._on_state(state)
                continue
            self._on_state(written.state)
            return written
        raise Conflict(
            f"the write set of {name!r} or the rows being written kept changing while they were embedded; "
            "retry the write",
            code="state_changing",
        )

    async def embed(self, models: Sequence[str], texts: Sequence[str], vectors: Vectors, *, bulk: bool) -> None:
        """Embed, outside any transaction, every text some write model has no vector for yet."""
        wanted = {m: vectors.missing(m, texts) for m in models}
        wanted = {m: t for m, t in wanted.items() if t}
        results = await asyncio.gather(
            *(self._embeddings.embed(m, texts, "document", bulk=bulk) for m, texts in wanted.items())
        )
        for (model, done), encoded in zip(wanted.items(), results, strict=True):
            have = vectors.by_model.setdefault(model, {})
            for i, text in enumerate(done):
                have[text] = (encoded.vectors[i], encoded.truncated[i])

    async def _commit(
        self, conn: asyncpg.Connection, name: str, source: ChangeSource, vectors: Vectors, *, defer: bool
    ) -> Written:
        changes = await source.read(conn)
        state = await collections_sql.get_state(conn, name, lock="SHARE")
        if state is None:
            self._on_missing(name)
            raise NotFound(f"collection {name!r} does not exist", code="collection_not_found")
        models = state.write_models
        ready = [d for d in changes.upserts if vectors.has_all(models, d.text)]
        deferred = frozenset(d.id for d in changes.upserts) - {d.id for d in ready}
        embedded_for_all = all(m in vectors.by_model for m in models) or not changes.upserts
        if deferred and not (defer and embedded_for_all):
            raise _Retry(state, changes)
        if deferred:
            log.info("collection %s: %d rows kept changing while embedded; applied later", name, len(deferred))
        versions: dict[str, int] = {}
        if ready:
            ids = [d.id for d in ready]
            versions = await documents_sql.upsert_documents(
                conn, name, ids, [d.text for d in ready], [d.metadata for d in ready]
            )
            ordered = [versions[i] for i in ids]
            for model in models:
                have = vectors.by_model[model]
                stacked = np.vstack([have[d.text][0] for d in ready])
                await documents_sql.upsert_embeddings(conn, name, model, ids, stacked, ordered)
        if changes.deletes:
            await documents_sql.delete_documents(conn, name, list(changes.deletes), None)
        await source.committed(conn, changes, deferred)
        truncated = {d.id: any(vectors.by_model[m][d.text][1] for m in models) for d in ready}
        return Written(versions, state, changes, truncated, deferred)
