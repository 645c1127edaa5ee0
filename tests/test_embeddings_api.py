"""OpenAI-compatible embeddings, checked with the official openai client against the gateway."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.onnx import load_encoder
from tests.helpers import L3, L6, create_collection


@pytest.fixture
async def client(make_client, settings):
    """A gateway that serves L3 and L6 on /v1/embeddings although no collection uses them."""
    models = settings.models.model_copy(update={"serve": (L3, L6)})
    return await make_client(settings.model_copy(update={"models": models}))


def official_client(test_client) -> openai.AsyncOpenAI:
    base = str(test_client.make_url("/v1"))
    return openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)


async def test_the_official_client_gets_the_pinned_models_vectors_in_base64_by_default(client):
    oa = official_client(client)
    response = await oa.embeddings.create(model=L6, input=["hello world", "bonjour"])
    assert [d.index for d in response.data] == [0, 1]
    expected = load_encoder(CATALOG[L6], default_cache_dir()).encode(["hello world", "bonjour"]).vectors
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert response.model == L6 and response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens


async def test_float_encoding_and_a_single_string_input(client):
    response = await client.post("/v1/embeddings", json={"model": L3, "input": "one text", "encoding_format": "float"})
    body = await response.json()
    assert response.status == 200 and body["object"] == "list" and len(body["data"]) == 1
    assert len(body["data"][0]["embedding"]) == 384 and body["usage"]["prompt_tokens"] == 4


async def test_a_collection_name_resolves_to_its_current_read_model(client):
    await create_collection(client, "docs", L3)
    oa = official_client(client)
    response = await oa.embeddings.create(model="collection:docs", input="what does docs read with?")
    assert response.model == L3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "nope", "input": "x"}, 400, "unknown_model"),
        ({"model": "collection:missing", "input": "x"}, 404, "collection_not_found"),
        ({"model": L3, "input": []}, 400, "invalid_request"),
        ({"model": L3, "input": [""]}, 400, "empty_text"),
        ({"model": L3, "input": [1, 2, 3]}, 400, "invalid_request"),
        ({"model": L3, "input": "x", "encoding_format": "int8"}, 400, "invalid_request"),
        ({"model": L3, "input": "x", "dimensions": 256}, 400, "invalid_dimensions"),
        ({"model": L3, "input": ["x"] * 1001}, 400, "batch_too_large"),
    ],
)
async def test_bad_embedding_requests_are_refused_with_a_clear_code(client, body, status, code):
    response = await client.post("/v1/embeddings", json=body)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_the_official_client_surfaces_the_error_message(client):
    with pytest.raises(openai.BadRequestError) as caught:
        await official_client(client).embeddings.create(model="no-such-model", input="x")
    assert "unknown model" in str(caught.value)
