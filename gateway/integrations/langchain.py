"""LangChain: a `VectorStore` (sync and async) and an `Embeddings` over a driftgate collection.

    from gateway.integrations.langchain import DriftgateVectorStore

    store = DriftgateVectorStore("notes", url="http://127.0.0.1:8080", model="all-MiniLM-L6-v2")
    store.add_documents(docs, ids=[...])
    store.similarity_search("what changed?", k=4, filter={"lang": {"$in": ["en", "de"]}})
    retriever = store.as_retriever(search_type="mmr")

The gateway embeds: texts go over the wire, never vectors, so the collection can migrate to
another model while the app keeps running and its code stays the same. An `embedding` passed to
`from_texts` is ignored for that reason. Filters are driftgate's filter language (MongoDB
operators on metadata paths), the same dicts LangChain's PGVector takes.

Needs `pip install 'driftgate[langchain]'`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from gateway.client import AsyncClient, Client, Hit, QueryResult
from gateway.integrations._common import DEFAULT_URL, Gateway, new_ids


class DriftgateEmbeddings(Embeddings):
    """LangChain `Embeddings` from the gateway's pinned models (`/v1/embeddings`).

    `model` is a model key, or `collection:<name>` for whatever model that collection reads
    now: vectors that always match the collection's index, through a migration too.
    """

    def __init__(self, client: Client, model: str, async_client: AsyncClient | None = None) -> None:
        self.client, self.model, self._async = client, model, async_client

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _lists(self.client.embed(self.model, texts, "document").vectors)

    def embed_query(self, text: str) -> list[float]:
        return list(self.client.embed(self.model, [text], "query").vectors[0])

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if self._async is None:
            return await super().aembed_documents(texts)
        return _lists((await self._async.embed(self.model, texts, "document")).vectors)

    async def aembed_query(self, text: str) -> list[float]:
        if self._async is None:
            return await super().aembed_query(text)
        return list((await self._async.embed(self.model, [text], "query")).vectors[0])


class DriftgateVectorStore(VectorStore):
    """A driftgate collection as a LangChain `VectorStore`.

    The gateway is `url` (with `api_key`), or the `client`/`async_client` given. `model` creates
    the collection when it does not exist yet (an existing one keeps the model it reads).
    """

    def __init__(
        self,
        collection: str,
        *,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        model: str | None = None,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.collection = collection
        self.gateway = Gateway(url, api_key, timeout, client, async_client)
        self.gateway.ensure_collection(collection, model)

    @property
    def client(self) -> Client:
        return self.gateway.sync

    @property
    def embeddings(self) -> Embeddings:
        """The collection's current read model, as `Embeddings` (for callers that need vectors)."""
        return DriftgateEmbeddings(self.client, f"collection:{self.collection}", self.gateway.async_client)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # scores are cosine similarities already (higher is closer); clip to LangChain's [0, 1]
        return lambda score: max(0.0, min(1.0, score))

    # -- writes --------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Upsert the texts (an existing id is overwritten); returns their ids."""
        documents, ids = _documents(texts, metadatas, ids)
        self.client.put_documents(self.collection, documents)
        return ids

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        documents, ids = _documents(texts, metadatas, ids)
        await self.gateway.aio.put_documents(self.collection, documents)
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by `ids`, or by `filter=` (driftgate's filter language); missing ids are fine."""
        self.client.delete_documents(self.collection, **_delete_args(ids, kwargs))
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        await self.gateway.aio.delete_documents(self.collection, **_delete_args(ids, kwargs))
        return True

    # -- reads ---------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_document(d.id, d.text, d.metadata) for d in self.client.get_documents(self.collection, ids)]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        found = await self.gateway.aio.get_documents(self.collection, ids)
        return [_document(d.id, d.text, d.metadata) for d in found]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The k closest documents with their cosine similarity (higher is closer)."""
        return _scored(self.client.query(self.collection, text=query, k=k, filter=filter))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return _scored(await self.gateway.aio.query(self.collection, text=query, k=k, filter=filter))

    def similarity_search(self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict | None = None, *, model: str | None = None, **kwargs: Any
    ) -> list[Document]:
        """Search with a vector the caller made: `model` must name the model that made it, and the
        gateway refuses it (409 model_mismatch) unless that is the collection's read model."""
        result = self.client.query(self.collection, vector=embedding, model=_vector_model(model), k=k, filter=filter)
        return [doc for doc, _ in _scored(result)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict | None = None, *, model: str | None = None, **kwargs: Any
    ) -> list[Document]:
        result = await self.gateway.aio.query(
            self.collection, vector=embedding, model=_vector_model(model), k=k, filter=filter
        )
        return [doc for doc, _ in _scored(result)]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR over the `fetch_k` nearest: the candidates and the query are re-embedded by the
        model that served the search (named in its answer), so both sides share one space even
        while the collection migrates."""
        result = self.client.query(self.collection, text=query, k=fetch_k, filter=filter)
        if not result.hits:
            return []
        query_vec = self.client.embed(result.model, [query], "query").vectors
        hit_vecs = self.client.embed(result.model, [h.text for h in result.hits], "document").vectors
        return _mmr(result.hits, query_vec, hit_vecs, k, lambda_mult)

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        client = self.gateway.aio
        result = await client.query(self.collection, text=query, k=fetch_k, filter=filter)
        if not result.hits:
            return []
        query_vec = (await client.embed(result.model, [query], "query")).vectors
        hit_vecs = (await client.embed(result.model, [h.text for h in result.hits], "document")).vectors
        return _mmr(result.hits, query_vec, hit_vecs, k, lambda_mult)

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        collection: str | None = None,
        **kwargs: Any,
    ) -> DriftgateVectorStore:
        """A store on `collection` holding `texts`; `kwargs` as the constructor's (url, model, ...).
        `embedding` is ignored: the gateway embeds with the collection's pinned model."""
        if collection is None:
            raise ValueError("from_texts needs collection=<name> (and model=<key> to create it, url=<gateway>)")
        store = cls(collection, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _documents(
    texts: Iterable[str], metadatas: list[dict] | None, ids: Sequence[str | None] | None
) -> tuple[list[dict], list[str]]:
    texts = list(texts)
    if metadatas is not None and len(metadatas) != len(texts):
        raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts; pass one per text (or none)")
    ids = new_ids(ids, len(texts))
    metas = metadatas or [{}] * len(texts)
    return [{"id": i, "text": t, "metadata": m or {}} for i, t, m in zip(ids, texts, metas, strict=True)], ids


def _delete_args(ids: list[str] | None, kwargs: dict) -> dict:
    if ids is None and kwargs.get("filter") is None:
        raise ValueError("delete needs ids=[...] or filter={...}; driftgate does not delete a whole collection here")
    return {"ids": ids} if ids is not None else {"filter": kwargs["filter"]}


def _vector_model(model: str | None) -> str:
    if model is None:
        raise ValueError(
            "a search by vector must name the model that made the vector (model=<key>); the gateway "
            "never compares vectors of two models. Search by text to let the gateway embed the query."
        )
    return model


def _document(id_: str, text: str, metadata: Any) -> Document:
    return Document(id=id_, page_content=text, metadata=dict(metadata))


def _scored(result: QueryResult) -> list[tuple[Document, float]]:
    return [(_document(h.id, h.text, h.metadata), h.score) for h in result.hits]


def _mmr(hits: Sequence[Hit], query_vec: Any, hit_vecs: Any, k: int, lambda_mult: float) -> list[Document]:
    chosen = maximal_marginal_relevance(np.asarray(query_vec[0], dtype=np.float32), _lists(hit_vecs), lambda_mult, k)
    return [_document(hits[i].id, hits[i].text, hits[i].metadata) for i in chosen]


def _lists(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    return [list(v) for v in vectors]
