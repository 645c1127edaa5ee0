"""Haystack: `DriftgateDocumentStore` passes Haystack's `DocumentStoreBaseTests` (count, write with
every DuplicatePolicy, delete, and all the filter tests) against a real gateway; the retriever
component runs in a pipeline.

One difference from Haystack's in-memory store is by design: the gateway embeds
`Document.content` itself, so an `embedding` set by the caller is not stored and documents come
back without one. `assert_documents_are_equal` (the hook Haystack provides for store-specific
differences) therefore compares id, content, meta and that no client embedding came back, in id
order (the order driftgate lists documents in).
"""

from __future__ import annotations

import uuid

import pytest
from haystack import Document, Pipeline
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.errors import FilterError
from haystack.testing.document_store import DocumentStoreBaseTests
from haystack.testing.document_store_async import (
    CountDocumentsAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    WriteDocumentsAsyncTest,
)

from gateway.integrations.haystack import DriftgateDocumentStore, DriftgateRetriever, to_driftgate_filter
from tests.helpers import L3
from tests.live import ServerThread


def fresh_store(gateway: ServerThread) -> DriftgateDocumentStore:
    return DriftgateDocumentStore(f"hs_{uuid.uuid4().hex[:12]}", url=gateway.url, model=L3)


def same_documents(received: list[Document], expected: list[Document]) -> None:
    """Haystack's `assert_documents_are_equal` for a store that embeds itself (see the docstring)."""
    assert all(d.embedding is None for d in received), "the gateway embeds; no client embedding comes back"
    ordered = sorted(expected, key=lambda d: d.id)
    assert [(d.id, d.content, d.meta) for d in received] == [(d.id, d.content, d.meta) for d in ordered]


class TestDriftgateDocumentStoreStandard(DocumentStoreBaseTests):
    @pytest.fixture
    def document_store(self, threaded_gateway: ServerThread) -> DriftgateDocumentStore:
        """An empty store: a new collection per test."""
        return fresh_store(threaded_gateway)

    assert_documents_are_equal = staticmethod(same_documents)

    def test_write_documents(self, document_store: DriftgateDocumentStore) -> None:
        """Without a policy a duplicate id fails (as DuplicatePolicy.FAIL) and nothing is changed."""
        doc = Document(content="test doc", meta={"v": 1})
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError, match="OVERWRITE"):
            document_store.write_documents([Document(id=doc.id, content="changed")])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])


class TestDriftgateDocumentStoreStandardAsync(
    CountDocumentsAsyncTest, WriteDocumentsAsyncTest, DeleteDocumentsAsyncTest, FilterDocumentsAsyncTest
):
    """Haystack's async document store tests (the async twins of count, write, delete, filter)."""

    @pytest.fixture
    def document_store(self, threaded_gateway: ServerThread) -> DriftgateDocumentStore:
        return fresh_store(threaded_gateway)

    assert_documents_are_equal = staticmethod(same_documents)

    async def test_write_documents_async(self, document_store: DriftgateDocumentStore) -> None:
        doc = Document(content="test doc", meta={"v": 1})
        assert await document_store.write_documents_async([doc]) == 1
        with pytest.raises(DuplicateDocumentError, match="OVERWRITE"):
            await document_store.write_documents_async([Document(id=doc.id, content="changed")])
        self.assert_documents_are_equal(await document_store.filter_documents_async(), [doc])


def test_a_write_with_a_repeated_id_follows_the_policy_and_content_is_required(threaded_gateway):
    store = fresh_store(threaded_gateway)
    first, second = Document(id="x", content="first"), Document(id="x", content="second")
    with pytest.raises(DuplicateDocumentError, match="twice"):
        store.write_documents([first, second], policy=DuplicatePolicy.FAIL)
    assert store.count_documents() == 0
    assert store.write_documents([first, second], policy=DuplicatePolicy.SKIP) == 1
    assert store.filter_documents()[0].content == "first"
    assert store.write_documents([first, second], policy=DuplicatePolicy.OVERWRITE) == 1
    assert store.filter_documents()[0].content == "second"
    with pytest.raises(ValueError, match="Document.content"):
        store.write_documents([Document(content=None, meta={"a": 1})])
    assert store.count_documents() == 1


def test_the_retriever_serves_text_queries_in_a_pipeline_and_names_the_model(threaded_gateway):
    store = fresh_store(threaded_gateway)
    store.write_documents(
        [
            Document(id="tea", content="green tea is brewed at eighty degrees", meta={"drink": "hot"}),
            Document(id="coffee", content="espresso is pressed at nine bars", meta={"drink": "hot"}),
            Document(id="lemonade", content="lemonade is served with ice", meta={"drink": "cold"}),
        ]
    )
    pipeline = Pipeline()
    pipeline.add_component("retriever", DriftgateRetriever(store, top_k=2))
    out = pipeline.run({"retriever": {"query": "how hot should the water be for tea?"}})["retriever"]
    assert out["model"] == L3 and [d.id for d in out["documents"]][0] == "tea" and len(out["documents"]) == 2
    assert all(d.score is not None and -1 <= d.score <= 1 for d in out["documents"])
    cold = {"field": "meta.drink", "operator": "==", "value": "cold"}
    out = pipeline.run({"retriever": {"query": "tea", "filters": cold}})["retriever"]
    assert [d.id for d in out["documents"]] == ["lemonade"]

    # the retriever and its store serialise and come back working (Haystack loads only modules it is told to trust)
    again = Pipeline.loads(pipeline.dumps(), allowed_modules=["gateway.integrations.haystack"])
    restored = again.get_component("retriever")
    assert isinstance(restored, DriftgateRetriever) and restored.document_store.collection == store.collection
    assert again.run({"retriever": {"query": "espresso", "top_k": 1}})["retriever"]["documents"][0].id == "coffee"


async def test_the_retriever_runs_in_an_async_pipeline(threaded_gateway):
    store = fresh_store(threaded_gateway)
    await store.write_documents_async([Document(id="sea", content="waves break on the shore")])
    pipeline = Pipeline()
    pipeline.add_component("retriever", DriftgateRetriever(store, top_k=1))
    out = (await pipeline.run_async({"retriever": {"query": "the ocean"}}))["retriever"]
    assert out["model"] == L3 and [d.id for d in out["documents"]] == ["sea"]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"field": "content", "operator": "==", "value": "x"}, "meta."),
        ({"field": "meta.a", "operator": "~", "value": 1}, "unknown comparison operator"),
        ({"operator": "XOR", "conditions": []}, "unknown logical operator"),
        ({"field": "meta.a", "operator": ">", "value": "abc"}, "ISO-8601"),
        ("meta.a == 1", "a dict"),
    ],
)
def test_a_filter_driftgate_cannot_express_is_refused_before_any_request(bad, reason):
    with pytest.raises(FilterError, match=reason):
        to_driftgate_filter(bad)
