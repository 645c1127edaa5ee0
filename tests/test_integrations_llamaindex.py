"""LlamaIndex: a `VectorStoreIndex` built from documents on `DriftgateVectorStore` (the gateway
embeds; the index computes no embedding), queried through its retriever and a query engine,
with MetadataFilters, deletion by source document, and the async path.
"""

from __future__ import annotations

import uuid

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from gateway.integrations.llamaindex import DriftgateVectorStore, gateway_embeds, to_driftgate_filter
from tests.helpers import L3
from tests.live import ServerThread

BOOKS = [
    Document(
        text="The lighthouse keeper logs every ship that passes the rocky cape at night.",
        doc_id="lighthouse",
        metadata={"genre": "fiction", "year": 1927, "tags": ["sea", "night"]},
    ),
    Document(
        text="Sourdough needs a lively starter, a long cold proof and a very hot oven.",
        doc_id="bread",
        metadata={"genre": "cooking", "year": 2011, "tags": ["baking"]},
    ),
    Document(
        text="Glaciers carve valleys as the ice moves slowly downhill over centuries.",
        doc_id="glaciers",
        metadata={"genre": "science", "year": 1999, "tags": ["ice"]},
    ),
]


@pytest.fixture
def index(threaded_gateway: ServerThread) -> VectorStoreIndex:
    store = DriftgateVectorStore(f"li_{uuid.uuid4().hex[:12]}", url=threaded_gateway.url, model=L3)
    storage = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(BOOKS, storage_context=storage, embed_model=gateway_embeds())


def test_an_index_built_from_documents_is_queried_through_the_gateway(index):
    store: DriftgateVectorStore = index.vector_store
    assert store.client.count_documents(store.collection) == 3
    hits = index.as_retriever(similarity_top_k=2).retrieve("how do I bake bread at home?")
    assert hits[0].node.ref_doc_id == "bread" and hits[0].node.metadata["genre"] == "cooking"
    assert hits[0].score >= hits[1].score and hits[0].node.get_content().startswith("Sourdough")

    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=1)
    response = engine.query("which book is about ships at night?")
    assert [n.node.ref_doc_id for n in response.source_nodes] == ["lighthouse"]


def test_metadata_filters_select_what_the_query_may_return(index):
    old = MetadataFilters(filters=[MetadataFilter(key="year", value=2000, operator=FilterOperator.LT)])
    hits = index.as_retriever(similarity_top_k=3, filters=old).retrieve("bread")
    assert {h.node.ref_doc_id for h in hits} == {"lighthouse", "glaciers"}
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="genre", value="cooking"),
            MetadataFilter(key="tags", value=["ice"], operator=FilterOperator.ANY),
        ],
        condition=FilterCondition.OR,
    )
    assert {h.node.ref_doc_id for h in index.as_retriever(similarity_top_k=3, filters=either).retrieve("x")} == {
        "bread",
        "glaciers",
    }
    negated = MetadataFilters(filters=[MetadataFilter(key="genre", value="fiction")], condition=FilterCondition.NOT)
    assert "lighthouse" not in {h.node.ref_doc_id for h in index.as_retriever(filters=negated).retrieve("ships")}


async def test_delete_by_source_document_and_the_async_query(index):
    store: DriftgateVectorStore = index.vector_store
    index.delete_ref_doc("glaciers")
    hits = await index.as_retriever(similarity_top_k=3).aretrieve("ice moving downhill")
    assert "glaciers" not in {h.node.ref_doc_id for h in hits} and len(hits) == 2
    await store.adelete("bread")
    result = await store.aquery(VectorStoreQuery(query_str="anything", similarity_top_k=5))
    assert [n.ref_doc_id for n in result.nodes] == ["lighthouse"] and len(result.similarities) == 1


def test_what_driftgate_cannot_do_is_refused_with_a_reason(index):
    store: DriftgateVectorStore = index.vector_store
    with pytest.raises(ValueError, match="query_str"):
        store.query(VectorStoreQuery(query_embedding=[0.1] * 384, similarity_top_k=1))
    with pytest.raises(ValueError, match="not supported"):
        to_driftgate_filter(MetadataFilters(filters=[MetadataFilter(key="t", value="x", operator="text_match")]))
