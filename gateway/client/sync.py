"""The synchronous client (httpx): one pooled connection set, timeouts, retries of 503 and
connection failures. Method for method the same as `AsyncClient` (gateway/client/aio.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from tenacity import Retrying

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


class Client:
    """`Client(url, api_key=..., admin_token=...)`: the data plane and the admin plane of a gateway.

    Use it as a context manager (or call `close()`); it keeps connections open between calls.
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._options = Options(
            url.rstrip("/"), api_key, admin_token, timeout, retries, max_retry_wait, frozenset(retry_statuses)
        )
        self._http = httpx.Client(
            base_url=self._options.url, timeout=timeout, limits=self._options.limits(), transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _once(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, content=encode(call), headers=self._options.headers(call)
            )
        except httpx.TransportError as exc:
            raise unreachable(self._options.url, exc) from exc
        return result(call, response)

    def _run(self, call: Call[T]) -> T:
        try:
            return self._once(call)
        except Exception as exc:
            if not self._options.retryable(exc) or self._options.retries <= 0:
                raise
        for attempt in Retrying(**self._options.retry_policy()):
            with attempt:
                return self._once(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def iter_documents(
        self, collection: str, filter: Mapping[str, Any] | None = None, page_size: int = 100
    ) -> Iterator[Document]:
        """Every document the filter matches, page by page, ordered by id."""
        cursor: str | None = None
        while True:
            page = self.list_documents(collection, filter, page_size, cursor)
            yield from page.documents
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- data plane ---------------------------------------------------------------------

    def create_collection(self, name: str, model: str, storage: str | None = None) -> Collection:
        """Create a collection served by `model` (`created` False: it existed with that model);
        `storage` "halfvec" stores its vectors as float16 (docs/storage.md)."""
        return self._run(calls.create_collection(name, model, storage))

    def get_collection(self, name: str) -> Collection:
        return self._run(calls.get_collection(name))

    def put_document(
        self, collection: str, id: str, text: str, metadata: Mapping[str, Any] | None = None
    ) -> WriteResult:
        return self._run(calls.put_document(collection, id, text, metadata))

    def put_documents(
        self, collection: str, documents: Sequence[Document | Mapping[str, Any]], *, batch_size: int = calls.BATCH
    ) -> list[WriteResult]:
        """Upsert documents ({id, text, metadata} dicts or `Document`s), `batch_size` per request;
        each request is all or nothing."""
        results: list[WriteResult] = []
        for batch in calls.batches(documents, batch_size):
            got = self._run(calls.put_documents(collection, batch))
            results.extend(got)
        return results

    def get_document(self, collection: str, id: str) -> Document:
        return self._run(calls.get_document(collection, id))

    def get_documents(self, collection: str, ids: Sequence[str]) -> list[Document]:
        """The documents of `ids` that exist, in the order of `ids` (missing ones are left out)."""
        found: list[Document] = []
        for batch in calls.batches(list(ids)):
            got = self._run(calls.get_documents(collection, batch))
            found.extend(got)
        return found

    def delete_document(self, collection: str, id: str) -> bool:
        return self._run(calls.delete_document(collection, id))

    def delete_documents(
        self, collection: str, ids: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None
    ) -> int:
        """Delete by ids or by filter (exactly one); returns how many documents were deleted."""
        if (ids is None) == (filter is None):
            raise ValueError("delete_documents: pass exactly one of ids or filter")
        if ids is None:
            return self._run(calls.delete_documents(collection, None, filter))
        deleted = 0
        for batch in calls.batches(list(ids)):
            deleted += self._run(calls.delete_documents(collection, batch, None))
        return deleted

    def list_documents(
        self, collection: str, filter: Mapping[str, Any] | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """One page of the documents the filter matches, ordered by id."""
        return self._run(calls.list_documents(collection, filter, limit, cursor))

    def count_documents(self, collection: str, filter: Mapping[str, Any] | None = None) -> int:
        return self._run(calls.count_documents(collection, filter))

    def query(
        self,
        collection: str,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        model: str | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
    ) -> QueryResult:
        """The k nearest documents to `text`, or to `vector` made by `model` (which must be the read model)."""
        return self._run(calls.query(collection, text, vector, model, k, filter))

    def embed(self, model: str, texts: str | Sequence[str], input_type: str | None = None) -> Embeddings:
        """Vectors of the pinned `model` (a key, or "collection:<name>" for its read model);
        `input_type` "query" or "document" (the default) for models that embed them differently."""
        return self._run(calls.embed(model, texts, input_type))

    def bulk_load(self, collection: str, lines: Iterable[bytes], *, index: str = "auto") -> BulkLoad:
        """Stream NDJSON lines (`{"id", "text", "metadata"}`, each ending in a newline) into a
        collection; `index` "auto" (keep the HNSW index for a load small next to the collection, else as
        rebuild), "rebuild" (drop it, build it at the end), "later" or "keep".

        Not retried: a stream cannot be sent twice. A bad line raises `InvalidLine`, whose
        `committed_lines` says how many lines are stored; documents are upserts by id, so
        sending lines again is harmless. No read timeout: the answer comes when all is stored.
        """
        call = calls.bulk_load(collection, index)
        headers = {**(self._options.headers(call) or {}), **calls.NDJSON}
        timeout = httpx.Timeout(self._options.timeout, read=None)
        try:
            response = self._http.request(call.method, call.path, content=lines, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            raise unreachable(self._options.url, exc) from exc
        return result(call, response)

    # -- admin plane (admin_token) ----------------------------------------------------------

    def status(self, collection: str) -> Status:
        return self._run(calls.status(collection))

    def plan(self, collection: str, to_model: str, sample: int | None = None) -> Report:
        return self._run(calls.plan(collection, to_model, sample))

    def start_migration(self, collection: str, to_model: str, storage: str = "vector") -> MigrationState:
        return self._run(calls.start_migration(collection, to_model, storage))

    def backfill(self, collection: str, action: str | None = None, max_rate: float | None | Keep = KEEP) -> Report:
        """Pause or resume the backfill, or set its rate (documents/s; None removes the limit)."""
        return self._run(calls.backfill(collection, action, max_rate))

    def shadow(self, collection: str, model: str | None, sample_rate: float = 0.1) -> MigrationState:
        """Shadow a share of queries on `model` (None stops the shadow)."""
        return self._run(calls.shadow(collection, model, sample_rate))

    def verify(self, collection: str, sample: int = 200) -> Report:
        return self._run(calls.verify(collection, sample))

    def cutover(self, collection: str, model: str, force: bool = False) -> MigrationState:
        """Switch reads to `model` (the read-model route)."""
        return self._run(calls.cutover(collection, model, force))

    def rollback(self, collection: str) -> MigrationState:
        """Switch reads back to the migration's from-model."""
        from_model = (self._run(calls.status(collection))).from_model
        if from_model is None:
            raise IllegalTransition(409, "illegal_transition", "no migration in flight: nothing to roll back to")
        return self._run(calls.cutover(collection, from_model, False))

    def retire(self, collection: str, model: str) -> MigrationState:
        return self._run(calls.retire(collection, model))

    def abort(self, collection: str) -> MigrationState:
        return self._run(calls.abort(collection))

    def fit_adapter(self, collection: str, max_pairs: int | None = None) -> Report:
        """Fit the adapter between the migration's two models; its held-out figures (docs/adapter.md)."""
        return self._run(calls.fit_adapter(collection, max_pairs))

    def adapter(self, collection: str) -> Report:
        return self._run(calls.adapter(collection))

    def read_mode(self, collection: str, mode: str, translate_vectors: bool | None = None) -> MigrationState:
        """`native`, or `adapted`: new-model queries answered from the old model's index."""
        return self._run(calls.read_mode(collection, mode, translate_vectors))

    def adopt(
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
        return self._run(calls.adopt(collection, spec))

    def adoption_status(self, collection: str) -> Mapping[str, Any] | None:
        """The adoption part of the status (None: the collection was not adopted)."""
        return (self._run(calls.status(collection))).adoption

    def stop_adoption(self, collection: str) -> Report:
        return self._run(calls.stop_adoption(collection))
