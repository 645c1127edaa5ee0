"""LlamaIndex: a vector store over a driftgate collection (add, delete, query with MetadataFilters).

    from llama_index.core import StorageContext, VectorStoreIndex
    from gateway.integrations.llamaindex import DriftgateVectorStore, gateway_embeds

    store = DriftgateVectorStore("notes", url="http://127.0.0.1:8080", model="all-MiniLM-L6-v2")
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=gateway_embeds()
    )
    index.as_retriever(similarity_top_k=3).retrieve("what changed?")

The gateway embeds each node's text with the collection's pinned model and embeds the query
string itself (`is_embedding_query` is False), so the index needs no embedding model:
`gateway_embeds()` tells LlamaIndex so (its own MockEmbedding: a 1-d placeholder, nothing
computed, never sent; without it LlamaIndex would load its default, OpenAI). Nodes are kept whole in the metadata (`_node_content`, as LlamaIndex's own stores
do), so retrieval returns the same node types and relationships.

Needs `pip install 'driftgate[llamaindex]'`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from gateway.client import AsyncClient, Client, QueryResult
from gateway.integrations._common import DEFAULT_URL, Gateway

_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",  # an array value containing any of the operands
    FilterOperator.CONTAINS: "$eq",  # an array value containing the operand
}


def gateway_embeds() -> BaseEmbedding:
    """The `embed_model` of an index on a `DriftgateVectorStore`: the gateway embeds nodes and
    queries with the collection's pinned model, so LlamaIndex computes nothing (a 1-d placeholder
    that the store never sends)."""
    return MockEmbedding(embed_dim=1)


class DriftgateVectorStore(BasePydanticVectorStore):
    """A driftgate collection as a LlamaIndex vector store; `model` creates it when missing."""

    stores_text: bool = True
    is_embedding_query: bool = False  # the gateway embeds the query text
    flat_metadata: bool = False
    collection: str

    _gateway: Gateway = PrivateAttr()

    def __init__(
        self,
        collection: str,
        *,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 30.0,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
    ) -> None:
        super().__init__(stores_text=True, collection=collection)
        self._gateway = Gateway(url, api_key, timeout, client, async_client)
        self._gateway.ensure_collection(collection, model)

    @classmethod
    def class_name(cls) -> str:
        return "DriftgateVectorStore"

    @property
    def client(self) -> Client:
        return self._gateway.sync

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert the nodes' texts (the gateway embeds them); a node's own embedding is not sent."""
        self.client.put_documents(self.collection, [_document(n) for n in nodes])
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        await self._gateway.aio.put_documents(self.collection, [_document(n) for n in nodes])
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        self.client.delete_documents(self.collection, filter={"ref_doc_id": ref_doc_id})

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await self._gateway.aio.delete_documents(self.collection, filter={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        if node_ids is not None:
            self.client.delete_documents(self.collection, ids=node_ids)
        if filters is not None:
            self.client.delete_documents(self.collection, filter=to_driftgate_filter(filters))

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The `similarity_top_k` nodes nearest to `query.query_str`, filtered by `query.filters`."""
        return _result(self.client.query(self.collection, **_query_args(query)))

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return _result(await self._gateway.aio.query(self.collection, **_query_args(query)))


def to_driftgate_filter(filters: MetadataFilters) -> dict[str, Any]:
    """LlamaIndex's MetadataFilters as driftgate's filter language."""
    parts = [to_driftgate_filter(f) if isinstance(f, MetadataFilters) else _condition(f) for f in filters.filters]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": {"$and": parts}}
    return {"$and": parts}


def _condition(f: MetadataFilter) -> dict[str, Any]:
    if f.operator == FilterOperator.IS_EMPTY:  # missing or null (an empty array is not told apart)
        return {f.key: {"$eq": None}}
    if f.operator == FilterOperator.ALL:
        return {"$and": [{f.key: {"$eq": v}} for v in f.value]}  # type: ignore[union-attr]
    if f.operator not in _OPERATORS:
        raise ValueError(
            f"filter operator {f.operator.value!r} is not supported by driftgate; use one of "
            f"{', '.join(o.value for o in [*_OPERATORS, FilterOperator.ALL, FilterOperator.IS_EMPTY])}"
        )
    return {f.key: {_OPERATORS[f.operator]: f.value}}


def _query_args(query: VectorStoreQuery) -> dict[str, Any]:
    if not query.query_str:
        raise ValueError(
            "driftgate searches by query text (the gateway embeds it with the collection's read model); "
            "the query has no query_str"
        )
    filters: dict[str, Any] | None = to_driftgate_filter(query.filters) if query.filters else None
    if query.doc_ids:
        restrict = {"ref_doc_id": {"$in": list(query.doc_ids)}}
        filters = {"$and": [filters, restrict]} if filters else restrict
    return {"text": query.query_str, "k": query.similarity_top_k, "filter": filters}


def _document(node: BaseNode) -> dict[str, Any]:
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    return {"id": node.node_id, "text": node.get_content(metadata_mode=MetadataMode.NONE), "metadata": metadata}


def _node(id_: str, text: str, metadata: dict[str, Any]) -> BaseNode:
    """The node as it was added; a document written another way (API, adoption) as a TextNode."""
    try:
        return metadata_dict_to_node(metadata, text)
    except (ValueError, KeyError):
        return TextNode(id_=id_, text=text, metadata=metadata)


def _result(result: QueryResult) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[_node(h.id, h.text, dict(h.metadata)) for h in result.hits],
        similarities=[h.score for h in result.hits],
        ids=[h.id for h in result.hits],
    )
