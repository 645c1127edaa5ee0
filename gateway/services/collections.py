"""Collections and their documents: create, write (to every model of the write set), read, search.

Writes go through the one write path (services/writer.py): embed outside the transaction,
then commit the document rows and one embedding per write-set model together, re-checking the
state row FOR SHARE so no write commits under a stale write set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from gateway.domain.errors import Conflict, InvalidRequest, ModelDrift, NotFound
from gateway.domain.filters import Filter
from gateway.domain.identifiers import validate_collection_name, validate_document_id
from gateway.domain.latency import LatencyWindow
from gateway.domain.state import CollectionState
from gateway.domain.storage import Storage
from gateway.services.adapter import AdapterCache
from gateway.services.embedding import EmbeddingService
from gateway.services.writer import Changes, DocumentWriter, FixedChanges, Vectors
from gateway.services.writer import NewDocument as NewDocument  # the API and bulk loads build these
from gateway.store import collections as collections_sql
from gateway.store import documents as documents_sql
from gateway.store import registry as registry_sql
from gateway.store.retry import in_transaction, with_connection
from gateway.store.session import read_only

log = logging.getLogger(__name__)

SIZE_CHECK_INTERVAL_S = 5.0

# what a document read answers: the store's row type, named here for the API layer
DocumentRow = documents_sql.DocumentRow


@dataclass(frozen=True)
class WriteResult:
    id: str
    version: int
    truncated: bool


@dataclass(frozen=True)
class QueryResult:
    model: str
    hits: list[documents_sql.Hit]
    truncated: bool
    state: CollectionState | None = None  # the snapshot the query was served from
    vector: np.ndarray | None = None  # the query vector (text queries)
    latency_ms: float = 0.0
    adapted_from: str | None = None  # the model the query was embedded with, when mapped into `model`'s space

    @property
    def model_header(self) -> str:
        """X-Driftgate-Model: the index's model, and the query's own model when an adapter mapped it."""
        return f"{self.model}; adapted-from={self.adapted_from}" if self.adapted_from else self.model


@dataclass
class PreparedWrite:
    """A checked batch of documents and its vectors per model, not yet committed (see `embed_documents`)."""

    name: str
    documents: Sequence[NewDocument]
    ids: list[str]
    bulk: bool
    state: CollectionState  # the write set the vectors were made for
    vectors: Vectors = field(default_factory=Vectors)


class CollectionService:
    def __init__(self, pool: asyncpg.Pool, embeddings: EmbeddingService, *, exact_scan_max_rows: int = 2000) -> None:
        self._pool = pool
        self._exact_scan_max_rows = exact_scan_max_rows
        self._small: dict[str, tuple[bool, float]] = {}  # collection -> (at most exact_scan_max_rows, checked at)
        self._embeddings = embeddings
        self._states: dict[str, CollectionState] = {}
        self._read_latency = LatencyWindow()
        # refuses writes to a collection that follows a legacy table (services/adoption.py)
        self.write_guard: Callable[[str], Awaitable[None]] | None = None
        self.adapters = AdapterCache(pool)  # maps between a migration's models (services/adapter.py)
        # the one write path for documents, shared with follow (services/writer.py)
        self.writer = DocumentWriter(
            pool, embeddings, on_state=self._cache_state, on_missing=lambda name: self._states.pop(name, None)
        )

    @property
    def embeddings(self) -> EmbeddingService:
        return self._embeddings

    # -- start-up -------------------------------------------------------------------------

    async def check_models(self) -> dict[str, str]:
        """Load every model some collection uses and compare it with its registration."""
        return await self._embeddings.check_database(self._pool)

    # -- collections ----------------------------------------------------------------------

    async def create(self, name: str, model_key: str, storage: Storage | None = None) -> tuple[CollectionState, bool]:
        """Create a collection served by `model_key`, its table of `storage` (default `vector`);
        returns (state, created). An existing one answers as it is, unless it was asked for
        with another model or another storage (409)."""
        validate_collection_name(name)
        spec = self._embeddings.spec(model_key)
        existing = await self._load_state(name)
        if existing is None:
            registration = await self._embeddings.registration(model_key)

            async def create(conn: asyncpg.Connection) -> CollectionState | None:
                stored = await registry_sql.register_model(conn, registration)
                if stored.fingerprint != spec.fingerprint:
                    raise ModelDrift(
                        f"model {model_key!r} is registered with another fingerprint "
                        f"({stored.fingerprint[:12]}); re-index required: start a migration "
                        "to a model registered under a new key"
                    )
                return await collections_sql.create_collection(
                    conn, name, model_key, spec.dim, storage=storage or Storage.VECTOR
                )

            created = await in_transaction(self._pool, create)
            if created is not None:
                self._states[name] = created
                log.info("collection %s created with model %s", name, model_key)
                return created, True
            existing = await self._load_state(name)
            assert existing is not None
        if existing.read_model != model_key:
            raise Conflict(
                f"collection {name!r} exists with model {existing.read_model!r}; to change its model start a migration",
                code="collection_exists",
            )
        if storage is not None:
            stored = (await self.storage(name)).get(model_key, Storage.VECTOR)
            if stored != storage:
                raise Conflict(
                    f"collection {name!r} exists with storage {stored.value!r} for model {model_key!r}; "
                    "to change it start a migration to another model with the storage you want",
                    code="collection_exists",
                )
        return existing, False

    async def describe(self, name: str) -> tuple[CollectionState, int]:
        state = await self.state(name)
        count = await with_connection(self._pool, lambda conn: collections_sql.count_documents(conn, name))
        return state, count

    async def storage(self, name: str) -> dict[str, Storage]:
        """The storage type of each model table of the collection (model key -> storage)."""
        tables = await with_connection(self._pool, lambda conn: collections_sql.model_tables(conn, name))
        return {key: Storage(table["storage"]) for key, table in tables.items()}

    async def state(self, name: str) -> CollectionState:
        """The collection's state (cached; the write path re-checks it in its transaction)."""
        validate_collection_name(name)
        state = self._states.get(name) or await self._load_state(name)
        if state is None:
            raise NotFound(
                f"collection {name!r} does not exist; create it with PUT /v1/collections/{name}",
                code="collection_not_found",
            )
        return state

    async def reload(self, name: str) -> CollectionState | None:
        """Re-read a collection's state from the database (on NOTIFY, poll, or a vanished table)."""
        state = await self._load_state(name)
        if state is None:
            self._states.pop(name, None)
        return state

    def _cache_state(self, state: CollectionState) -> None:
        self._states[state.name] = state

    def cached_versions(self) -> dict[str, int]:
        return {name: state.state_version for name, state in self._states.items()}

    def read_p99_ms(self) -> float | None:
        return self._read_latency.p99_ms(time.monotonic())

    async def _load_state(self, name: str) -> CollectionState | None:
        state = await with_connection(self._pool, lambda conn: collections_sql.get_state(conn, name))
        if state is not None:
            cached = self._states.get(name)
            # a slow reload must not replace a newer state another reload already applied
            if cached is None or state.state_version >= cached.state_version:
                self._states[name] = state
            self._embeddings.warm(state.models)
        return state

    def refuse_drifted(self, state: CollectionState, models: Sequence[str]) -> None:
        drifted = self._embeddings.drifted  # the registry's verdicts: one for every model
        for key in models:
            if key in drifted:
                raise ModelDrift(
                    f"collection {state.name!r} cannot be served: {drifted[key]}. "
                    "re-index required: start a migration to a verified model"
                )

    # -- documents ------------------------------------------------------------------------

    async def upsert(self, name: str, documents: Sequence[NewDocument], *, bulk: bool = False) -> list[WriteResult]:
        """Write documents to every model of the write set in one transaction (all or nothing).

        `bulk` (a bulk load) embeds on the encoders' low-priority lanes, behind interactive work."""
        return await self.write_embedded(await self.embed_documents(name, documents, bulk=bulk))

    async def embed_documents(
        self, name: str, documents: Sequence[NewDocument], *, bulk: bool = False
    ) -> PreparedWrite:
        """The first half of `upsert`: check the batch and embed it for the current write set.

        A bulk load embeds the next chunks this way while the current one commits (`write_embedded`)."""
        ids = [validate_document_id(d.id) for d in documents]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("a batch names the same document id twice; send each id once", code="duplicate_id")
        state = await self.state(name)
        if self.write_guard is not None:
            await self.write_guard(name)
        prepared = PreparedWrite(name, documents, ids, bulk, state)
        await self._embed_missing(prepared)
        return prepared

    async def _embed_missing(self, prepared: PreparedWrite) -> None:
        """Embed the texts with every model of the write set that has no vectors for them yet."""
        state = prepared.state
        self.refuse_drifted(state, state.write_models)
        texts = [d.text for d in prepared.documents]
        await self.writer.embed(state.write_models, texts, prepared.vectors, bulk=prepared.bulk)

    async def write_embedded(self, prepared: PreparedWrite) -> list[WriteResult]:
        """The second half of `upsert`: commit an embedded batch through the one write path; if
        the write set changed since it was embedded (another replica started a migration), it
        embeds for the new models and retries."""
        changes = Changes(upserts=prepared.documents)
        written = await self.writer.write(
            prepared.name,
            FixedChanges(changes),
            state=prepared.state,
            known=changes,
            bulk=prepared.bulk,
            vectors=prepared.vectors,
        )
        prepared.state = written.state
        return [WriteResult(i, written.versions[i], written.truncated[i]) for i in prepared.ids]

    async def get_document(self, name: str, doc_id: str) -> documents_sql.DocumentRow:
        await self.state(name)
        validate_document_id(doc_id)
        row = await with_connection(self._pool, lambda conn: documents_sql.get_document(conn, name, doc_id))
        if row is None:
            raise NotFound(f"document {doc_id!r} not found in collection {name!r}", code="document_not_found")
        return row

    async def delete_document(self, name: str, doc_id: str) -> None:
        await self.state(name)
        if self.write_guard is not None:
            await self.write_guard(name)
        validate_document_id(doc_id)
        deleted = await with_connection(self._pool, lambda conn: documents_sql.delete_document(conn, name, doc_id))
        if not deleted:
            raise NotFound(f"document {doc_id!r} not found in collection {name!r}", code="document_not_found")

    async def get_documents(self, name: str, ids: Sequence[str]) -> list[documents_sql.DocumentRow]:
        """The documents of `ids` that exist, in the order asked (missing ones are left out)."""
        await self.state(name)
        checked = [validate_document_id(i) for i in ids]
        return await with_connection(self._pool, lambda conn: documents_sql.get_documents(conn, name, checked))

    async def list_documents(
        self, name: str, metadata_filter: Filter | None, limit: int, after: str | None
    ) -> list[documents_sql.DocumentRow]:
        """One page of the documents the filter matches, ordered by id, after the id `after`."""
        await self.state(name)
        return await with_connection(
            self._pool, lambda conn: documents_sql.list_documents(conn, name, metadata_filter, limit, after)
        )

    async def count_documents(self, name: str, metadata_filter: Filter | None) -> int:
        await self.state(name)
        return await with_connection(self._pool, lambda conn: documents_sql.count_matching(conn, name, metadata_filter))

    async def delete_documents(self, name: str, ids: Sequence[str] | None, metadata_filter: Filter | None) -> int:
        """Delete by ids or by filter (the one delete path: embeddings of every model go with them)."""
        await self.state(name)
        if self.write_guard is not None:
            await self.write_guard(name)
        checked = None if ids is None else [validate_document_id(i) for i in ids]

        async def delete(conn: asyncpg.Connection) -> int:
            return await documents_sql.delete_documents(conn, name, checked, metadata_filter)

        return await in_transaction(self._pool, delete)

    # -- search ---------------------------------------------------------------------------

    async def query_text(self, name: str, text: str, k: int, metadata_filter: Filter | None) -> QueryResult:
        """Encode `text` with the read model and search that model's table: never another one.

        Model and table come from one state snapshot. If the table vanished under a stale
        cache (another replica retired or aborted it), reload the state and run again.
        """
        started = time.monotonic()
        for attempt in range(2):
            state = await self.state(name)
            # adapted reads embed with the to-model and map into the read model's complete index
            adapter = await self.adapters.get(state) if state.adapted else None
            bridge = adapter.adapt if adapter is not None else None
            query_model = state.to_model if bridge is not None and state.to_model else state.read_model
            self.refuse_drifted(state, [query_model])
            encoded = await self._embeddings.embed(query_model, [text], "query")
            vector = bridge.apply(encoded.vectors[0]) if bridge is not None else encoded.vectors[0]
            try:
                hits = await self._search(name, state.read_model, vector, k, metadata_filter)
            except asyncpg.UndefinedTableError:
                if attempt:
                    raise
                await self.reload(name)
                continue
            elapsed = time.monotonic() - started
            self._read_latency.add(time.monotonic(), elapsed)
            adapted_from = query_model if bridge is not None else None
            return QueryResult(
                state.read_model, hits, encoded.truncated[0], state, vector, elapsed * 1000, adapted_from
            )
        raise AssertionError("unreachable")

    async def query_vector(
        self, name: str, vector: Sequence[float], model_key: str, k: int, metadata_filter: Filter | None
    ) -> QueryResult:
        """Search with a caller's vector, which must come from the read model (else 409), or from the
        migration's other model when the collection translates vectors through a passing adapter."""
        state = await self.state(name)
        spec = self._embeddings.spec(model_key)
        bridge = await self._translation(state, model_key)
        if model_key != state.read_model and bridge is None:
            raise Conflict(
                f"the vector is from model {model_key!r} but collection {name!r} is read with "
                f"{state.read_model!r}; embed the query with {state.read_model!r} (see the X-Driftgate-Model header)",
                code="model_mismatch",
            )
        self.refuse_drifted(state, [state.read_model])
        if len(vector) != spec.dim:
            raise InvalidRequest(
                f"vector has {len(vector)} dimensions, model {model_key!r} has {spec.dim}",
                code="dimension_mismatch",
            )
        array = query_vector_array(vector)
        if bridge is not None:  # a query only: the mapped vector is never stored
            array = bridge.apply(array)
        started = time.monotonic()
        try:
            hits = await self._search(name, state.read_model, array, k, metadata_filter)
        except asyncpg.UndefinedTableError:
            await self.reload(name)
            raise Conflict(
                f"collection {name!r} changed its read model; re-embed the query and retry", code="model_mismatch"
            ) from None
        self._read_latency.add(time.monotonic(), time.monotonic() - started)
        if bridge is not None:
            return QueryResult(state.read_model, hits, False, adapted_from=model_key)
        return QueryResult(model_key, hits, False)

    async def _translation(self, state: CollectionState, model_key: str):
        """The map for a raw vector of the migration's other model, when the collection allows one."""
        if not state.translate_vectors or model_key == state.read_model:
            return None
        adapter = await self.adapters.get(state)
        return self.adapters.map_for(adapter, model_key, state.read_model) if adapter is not None else None

    async def _search(
        self, name: str, model: str, vector: np.ndarray, k: int, metadata_filter: Filter | None
    ) -> list[documents_sql.Hit]:
        """k-NN through the HNSW index, or an exact scan where the index could miss documents.

        An HNSW graph can leave nodes unreachable, and a selective filter leaves few candidates:
        a query that may match no more than `exact_scan_max_rows` documents (or no more than k)
        compares every matching row instead. An index search that returns fewer than k hits is
        run again exactly, so a k that reaches the number of matching documents returns them all.
        """
        small = self._known_small(name)

        async def run(conn: asyncpg.Connection) -> list[documents_sql.Hit]:
            threshold = self._exact_scan_max_rows
            if metadata_filter is not None:
                bound = max(k, threshold)
                exact = await documents_sql.count_matching(conn, name, metadata_filter, limit=bound + 1) <= bound
            elif small is None:
                exact = await documents_sql.count_matching(conn, name, None, limit=threshold + 1) <= threshold
                self._small[name] = (exact, time.monotonic())
            else:
                exact = small
            hits = await documents_sql.search(conn, name, model, vector, k, metadata_filter, exact=exact)
            if len(hits) < k and not exact:
                hits = await documents_sql.search(conn, name, model, vector, k, metadata_filter, exact=True)
            return hits

        return await read_only(self._pool, run)

    def _known_small(self, name: str) -> bool | None:
        """Whether the collection held at most `exact_scan_max_rows` documents a moment ago (None:
        not known); re-counted at most every SIZE_CHECK_INTERVAL_S, so the hot path rarely counts."""
        known = self._small.get(name)
        if known is None or time.monotonic() - known[1] > SIZE_CHECK_INTERVAL_S:
            return None
        return known[0]


def query_vector_array(vector: Sequence[float]) -> np.ndarray:
    """A caller's query vector as the unit-length float32 vector the search uses.

    Checked after the float32 conversion, which is what the database sees: 1e39 becomes
    infinite and 1e-50 becomes zero there. Scaling to unit length (cosine ignores scale) keeps
    huge but finite values such as 3e38 from overflowing into a NaN score.
    """
    fast = _unit_float32_fast(vector)
    if fast is not None:
        return fast
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        as_float32 = np.asarray(vector, dtype=np.float32)
    if not np.all(np.isfinite(as_float32)):
        raise InvalidRequest(
            "vector has values that are NaN or outside the float32 range (|x| > 3.4e38)", code="invalid_vector"
        )
    wide = as_float32.astype(np.float64)
    norm = float(np.linalg.norm(wide))
    if norm == 0.0:
        raise InvalidRequest(
            "vector is all zeros (after conversion to float32, values below ~1e-45 are zero): cosine similarity "
            "is undefined",
            code="invalid_vector",
        )
    return (wide / norm).astype(np.float32)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _unit_float32_fast(vector: Sequence[float]) -> np.ndarray | None:
    """`query_vector_array`'s answer for the common vector, without its error-state context (a
    tenth of a vector query's own CPU); None for anything that needs the careful path (a value
    that is not finite or beyond the float32 range, or an all-zero vector)."""
    wide = np.array(vector, dtype=np.float64)
    if wide.ndim != 1 or not float(np.abs(wide).max(initial=0.0)) <= _FLOAT32_MAX:
        return None  # NaN and infinity fail the comparison too
    wide = wide.astype(np.float32).astype(np.float64)  # what the database sees, as the careful path
    norm = math.sqrt(float(wide.dot(wide)))  # np.linalg.norm of a 1-d vector, without its checks
    if norm == 0.0:
        return None
    return (wide / norm).astype(np.float32)
