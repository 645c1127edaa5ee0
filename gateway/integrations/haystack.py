"""Haystack: a `DocumentStore` over a driftgate collection and a text retriever component.

    from gateway.integrations.haystack import DriftgateDocumentStore, DriftgateRetriever

    store = DriftgateDocumentStore("notes", url="http://127.0.0.1:8080", model="all-MiniLM-L6-v2")
    store.write_documents([Document(content="...", meta={"lang": "en"})])
    pipeline.add_component("retriever", DriftgateRetriever(store, top_k=5))
    pipeline.run({"retriever": {"query": "what changed?"}})  # {"documents": [...], "model": "..."}

The gateway embeds `Document.content` with the collection's pinned model; an `embedding` the
caller sets on a Document is not stored (documents come back without one), which is what lets
the collection migrate to another model under a running pipeline. Haystack's filters
(`{"field": "meta.x", "operator": ">", "value": 1}`, AND/OR/NOT) are translated into driftgate's
filter language; they filter on `meta.*` fields.

Needs `pip install 'driftgate[haystack]'`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.errors import FilterError
from haystack.utils import Secret, deserialize_secrets_inplace

from gateway.client import Client, QueryResult
from gateway.client import Document as GatewayDocument
from gateway.integrations._common import DEFAULT_URL, Gateway

_COMPARE = {"==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
_MEMBER = {"in": "$in", "not in": "$nin"}
_ORDERING = (">", ">=", "<", "<=")


class DriftgateDocumentStore:
    """A driftgate collection as a Haystack `DocumentStore` (count, filter, write, delete)."""

    def __init__(
        self,
        collection: str,
        *,
        url: str = DEFAULT_URL,
        api_key: Secret | None = Secret.from_env_var("DRIFTGATE_API_KEY", strict=False),
        model: str | None = None,
        timeout: float = 30.0,
        client: Client | None = None,
    ) -> None:
        self.collection, self.url, self.api_key, self.model, self.timeout = collection, url, api_key, model, timeout
        self.gateway = Gateway(url, api_key.resolve_value() if api_key else None, timeout, client)
        self.gateway.ensure_collection(collection, model)

    @property
    def client(self) -> Client:
        return self.gateway.sync

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            collection=self.collection,
            url=self.url,
            api_key=self.api_key.to_dict() if self.api_key else None,
            model=self.model,
            timeout=self.timeout,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftgateDocumentStore:
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    def count_documents(self) -> int:
        return self.client.count_documents(self.collection)

    async def count_documents_async(self) -> int:
        return await self.gateway.aio.count_documents(self.collection)

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents the filters match (all without filters), ordered by id."""
        where = to_driftgate_filter(filters) if filters else None
        return [_document(d) for d in self.client.iter_documents(self.collection, where)]

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        where = to_driftgate_filter(filters) if filters else None
        return [_document(d) async for d in self.gateway.aio.iter_documents(self.collection, where)]

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Write documents; an id already stored (or twice in `documents`) fails (NONE, FAIL), is
        left as it is (SKIP) or is replaced (OVERWRITE). Returns how many were written."""
        chosen = _by_policy(documents, policy)
        stored = set()
        if policy != DuplicatePolicy.OVERWRITE and chosen:
            stored = {d.id for d in self.client.get_documents(self.collection, list(chosen))}
        todo = self._to_write(chosen, stored, policy)
        if todo:
            self.client.put_documents(self.collection, todo)
        return len(todo)

    async def write_documents_async(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        chosen, client = _by_policy(documents, policy), self.gateway.aio
        stored = set()
        if policy != DuplicatePolicy.OVERWRITE and chosen:
            stored = {d.id for d in await client.get_documents(self.collection, list(chosen))}
        todo = self._to_write(chosen, stored, policy)
        if todo:
            await client.put_documents(self.collection, todo)
        return len(todo)

    def _to_write(
        self, chosen: dict[str, Document], stored: set[str], policy: DuplicatePolicy
    ) -> list[GatewayDocument]:
        if stored and policy not in (DuplicatePolicy.SKIP, DuplicatePolicy.OVERWRITE):
            raise DuplicateDocumentError(
                f"documents {sorted(stored)[:5]} already exist in {self.collection!r}; write with "
                "DuplicatePolicy.OVERWRITE to replace them or SKIP to keep them"
            )
        return [GatewayDocument(i, d.content or "", dict(d.meta)) for i, d in chosen.items() if i not in stored]

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete the documents of these ids; ids that do not exist are ignored."""
        if document_ids:
            self.client.delete_documents(self.collection, ids=document_ids)

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        if document_ids:
            await self.gateway.aio.delete_documents(self.collection, ids=document_ids)


@component
class DriftgateRetriever:
    """Retrieves documents by query *text*: the gateway embeds the query with the collection's read
    model. Besides `documents` (each with its cosine `score`) it outputs `model`, the model that
    served the search (it changes at a migration's cutover)."""

    def __init__(
        self, document_store: DriftgateDocumentStore, top_k: int = 10, filters: dict[str, Any] | None = None
    ) -> None:
        if not isinstance(document_store, DriftgateDocumentStore):
            raise ValueError("DriftgateRetriever needs a DriftgateDocumentStore")
        self.document_store, self.top_k, self.filters = document_store, top_k, filters

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self, document_store=self.document_store.to_dict(), top_k=self.top_k, filters=self.filters
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftgateRetriever:
        params = data["init_parameters"]
        params["document_store"] = DriftgateDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document], model=str)
    def run(self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None) -> dict[str, Any]:
        store = self.document_store
        return _retrieved(store.client.query(store.collection, text=query, **self._args(filters, top_k)))

    @component.output_types(documents=list[Document], model=str)
    async def run_async(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        store = self.document_store
        return _retrieved(await store.gateway.aio.query(store.collection, text=query, **self._args(filters, top_k)))

    def _args(self, filters: dict[str, Any] | None, top_k: int | None) -> dict[str, Any]:
        chosen = filters if filters is not None else self.filters
        return {"k": top_k or self.top_k, "filter": to_driftgate_filter(chosen) if chosen else None}


def _retrieved(result: QueryResult) -> dict[str, Any]:
    documents = [Document(id=h.id, content=h.text, meta=dict(h.metadata), score=h.score) for h in result.hits]
    return {"documents": documents, "model": result.model}


def to_driftgate_filter(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Haystack's filter syntax as driftgate's filter language; FilterError for a malformed one."""
    if not isinstance(filters, Mapping):
        raise FilterError(f"a filter is a dict, not {type(filters).__name__}")
    if "field" in filters:
        return _comparison(filters)
    if "operator" not in filters:
        raise FilterError("a logical filter needs 'operator' (AND, OR, NOT) and 'conditions'")
    if "conditions" not in filters or not isinstance(filters["conditions"], list):
        raise FilterError("a logical filter needs 'conditions', a list of filters")
    conditions = [to_driftgate_filter(c) for c in filters["conditions"]]
    operator = filters["operator"]
    if operator == "AND":
        return {"$and": conditions}
    if operator == "OR":
        return {"$or": conditions}
    if operator == "NOT":
        return {"$not": {"$and": conditions}}
    raise FilterError(f"unknown logical operator {operator!r}; use AND, OR or NOT")


def _comparison(condition: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("operator", "value"):
        if key not in condition:
            raise FilterError(f"a comparison needs 'field', 'operator' and 'value'; {key!r} is missing")
    field, operator, value = condition["field"], condition["operator"], condition["value"]
    if not isinstance(field, str) or not field.startswith("meta.") or len(field) <= len("meta."):
        raise FilterError(f"driftgate filters on metadata: write the field as 'meta.<key>', not {field!r}")
    path = field[len("meta.") :]
    if operator in _MEMBER:
        if not isinstance(value, list):
            raise FilterError(f"'{operator}' takes a list of values, not {type(value).__name__}")
        return {path: {_MEMBER[operator]: value}}
    if operator not in _COMPARE:
        raise FilterError(f"unknown comparison operator {operator!r}; use one of {', '.join([*_COMPARE, *_MEMBER])}")
    if operator in _ORDERING:
        if value is None:  # Haystack: an ordering with None matches nothing
            return {"$and": [{path: {"$exists": True}}, {path: {"$exists": False}}]}
        if isinstance(value, list | dict) or (isinstance(value, str) and not _is_date(value)):
            raise FilterError(
                f"'{operator}' compares numbers or ISO-8601 dates, not {value!r}; use == or in for other values"
            )
    return {path: {_COMPARE[operator]: value}}


def _is_date(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _by_policy(documents: list[Document], policy: DuplicatePolicy) -> dict[str, Document]:
    """The documents to consider by id (each checked): the last of repeated ids for OVERWRITE, the
    first for SKIP; a repeated id fails for NONE and FAIL."""
    if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
        raise ValueError("write_documents takes a list of haystack Document objects")
    for doc in documents:
        if not isinstance(doc.content, str) or not doc.content.strip():
            raise ValueError(
                f"document {doc.id} has no text content; driftgate embeds Document.content, so write "
                "documents with text (blobs and embeddings alone cannot be stored)"
            )
    chosen: dict[str, Document] = {}
    for doc in documents:
        if doc.id in chosen:
            if policy == DuplicatePolicy.SKIP:
                continue
            if policy != DuplicatePolicy.OVERWRITE:
                raise DuplicateDocumentError(f"document {doc.id} is twice in this write; write it once")
        chosen[doc.id] = doc
    return chosen


def _document(doc: GatewayDocument) -> Document:
    return Document(id=doc.id, content=doc.text, meta=dict(doc.metadata))
