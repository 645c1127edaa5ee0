"""LangChain: `DriftgateVectorStore` passes LangChain's standard `VectorStoreIntegrationTests`
(sync and async) against a real gateway, plus what the suite does not cover (scores, filters,
MMR, retriever, vectors and their model, errors).

The suite's `get_embeddings()` (a client-side fake embedding) is not used: the gateway embeds
with the collection's pinned model, which is the point. No test of the suite depends on the fake
embedding's geometry: each ranking it asserts puts first the document whose text equals the
query, which the real model does too (cosine 1), and the rest follows from what is stored.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from gateway.client import Client
from gateway.client.errors import CollectionNotFound, InvalidFilter, ModelMismatch
from gateway.integrations.langchain import DriftgateEmbeddings, DriftgateVectorStore
from tests.helpers import L3, L6
from tests.live import ServerThread


def fresh_store(gateway: ServerThread) -> DriftgateVectorStore:
    return DriftgateVectorStore(f"lc_{uuid.uuid4().hex[:12]}", url=gateway.url, model=L3)


class TestDriftgateVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, threaded_gateway: ServerThread) -> DriftgateVectorStore:
        """An empty store: a new collection per test."""
        return fresh_store(threaded_gateway)


ANIMALS = [
    Document(id="cat", page_content="the cat sleeps on the warm windowsill", metadata={"kind": "pet", "legs": 4}),
    Document(id="kitten", page_content="a kitten naps on the sunny windowsill", metadata={"kind": "pet", "legs": 4}),
    Document(id="shark", page_content="a shark swims in the deep cold ocean", metadata={"kind": "wild", "legs": 0}),
    Document(id="eagle", page_content="an eagle soars above the mountains", metadata={"kind": "wild", "legs": 2}),
]


@pytest.fixture
def animals(threaded_gateway: ServerThread) -> DriftgateVectorStore:
    store = fresh_store(threaded_gateway)
    assert store.add_documents(ANIMALS) == [d.id for d in ANIMALS]
    return store


def test_scores_are_cosine_similarities_best_first_and_filters_use_driftgates_language(animals):
    scored = animals.similarity_search_with_score("a cat sleeping on a windowsill", k=4)
    assert [d.id for d, _ in scored][:2] == ["cat", "kitten"]
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    wild = animals.similarity_search("a cat sleeping on a windowsill", k=4, filter={"kind": "wild"})
    assert {d.id for d in wild} == {"shark", "eagle"}
    legged = animals.similarity_search("animal", k=4, filter={"legs": {"$gte": 2}, "kind": {"$ne": "pet"}})
    assert [d.id for d in legged] == ["eagle"]
    relevance = animals.similarity_search_with_relevance_scores("a cat sleeping on a windowsill", k=2)
    assert all(0.0 <= r <= 1.0 for _, r in relevance)
    with pytest.raises(InvalidFilter):
        animals.similarity_search("cat", filter={"legs": {"$regex": "4"}})


def test_mmr_trades_relevance_for_diversity_in_the_serving_models_space(animals):
    plain = animals.similarity_search("a cat sleeping on a windowsill", k=2)
    diverse = animals.max_marginal_relevance_search("a cat sleeping on a windowsill", k=2, fetch_k=4, lambda_mult=0.1)
    assert [d.id for d in plain] == ["cat", "kitten"]
    assert diverse[0].id == "cat" and diverse[1].id != "kitten"  # the near-duplicate is passed over
    assert animals.max_marginal_relevance_search("cat", k=2, filter={"kind": "none"}) == []


async def test_async_mmr_delete_by_filter_and_the_retriever(animals):
    diverse = await animals.amax_marginal_relevance_search("a cat on a windowsill", k=2, fetch_k=4, lambda_mult=0.1)
    assert diverse[0].id == "cat" and diverse[1].id != "kitten"
    retriever = animals.as_retriever(search_kwargs={"k": 1, "filter": {"kind": "wild"}})
    assert [d.id for d in await retriever.ainvoke("a fish in the sea")] == ["shark"]
    assert [d.id for d in retriever.invoke("a bird in the sky")] == ["eagle"]
    await animals.adelete(filter={"kind": "pet"})
    assert await animals.aget_by_ids(["cat", "kitten", "eagle"]) == [ANIMALS[3]]


def test_a_vector_search_names_its_model_and_the_gateway_refuses_another_models_vector(animals):
    vector = animals.embeddings.embed_query("a shark in the ocean")
    assert [d.id for d in animals.similarity_search_by_vector(vector, k=1, model=L3)] == ["shark"]
    with pytest.raises(ValueError, match="must name the model"):
        animals.similarity_search_by_vector(vector, k=1)
    other = DriftgateEmbeddings(animals.client, L6).embed_query("a shark in the ocean")
    with pytest.raises(ModelMismatch):
        animals.similarity_search_by_vector(other, k=1, model=L6)


def test_embeddings_come_from_the_collections_pinned_model(animals, threaded_gateway):
    by_collection = np.array(animals.embeddings.embed_documents(["a cat", "a dog"]))
    by_key = np.array(DriftgateEmbeddings(Client(threaded_gateway.url), L3).embed_documents(["a cat", "a dog"]))
    assert by_collection.shape == (2, 384) and np.allclose(by_collection, by_key, atol=1e-6)


def test_from_texts_creates_the_collection_on_its_model_and_ignores_a_client_embedding(threaded_gateway):
    name = f"lc_{uuid.uuid4().hex[:12]}"
    store = DriftgateVectorStore.from_texts(
        ["alpha centauri is a star system", "a bakery sells bread"],
        None,
        [{"kind": "space"}, {"kind": "food"}],
        ids=["star", "bread"],
        collection=name,
        url=threaded_gateway.url,
        model=L3,
    )
    assert store.client.get_collection(name).read_model == L3
    assert [d.id for d in store.similarity_search("stars and planets", k=1)] == ["star"]
    with pytest.raises(ValueError, match="collection=<name>"):
        DriftgateVectorStore.from_texts(["x"], None, url=threaded_gateway.url)


def test_mistakes_are_refused_with_what_to_do(threaded_gateway, animals):
    with pytest.raises(CollectionNotFound, match="pass model="):
        DriftgateVectorStore("lc_never_created", url=threaded_gateway.url)
    with pytest.raises(ValueError, match="ids=\\[...\\] or filter"):
        animals.delete()
    with pytest.raises(ValueError, match="one id per document"):
        animals.add_texts(["a", "b"], ids=["only-one"])
    # a store on an existing collection keeps its model (no error for the app's first model)
    again = DriftgateVectorStore(animals.collection, url=threaded_gateway.url, model=L6)
    assert again.client.get_collection(animals.collection).read_model == L3
    assert len(again.get_by_ids([d.id for d in ANIMALS])) == 4


def test_the_gateway_and_its_client_import_no_framework():
    """The integrations are optional extras: the core and the client run without them."""
    code = (
        "import sys, gateway.api.app, gateway.cli, gateway.client, gateway.integrations; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'langchain_core', 'haystack', 'llama_index'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
