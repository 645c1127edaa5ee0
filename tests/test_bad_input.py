"""Bad input on the data plane: every refusal is a 4xx with the JSON error body, and changes nothing.

Each test sends one kind of bad request against the real database and the real model, checks
the status, the exact error body shape and its code, and then reads the state back (document
count, the seeded document, the collections registered in the database) to show that the
refused request left no trace.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import asyncpg
import pytest

from gateway.config import load_settings
from tests.helpers import L3, create_collection

DIM = 384
UNIT = [0.0] * (DIM - 1) + [1.0]  # a valid query vector for L3
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
DOCS = "/v1/collections/docs"


# -- helpers --------------------------------------------------------------------------------


async def assert_error(response, status: int, code: str) -> dict:
    """The answer is `status` with exactly {"error": {"code": code, "message": <non-empty str>}}."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and SNAKE_CASE.fullmatch(body["error"]["code"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
    assert body["error"]["code"] == code, body
    return body


async def document_count(client, name: str = "docs") -> int:
    response = await client.get(f"/v1/collections/{name}")
    assert response.status == 200, await response.text()
    return (await response.json())["documents"]


async def snapshot(client) -> tuple[int, dict]:
    """What a refused write must not change: the document count and the seeded document."""
    keep = await client.get(f"{DOCS}/documents/keep")
    assert keep.status == 200, await keep.text()
    return await document_count(client), await keep.json()


async def collections_in_db(dsn: str) -> tuple[list[str], list[str]]:
    """The collections registered in the database and the per-collection schemas that exist."""
    conn = await asyncpg.connect(dsn)
    try:
        names = [r["name"] for r in await conn.fetch("SELECT name FROM driftgate.collections ORDER BY name")]
        schemas = [
            r["nspname"]
            for r in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dgc\\_%' ORDER BY 1")
        ]
    finally:
        await conn.close()
    return names, schemas


async def assert_absent(client, doc_id: str, collection: str = "docs") -> None:
    response = await client.get(f"/v1/collections/{collection}/documents/{quote(doc_id, safe='')}")
    await assert_error(response, 404, "document_not_found")


def limited_settings(**sections):
    """Test settings with some limits or server values overridden (same pool size as the fixture)."""
    return load_settings(None, database={"pool_min": 1, "pool_max": 4}, **sections)


@pytest.fixture
async def seeded(client):
    """The default client with collection `docs` holding one document, `keep`."""
    await create_collection(client)
    response = await client.put(f"{DOCS}/documents/keep", json={"text": "the original text", "metadata": {"n": 1}})
    assert response.status == 200, await response.text()
    return client


async def send(client, method: str, path: str, body=None, *, raw: str | bytes | None = None):
    if raw is not None:
        return await client.request(method, path, data=raw, headers={"Content-Type": "application/json"})
    if body is None:
        return await client.request(method, path)
    return await client.request(method, path, json=body)


# Every data-plane endpoint that takes a body, with a valid body for it.
BODY_ENDPOINTS = {
    "put collection": ("PUT", "/v1/collections/fresh", {"model": L3}),
    "put document": ("PUT", f"{DOCS}/documents/new", {"text": "new text"}),
    "post batch": ("POST", f"{DOCS}/documents", {"documents": [{"id": "new", "text": "new text"}]}),
    "query": ("POST", f"{DOCS}/query", {"text": "a query"}),
}


async def assert_nothing_changed(client, dsn: str, before: tuple[int, dict]) -> None:
    assert await snapshot(client) == before
    await assert_absent(client, "new")
    names, schemas = await collections_in_db(dsn)
    assert names == ["docs"] and schemas == ["dgc_docs"]


# -- bodies that are not a JSON object ------------------------------------------------------


NOT_AN_OBJECT = {
    "malformed JSON": (b'{"text": "unterminated', "invalid_json"),
    "not JSON at all": (b"text=hello", "invalid_json"),
    "an empty body": (b"", "invalid_json"),
    "invalid UTF-8": (b'{"text": "caf\xe9"}', "invalid_json"),
    "a JSON list": (b'[{"text": "hello"}]', "invalid_request"),
    "a JSON string": (b'"hello"', "invalid_request"),
    "a JSON number": (b"42", "invalid_request"),
    "JSON null": (b"null", "invalid_request"),
}


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
@pytest.mark.parametrize("case", list(NOT_AN_OBJECT))
async def test_a_body_that_is_not_a_json_object_is_refused_and_changes_nothing(seeded, dsn, endpoint, case):
    method, path, _ = BODY_ENDPOINTS[endpoint]
    raw, code = NOT_AN_OBJECT[case]
    before = await snapshot(seeded)
    await assert_error(await send(seeded, method, path, raw=raw), 400, code)
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_a_deeply_nested_json_body_is_refused_with_400_not_500(seeded, dsn, endpoint):
    method, path, _ = BODY_ENDPOINTS[endpoint]
    before = await snapshot(seeded)
    raw = '{"text": "a", "metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    await assert_error(await send(seeded, method, path, raw=raw), 400, "invalid_json")
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_an_unknown_extra_field_in_the_body_is_refused(seeded, dsn, endpoint):
    method, path, body = BODY_ENDPOINTS[endpoint]
    before = await snapshot(seeded)
    await assert_error(await send(seeded, method, path, {**body, "surprise": 1}), 400, "invalid_request")
    await assert_nothing_changed(seeded, dsn, before)


# -- single document writes -----------------------------------------------------------------


BAD_DOCUMENTS = {
    "missing text": ({"metadata": {"a": 1}}, "invalid_request"),
    "an empty object": ({}, "invalid_request"),
    "empty text": ({"text": ""}, "invalid_request"),
    "whitespace-only text": ({"text": " \t\n\u00a0 "}, "empty_text"),
    "text as a number": ({"text": 42}, "invalid_request"),
    "text as a list": ({"text": ["a", "b"]}, "invalid_request"),
    "text as null": ({"text": None}, "invalid_request"),
    "text with a NUL character": ({"text": "before\u0000after"}, "invalid_text"),
    "metadata as a list": ({"text": "hello", "metadata": [1, 2]}, "invalid_request"),
    "metadata as a string": ({"text": "hello", "metadata": "lang=en"}, "invalid_request"),
    "metadata as null": ({"text": "hello", "metadata": None}, "invalid_request"),
    "a NUL character in a metadata value": ({"text": "hello", "metadata": {"k": "a\u0000b"}}, "invalid_text"),
    "a NUL character in a metadata key": ({"text": "hello", "metadata": {"k\u0000": 1}}, "invalid_text"),
    "a nested NUL character in metadata": ({"text": "hello", "metadata": {"k": [{"x": "\u0000"}]}}, "invalid_text"),
    "an id field in the body": ({"text": "hello", "id": "other"}, "invalid_request"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
async def test_a_bad_document_is_refused_and_neither_creates_nor_changes_a_document(seeded, dsn, case):
    body, code = BAD_DOCUMENTS[case]
    before = await snapshot(seeded)
    await assert_error(await seeded.put(f"{DOCS}/documents/new", json=body), 400, code)
    await assert_error(await seeded.put(f"{DOCS}/documents/keep", json=body), 400, code)
    await assert_nothing_changed(seeded, dsn, before)


async def test_metadata_holding_a_literal_backslash_u0000_text_is_stored_and_not_taken_for_a_nul(seeded):
    metadata = {"path": "C:\\u0000\\file"}  # a backslash, then the letters u0000: no NUL character
    response = await seeded.put(f"{DOCS}/documents/new", json={"text": "hello", "metadata": metadata})
    assert response.status == 200, await response.text()
    assert (await (await seeded.get(f"{DOCS}/documents/new")).json())["metadata"] == metadata


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_a_non_finite_json_constant_in_metadata_is_refused_as_invalid_json(seeded, dsn, constant):
    before = await snapshot(seeded)
    raw = '{"text": "hello", "metadata": {"x": %s}}' % constant
    await assert_error(await send(seeded, "PUT", f"{DOCS}/documents/new", raw=raw), 400, "invalid_json")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_number_that_overflows_to_infinity_in_metadata_is_refused_with_400_not_500(seeded, dsn):
    before = await snapshot(seeded)
    raw = '{"text": "hello", "metadata": {"x": 1e999}}'
    await assert_error(await send(seeded, "PUT", f"{DOCS}/documents/new", raw=raw), 400, "invalid_number")
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize(
    "raw",
    [
        '{"text": "broken \\ud800 surrogate"}',
        '{"documents": [{"id": "new", "text": "broken \\udfff surrogate"}]}',
    ],
    ids=["text of a single document", "text in a batch"],
)
async def test_a_lone_surrogate_in_a_text_is_refused_as_invalid_request(seeded, dsn, raw):
    before = await snapshot(seeded)
    method, path = ("POST", f"{DOCS}/documents") if "documents" in raw else ("PUT", f"{DOCS}/documents/new")
    await assert_error(await send(seeded, method, path, raw=raw), 400, "invalid_request")
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize(
    "method, path, raw",
    [
        ("PUT", f"{DOCS}/documents/new", '{"text": "hello", "metadata": {"k": "a\\ud800b"}}'),
        ("POST", f"{DOCS}/query", '{"text": "hello", "filter": {"k": "a\\ud800b"}}'),
    ],
    ids=["in metadata", "in a filter"],
)
async def test_a_lone_surrogate_in_metadata_or_a_filter_is_refused_with_400_not_500(seeded, dsn, method, path, raw):
    before = await snapshot(seeded)
    await assert_error(await send(seeded, method, path, raw=raw), 400, "invalid_text")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_batch_with_a_lone_surrogate_in_an_id_is_refused_and_writes_none(seeded, dsn):
    before = await snapshot(seeded)
    raw = '{"documents": [{"id": "new", "text": "fine"}, {"id": "a\\ud800b", "text": "fine"}]}'
    await assert_error(await send(seeded, "POST", f"{DOCS}/documents", raw=raw), 400, "invalid_document_id")
    await assert_nothing_changed(seeded, dsn, before)


async def test_text_over_the_configured_limit_is_refused_and_text_at_the_limit_is_accepted(make_client):
    client = await make_client(limited_settings(limits={"max_text_chars": 50}))
    await create_collection(client)
    await assert_error(await client.put(f"{DOCS}/documents/long", json={"text": "x" * 51}), 400, "text_too_long")
    await assert_error(
        await client.post(
            f"{DOCS}/documents",
            json={"documents": [{"id": "ok", "text": "short"}, {"id": "long", "text": "y" * 51}]},
        ),
        400,
        "text_too_long",
    )
    await assert_error(await client.post(f"{DOCS}/query", json={"text": "z" * 51}), 400, "text_too_long")
    assert await document_count(client) == 0
    await assert_absent(client, "long")
    await assert_absent(client, "ok")
    assert (await client.put(f"{DOCS}/documents/edge", json={"text": "x" * 50})).status == 200
    assert await document_count(client) == 1


async def test_metadata_over_the_configured_limit_is_refused_on_writes_and_as_a_filter(make_client):
    client = await make_client(limited_settings(limits={"max_metadata_bytes": 64}))
    await create_collection(client)
    big = {"k": "v" * 100}
    await assert_error(
        await client.put(f"{DOCS}/documents/a", json={"text": "hi", "metadata": big}), 400, "metadata_too_large"
    )
    await assert_error(
        await client.post(f"{DOCS}/documents", json={"documents": [{"id": "a", "text": "hi", "metadata": big}]}),
        400,
        "metadata_too_large",
    )
    await assert_error(
        await client.post(f"{DOCS}/query", json={"text": "hi", "filter": big}), 400, "metadata_too_large"
    )
    assert await document_count(client) == 0


# -- document ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc_id", ["x" * 257, "\u00e9" * 257], ids=["257 ascii characters", "257 non-ascii characters, percent-encoded"]
)
async def test_a_document_id_over_256_characters_is_refused_on_every_document_endpoint(seeded, dsn, doc_id):
    before = await snapshot(seeded)
    path = f"{DOCS}/documents/{quote(doc_id, safe='')}"
    await assert_error(await seeded.put(path, json={"text": "hello"}), 400, "invalid_document_id")
    await assert_error(await seeded.get(path), 400, "invalid_document_id")
    await assert_error(await seeded.delete(path), 400, "invalid_document_id")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_document_id_of_256_characters_is_accepted(seeded):
    doc_id = "x" * 256
    assert (await seeded.put(f"{DOCS}/documents/{doc_id}", json={"text": "hello"})).status == 200
    assert (await (await seeded.get(f"{DOCS}/documents/{doc_id}")).json())["id"] == doc_id


async def test_a_batch_with_a_257_character_id_is_refused_as_invalid_document_id(seeded, dsn):
    before = await snapshot(seeded)
    documents = [{"id": "new", "text": "fine"}, {"id": "x" * 257, "text": "fine"}]
    response = await seeded.post(f"{DOCS}/documents", json={"documents": documents})
    await assert_error(response, 400, "invalid_document_id")
    await assert_nothing_changed(seeded, dsn, before)


NON_PRINTABLE_IDS = {
    "a control character": "a\u0001b",
    "a newline": "line\nbreak",
    "a tab": "a\tb",
    "a NUL character": "a\u0000b",
    "DEL": "a\u007fb",
    "a zero-width space": "a\u200bb",
    "a line separator": "a\u2028b",
}


@pytest.mark.parametrize("case", list(NON_PRINTABLE_IDS))
async def test_a_batch_with_a_non_printable_id_is_refused_and_writes_none(seeded, dsn, case):
    before = await snapshot(seeded)
    documents = [{"id": "new", "text": "fine"}, {"id": NON_PRINTABLE_IDS[case], "text": "fine"}]
    response = await seeded.post(f"{DOCS}/documents", json={"documents": documents})
    await assert_error(response, 400, "invalid_document_id")
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize("encoded", ["a%01b", "a%0Ab", "a%7Fb", "%E2%80%8B"], ids=["SOH", "newline", "DEL", "ZWSP"])
async def test_a_percent_encoded_non_printable_id_in_the_path_is_refused(seeded, dsn, encoded):
    before = await snapshot(seeded)
    path = f"{DOCS}/documents/{encoded}"
    await assert_error(await seeded.put(path, json={"text": "hello"}), 400, "invalid_document_id")
    await assert_error(await seeded.get(path), 400, "invalid_document_id")
    await assert_error(await seeded.delete(path), 400, "invalid_document_id")
    await assert_nothing_changed(seeded, dsn, before)


# -- batches ----------------------------------------------------------------------------------


BAD_BATCHES = {
    "documents not a list": ({"documents": {"id": "new", "text": "hi"}}, "invalid_request"),
    "documents as a string": ({"documents": "new"}, "invalid_request"),
    "documents missing": ({}, "invalid_request"),
    "an empty documents list": ({"documents": []}, "invalid_request"),
    "a document that is not an object": ({"documents": ["hello"]}, "invalid_request"),
    "a document without an id": ({"documents": [{"text": "hello"}]}, "invalid_request"),
    "a document with an empty id": ({"documents": [{"id": "", "text": "hello"}]}, "invalid_document_id"),
    "a document with a numeric id": ({"documents": [{"id": 7, "text": "hello"}]}, "invalid_request"),
    "a document without text": ({"documents": [{"id": "new"}]}, "invalid_request"),
    "a document with metadata as a list": (
        {"documents": [{"id": "new", "text": "hi", "metadata": ["x"]}]},
        "invalid_request",
    ),
    "a document with an unknown field": (
        {"documents": [{"id": "new", "text": "hi", "vector": [1]}]},
        "invalid_request",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
async def test_a_malformed_batch_is_refused_and_writes_nothing(seeded, dsn, case):
    body, code = BAD_BATCHES[case]
    before = await snapshot(seeded)
    await assert_error(await seeded.post(f"{DOCS}/documents", json=body), 400, code)
    await assert_nothing_changed(seeded, dsn, before)


ONE_BAD_DOCUMENT = {
    "an empty text": ({"text": ""}, "invalid_request"),
    "a whitespace-only text": ({"text": "   "}, "empty_text"),
    "text as a number": ({"text": 3}, "invalid_request"),
    "a NUL character in the text": ({"text": "a\u0000"}, "invalid_text"),
    "a NUL character in the metadata": ({"text": "fine", "metadata": {"k": "\u0000"}}, "invalid_text"),
    "metadata as a string": ({"text": "fine", "metadata": "x"}, "invalid_request"),
}


@pytest.mark.parametrize("case", list(ONE_BAD_DOCUMENT))
async def test_a_batch_of_three_with_one_bad_document_writes_none(client, case):
    await create_collection(client)
    fields, code = ONE_BAD_DOCUMENT[case]
    documents = [
        {"id": "one", "text": "first good document"},
        {"id": "two", **fields},
        {"id": "three", "text": "third good document"},
    ]
    await assert_error(await client.post(f"{DOCS}/documents", json={"documents": documents}), 400, code)
    assert await document_count(client) == 0
    for doc_id in ("one", "two", "three"):
        await assert_absent(client, doc_id)


async def test_a_batch_with_a_duplicate_id_is_refused_and_writes_none(client):
    await create_collection(client)
    documents = [
        {"id": "one", "text": "first"},
        {"id": "two", "text": "second"},
        {"id": "one", "text": "first again"},
    ]
    await assert_error(await client.post(f"{DOCS}/documents", json={"documents": documents}), 400, "duplicate_id")
    assert await document_count(client) == 0
    await assert_absent(client, "one")
    await assert_absent(client, "two")


async def test_a_batch_of_1001_documents_is_refused_as_too_large_and_writes_none(seeded, dsn):
    before = await snapshot(seeded)
    documents = [{"id": f"d{i}", "text": f"document {i}"} for i in range(1001)]
    await assert_error(await seeded.post(f"{DOCS}/documents", json={"documents": documents}), 400, "batch_too_large")
    await assert_nothing_changed(seeded, dsn, before)
    await assert_absent(seeded, "d0")


# -- body size --------------------------------------------------------------------------------


BIG = "x" * 10_000  # 10 kB of text against a 2 kB body limit
OVERSIZED = {
    "put collection": {"model": BIG},
    "put document": {"text": BIG},
    "post batch": {"documents": [{"id": "new", "text": BIG}]},
    "query": {"text": BIG},
}


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_a_body_over_the_size_limit_is_refused_with_413_and_changes_nothing(make_client, dsn, endpoint):
    client = await make_client(limited_settings(server={"max_body_bytes": 2048}))
    await create_collection(client)
    assert (await client.put(f"{DOCS}/documents/keep", json={"text": "the original text"})).status == 200
    before = await snapshot(client)
    method, path, _ = BODY_ENDPOINTS[endpoint]
    await assert_error(await send(client, method, path, OVERSIZED[endpoint]), 413, "payload_too_large")
    await assert_nothing_changed(client, dsn, before)


# -- collections ----------------------------------------------------------------------------


BAD_NAMES = {
    "uppercase": "Docs",
    "all uppercase": "DOCS",
    "starting with a digit": "1docs",
    "starting with an underscore": "_docs",
    "49 characters": "a" * 49,
    "with a dash": "my-docs",
    "with a dot": "my.docs",
    "non-ascii": "d%C3%B6cs",
    "with a space": "my%20docs",
}

NAME_OPERATIONS = {
    "put collection": ("PUT", "", {"model": L3}),
    "get collection": ("GET", "", None),
    "put document": ("PUT", "/documents/a", {"text": "hello"}),
    "post batch": ("POST", "/documents", {"documents": [{"id": "a", "text": "hello"}]}),
    "get document": ("GET", "/documents/a", None),
    "delete document": ("DELETE", "/documents/a", None),
    "query by text": ("POST", "/query", {"text": "hello"}),
    "query by vector": ("POST", "/query", {"vector": UNIT, "model": L3}),
}


@pytest.mark.parametrize("operation", list(NAME_OPERATIONS))
@pytest.mark.parametrize("case", list(BAD_NAMES))
async def test_an_invalid_collection_name_is_refused_and_creates_nothing(seeded, dsn, case, operation):
    method, suffix, body = NAME_OPERATIONS[operation]
    before = await snapshot(seeded)
    response = await send(seeded, method, f"/v1/collections/{BAD_NAMES[case]}{suffix}", body)
    await assert_error(response, 400, "invalid_collection_name")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_collection_name_of_48_characters_is_accepted(client):
    await create_collection(client, "a" * 48)
    assert (await client.get(f"/v1/collections/{'a' * 48}")).status == 200


BAD_COLLECTION_BODIES = {
    "an unknown model": ({"model": "no-such-model"}, "unknown_model"),
    "an empty model": ({"model": ""}, "invalid_request"),
    "a missing model": ({}, "invalid_request"),
    "a numeric model": ({"model": 384}, "invalid_request"),
    "a model given as a list": ({"model": [L3]}, "invalid_request"),
}


@pytest.mark.parametrize("case", list(BAD_COLLECTION_BODIES))
async def test_creating_a_collection_with_a_bad_model_is_refused_and_creates_nothing(client, dsn, case):
    body, code = BAD_COLLECTION_BODIES[case]
    await assert_error(await client.put("/v1/collections/fresh", json=body), 400, code)
    await assert_error(await client.get("/v1/collections/fresh"), 404, "collection_not_found")
    assert await collections_in_db(dsn) == ([], [])


UNKNOWN_COLLECTION_OPERATIONS = {k: v for k, v in NAME_OPERATIONS.items() if k != "put collection"}


@pytest.mark.parametrize("operation", list(UNKNOWN_COLLECTION_OPERATIONS))
async def test_an_unknown_collection_is_answered_with_404_and_is_not_created(seeded, dsn, operation):
    method, suffix, body = UNKNOWN_COLLECTION_OPERATIONS[operation]
    before = await snapshot(seeded)
    response = await send(seeded, method, f"/v1/collections/nowhere{suffix}", body)
    await assert_error(response, 404, "collection_not_found")
    await assert_error(await seeded.get("/v1/collections/nowhere"), 404, "collection_not_found")
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_unknown_document_is_answered_with_404_and_nothing_changes(seeded, dsn, method):
    before = await snapshot(seeded)
    await assert_error(await send(seeded, method, f"{DOCS}/documents/missing"), 404, "document_not_found")
    await assert_nothing_changed(seeded, dsn, before)


# -- queries ----------------------------------------------------------------------------------


BAD_QUERIES = {
    "neither text nor vector": ({"k": 3}, "invalid_request"),
    "an empty object": ({}, "invalid_request"),
    "both text and vector": ({"text": "hello", "vector": UNIT, "model": L3}, "invalid_request"),
    "a vector without a model": ({"vector": UNIT}, "invalid_request"),
    "a vector with an empty model": ({"vector": UNIT, "model": ""}, "invalid_request"),
    "a vector with an unknown model": ({"vector": UNIT, "model": "no-such-model"}, "unknown_model"),
    "a vector as a string": ({"vector": "0.1,0.2", "model": L3}, "invalid_request"),
    "a vector of strings": ({"vector": ["0.1"] * DIM, "model": L3}, "invalid_request"),
    "a vector of the wrong length": ({"vector": [0.1] * (DIM - 1), "model": L3}, "dimension_mismatch"),
    "an empty vector": ({"vector": [], "model": L3}, "dimension_mismatch"),
    "an all-zero vector": ({"vector": [0.0] * DIM, "model": L3}, "invalid_vector"),
    "empty text": ({"text": ""}, "invalid_request"),
    "whitespace-only text": ({"text": "  \n "}, "empty_text"),
    "text as a number": ({"text": 1.5}, "invalid_request"),
    "k as zero": ({"text": "hello", "k": 0}, "invalid_request"),
    "k negative": ({"text": "hello", "k": -1}, "invalid_request"),
    "k over the limit": ({"text": "hello", "k": 1001}, "k_out_of_range"),
    "k far over the limit": ({"text": "hello", "k": 10**30}, "k_out_of_range"),
    "k as a string": ({"text": "hello", "k": "10"}, "invalid_request"),
    "k as a bool": ({"text": "hello", "k": True}, "invalid_request"),
    "k as a float": ({"text": "hello", "k": 10.0}, "invalid_request"),
    "k as null": ({"text": "hello", "k": None}, "invalid_request"),
    "filter as a list": ({"text": "hello", "filter": [["n", 1]]}, "invalid_request"),
    "filter as a string": ({"text": "hello", "filter": "n=1"}, "invalid_request"),
    "a NUL character in the filter": ({"text": "hello", "filter": {"n": "\u0000"}}, "invalid_text"),
    "an unknown field": ({"text": "hello", "top_k": 3}, "invalid_request"),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
async def test_a_bad_query_is_refused_with_its_code_and_changes_nothing(seeded, dsn, case):
    body, code = BAD_QUERIES[case]
    before = await snapshot(seeded)
    await assert_error(await seeded.post(f"{DOCS}/query", json=body), 400, code)
    await assert_nothing_changed(seeded, dsn, before)


async def test_k_of_1000_is_accepted(seeded):
    response = await seeded.post(f"{DOCS}/query", json={"text": "hello", "k": 1000})
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["vector", "filter", "k"])
async def test_nan_or_infinity_in_a_query_is_refused_as_invalid_json(seeded, dsn, constant, where):
    before = await snapshot(seeded)
    raw = {
        "vector": '{"vector": [%s, %s], "model": "%s"}' % (constant, ", ".join(["0.1"] * (DIM - 1)), L3),
        "filter": '{"text": "hello", "filter": {"n": %s}}' % constant,
        "k": '{"text": "hello", "k": %s}' % constant,
    }[where]
    await assert_error(await send(seeded, "POST", f"{DOCS}/query", raw=raw), 400, "invalid_json")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_vector_number_that_overflows_to_infinity_is_refused_as_invalid_vector(seeded, dsn):
    before = await snapshot(seeded)
    raw = '{"vector": [1e999, %s], "model": "%s"}' % (", ".join(["0.1"] * (DIM - 1)), L3)
    await assert_error(await send(seeded, "POST", f"{DOCS}/query", raw=raw), 400, "invalid_vector")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_filter_number_that_overflows_to_infinity_is_refused_with_400_not_500(seeded, dsn):
    before = await snapshot(seeded)
    raw = '{"text": "hello", "filter": {"n": 1e999}}'
    await assert_error(await send(seeded, "POST", f"{DOCS}/query", raw=raw), 400, "invalid_number")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_query_text_with_a_nul_character_is_refused_like_a_document_text(seeded, dsn):
    before = await snapshot(seeded)
    response = await seeded.post(f"{DOCS}/query", json={"text": "hello\u0000world"})
    await assert_error(response, 400, "invalid_text")
    await assert_nothing_changed(seeded, dsn, before)


# -- routes and methods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/nothing"),
        ("GET", "/"),
        ("GET", "/v1/collections"),
        ("GET", "/v1/collections/docs/documents/a/b"),
        ("POST", "/v1/collections/docs/search"),
        ("PUT", "/v2/collections/docs"),
    ],
)
async def test_an_unknown_route_is_answered_with_a_404_json_body(seeded, dsn, method, path):
    before = await snapshot(seeded)
    await assert_error(await send(seeded, method, path, {"text": "hello"}), 404, "not_found")
    await assert_nothing_changed(seeded, dsn, before)


@pytest.mark.parametrize(
    "method, path",
    [
        ("PATCH", DOCS),
        ("POST", DOCS),
        ("DELETE", DOCS),
        ("PATCH", f"{DOCS}/documents/keep"),
        ("POST", f"{DOCS}/documents/keep"),
        ("GET", f"{DOCS}/documents"),
        ("GET", f"{DOCS}/query"),
        ("PUT", f"{DOCS}/query"),
    ],
)
async def test_a_wrong_method_is_answered_with_a_405_json_body_and_changes_nothing(seeded, dsn, method, path):
    before = await snapshot(seeded)
    response = await send(seeded, method, path, {"text": "changed", "model": L3})
    await assert_error(response, 405, "method_not_allowed")
    await assert_nothing_changed(seeded, dsn, before)


async def test_a_405_answer_names_the_allowed_methods(seeded):
    response = await seeded.patch(DOCS, json={"model": L3})
    assert response.status == 405
    assert set(response.headers.get("Allow", "").replace(" ", "").split(",")) >= {"GET", "PUT"}
