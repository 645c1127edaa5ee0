"""The asynchronous client (httpx): `AsyncClient` has `Client`'s methods, as coroutines
(gateway/client/sync.py); one pooled connection set, timeouts, retries of 503 and
connection failures."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying

from gateway.client import calls
from gateway.client.calls import KEEP, Call, Keep
from gateway.client.errors import IllegalTransition
from gateway.client.models import (
    BulkLoad,
    Collection,
    Document,
    Embeddings,
    MigrationState,
    Page,
    QueryResult,
    Report,
    Status,
    WriteResult,
)
from gateway.client.transport import Options, encode, result, unreachable

T = TypeVar("T")


class AsyncClient:
    """`AsyncClient(url, api_key=..., admin_token=...)`: `Client` for asyncio code.

    Use it as an async context manager (or await `close()`).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_wait: float = 10.0,
        retry_statuses: Iterable[int] = (503,),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._options = Options(
            url.rstrip("/"), api_key, admin_token, timeout, retries, max_retry_wait, frozenset(retry_statuses)
        )
        self._http = httpx.AsyncClient(
            base_url=self._options.url, timeout=timeout, limits=self._options.limits(), transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _once(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, content=encode(call), headers=self._options.headers(call)
            )
        except httpx.TransportError as exc:
            raise unreachable(self._options.url, exc) from exc
        return result(call, response)

    async def _run(self, call: Call[T]) -> T:
        try:
            return await self._once(call)
        except Exception as exc:
            if not self._options.retryable(exc) or self._options.retries <= 0:
                raise
        async for attempt in AsyncRetrying(**self._options.retry_policy()):
            with attempt:
                return await self._once(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def iter_documents(
        self, collection: str, filter: Mapping[str, Any] | None = None, page_size: int = 100
    ) -> AsyncIterator[Document]:
        """Every document the filter matches, page by page, ordered by id."""
        cursor: str | None = None
        while True:
            page = await self.list_documents(collection, filter, page_size, cursor)
            for document in page.documents:
                yield document
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- data plane ---------------------------------------------------------------------

    async def create_collection(self, name: str, model: str, storage: str | None = None) -> Collection:
        """Create a collection served by `model` (`created` False: it existed with that model);
        `storage` "halfvec" stores its vectors as float16 (docs/storage.md)."""
        return await self._run(calls.create_collection(name, model, storage))

    async def get_collection(self, name: str) -> Collection:
        return await self._run(calls.get_collection(name))

    async def put_document(
        self, collection: str, id: str, text: str, metadata: Mapping[str, Any] | None = None
    ) -> WriteResult:
        return await self._run(calls.put_document(collection, id, text, metadata))

    async def put_documents(
        self, collection: str, documents: Sequence[Document | Mapping[str, Any]], *, batch_size: int = calls.BATCH
    ) -> list[WriteResult]:
        """Upsert documents ({id, text, metadata} dicts or `Document`s), `batch_size` per request;
        each request is all or nothing."""
        results: list[WriteResult] = []
        for batch in calls.batches(documents, batch_size):
            got = await self._run(calls.put_documents(collection, batch))
            results.extend(got)
        return results

    async def get_document(self, collection: str, id: str) -> Document:
        return await self._run(calls.get_document(collection, id))

    async def get_documents(self, collection: str, ids: Sequence[str]) -> list[Document]:
        """The documents of `ids` that exist, in the order of `ids` (missing ones are left out)."""
        found: list[Document] = []
        for batch in calls.batches(list(ids)):
            got = await self._run(calls.get_documents(collection, batch))
            found.extend(got)
        return found

    async def delete_document(self, collection: str, id: str) -> bool:
        return await self._run(calls.delete_document(collection, id))

    async def delete_documents(
        self, collection: str, ids: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None
    ) -> int:
        """Delete by ids or by filter (exactly one); returns how many documents were deleted."""
        if (ids is None) == (filter is None):
            raise ValueError("delete_documents: pass exactly one of ids or filter")
        if ids is None:
            return await self._run(calls.delete_documents(collection, None, filter))
        deleted = 0
        for batch in calls.batches(list(ids)):
            deleted += await self._run(calls.delete_documents(collection, batch, None))
        return deleted

    async def list_documents(
        self, collection: str, filter: Mapping[str, Any] | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """One page of the documents the filter matches, ordered by id."""
        return await self._run(calls.list_documents(collection, filter, limit, cursor))

    async def count_documents(self, collection: str, filter: Mapping[str, Any] | None = None) -> int:
        return await self._run(calls.count_documents(collection, filter))

    async def query(
        self,
        collection: str,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        model: str | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
    ) -> QueryResult:
        """The k nearest documents to `text`, or to `vector` made by `model` (which must be the read model)."""
        return await self._run(calls.query(collection, text, vector, model, k, filter))

    async def embed(self, model: str, texts: str | Sequence[str], input_type: str | None = None) -> Embeddings:
        """Vectors of the pinned `model` (a key, or "collection:<name>" for its read model);
        `input_type` "query" or "document" (the default) for models that embed them differently."""
        return await self._run(calls.embed(model, texts, input_type))

    async def bulk_load(
        self, collection: str, lines: Iterable[bytes] | AsyncIterable[bytes], *, index: str = "auto"
    ) -> BulkLoad:
        """`Client.bulk_load`: stream NDJSON lines into a collection (not retried; see there)."""
        call = calls.bulk_load(collection, index)
        headers = {**(self._options.headers(call) or {}), **calls.NDJSON}
        timeout = httpx.Timeout(self._options.timeout, read=None)
        try:
            response = await self._http.request(call.method, call.path, content=lines, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            raise unreachable(self._options.url, exc) from exc
        return result(call, response)

    # -- admin plane (admin_token) ----------------------------------------------------------

    async def status(self, collection: str) -> Status:
        return await self._run(calls.status(collection))

    async def plan(self, collection: str, to_model: str, sample: int | None = None) -> Report:
        return await self._run(calls.plan(collection, to_model, sample))

    async def start_migration(self, collection: str, to_model: str, storage: str = "vector") -> MigrationState:
        return await self._run(calls.start_migration(collection, to_model, storage))

    async def backfill(
        self, collection: str, action: str | None = None, max_rate: float | None | Keep = KEEP
    ) -> Report:
        """Pause or resume the backfill, or set its rate (documents/s; None removes the limit)."""
        return await self._run(calls.backfill(collection, action, max_rate))

    async def shadow(self, collection: str, model: str | None, sample_rate: float = 0.1) -> MigrationState:
        """Shadow a share of queries on `model` (None stops the shadow)."""
        return await self._run(calls.shadow(collection, model, sample_rate))

    async def verify(self, collection: str, sample: int = 200) -> Report:
        return await self._run(calls.verify(collection, sample))

    async def cutover(self, collection: str, model: str, force: bool = False) -> MigrationState:
        """Switch reads to `model` (the read-model route)."""
        return await self._run(calls.cutover(collection, model, force))

    async def rollback(self, collection: str) -> MigrationState:
        """Switch reads back to the migration's from-model."""
        from_model = (await self._run(calls.status(collection))).from_model
        if from_model is None:
            raise IllegalTransition(409, "illegal_transition", "no migration in flight: nothing to roll back to")
        return await self._run(calls.cutover(collection, from_model, False))

    async def retire(self, collection: str, model: str) -> MigrationState:
        return await self._run(calls.retire(collection, model))

    async def abort(self, collection: str) -> MigrationState:
        return await self._run(calls.abort(collection))

    async def fit_adapter(self, collection: str, max_pairs: int | None = None) -> Report:
        return await self._run(calls.fit_adapter(collection, max_pairs))

    async def adapter(self, collection: str) -> Report:
        return await self._run(calls.adapter(collection))

    async def read_mode(self, collection: str, mode: str, translate_vectors: bool | None = None) -> MigrationState:
        return await self._run(calls.read_mode(collection, mode, translate_vectors))

    async def adopt(
        self,
        collection: str,
        table: str,
        *,
        id_column: str,
        text_column: str,
        vector_column: str,
        model: str,
        metadata_columns: Sequence[str] = (),
        sample: int = 200,
        follow: bool = False,
        metadata_json_column: str | None = None,
        where: Mapping[str, str | int] | None = None,
    ) -> Report:
        """Adopt an existing pgvector table as `collection` (see `driftgate adopt`); `where` keeps
        the rows of one column value (`{"collection_id": uuid}` for one LangChain collection) and
        `metadata_json_column` names a json column that is the metadata itself."""
        spec = calls.adopt_body(
            table,
            id_column,
            text_column,
            vector_column,
            model,
            metadata_columns,
            sample,
            follow,
            metadata_json_column,
            where,
        )
        return await self._run(calls.adopt(collection, spec))

    async def adoption_status(self, collection: str) -> Mapping[str, Any] | None:
        """The adoption part of the status (None: the collection was not adopted)."""
        return (await self._run(calls.status(collection))).adoption

    async def stop_adoption(self, collection: str) -> Report:
        return await self._run(calls.stop_adoption(collection))
