"""/openapi.json is a valid OpenAPI 3.1 document a generator can use: every operation named,
every success answer with its schema, and real answers that match those schemas."""

from __future__ import annotations

import httpx
import httpx2
import jsonschema
import pytest
from aiopenapi3 import OpenAPI
from openapi_spec_validator import validate

from gateway.api.app import create_app
from gateway.api.openapi import build_spec
from gateway.config import load_settings
from tests.helpers import L3, in_json_api
from tests.live import ServerThread, module_database

TOKEN = "openapi-token"


@pytest.fixture(scope="module")
def url(server_dsn):
    server = ServerThread(module_database(server_dsn, "openapi"), admin_token=TOKEN, backfill={"enabled": False})
    yield server.start().url
    server.stop()


def test_the_document_validates_as_openapi_3_1():
    spec = build_spec()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_route_is_an_operation_with_an_id_and_a_typed_success_answer():
    spec = build_spec()
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in create_app(load_settings(None), "postgresql://unused/unused").router.routes()
        if r.method not in ("HEAD", "*") and in_json_api(r)  # the console's pages are HTML, not API
    }
    assert {(method, path) for path, method, _ in operations} == served
    for path, method, op in operations:
        [ok] = [status for status in op["responses"] if status.startswith("2")]
        content = op["responses"][ok]["content"]
        schema = next(iter(content.values()))["schema"]
        assert schema != {"type": "object"} and (schema.get("$ref") or path == "/metrics"), (method, path)


def _validator(spec: dict, name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def test_real_answers_match_their_documented_schemas(url):
    spec = httpx.get(f"{url}/openapi.json").json()
    admin = {"Authorization": f"Bearer {TOKEN}"}
    calls = [
        ("put", "/v1/collections/docs", {"model": L3}, "CreatedCollection"),
        ("put", "/v1/collections/docs/documents/a", {"text": "a cat", "metadata": {"n": 1}}, "WriteResult"),
        ("post", "/v1/collections/docs/documents", {"documents": [{"id": "b", "text": "a dog"}]}, "WriteResults"),
        ("get", "/v1/collections/docs", None, "Collection"),
        ("get", "/v1/collections/docs/documents/a", None, "Document"),
        ("post", "/v1/collections/docs/documents:get", {"ids": ["a", "b"]}, "Documents"),
        ("post", "/v1/collections/docs/documents:list", {"limit": 1}, "DocumentPage"),
        ("post", "/v1/collections/docs/documents:count", {"filter": {"n": {"$gte": 1}}}, "Count"),
        ("post", "/v1/collections/docs/query", {"text": "cat", "k": 2}, "QueryResult"),
        ("post", "/v1/embeddings", {"model": L3, "input": ["cat"]}, "Embeddings"),
        ("get", "/admin/v1/collections/docs/status", None, "Status"),
        ("post", "/admin/v1/collections/docs/verify", {"sample": 2}, "Verification"),
        ("post", "/v1/collections/docs/documents:delete", {"ids": ["b"]}, "Deleted"),
        ("delete", "/v1/collections/docs/documents/a", None, "DeletedDocument"),
        ("get", "/healthz", None, "Health"),
        ("get", "/readyz", None, "Readiness"),
    ]
    for method, path, body, schema in calls:
        answer = httpx.request(method, url + path, json=body, headers=admin, timeout=120)
        assert answer.status_code < 300, (path, answer.text)
        _validator(spec, schema).validate(answer.json())


class PatientSession(httpx2.Client):
    """aiopenapi3's HTTP session (its httpx fork), with a timeout for a slow machine."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "timeout": 120})


def test_a_client_generated_from_the_document_calls_the_gateway(url):
    api = OpenAPI.load_sync(f"{url}/openapi.json", session_factory=PatientSession)
    api._.create_collection(parameters={"collection": "generated"}, data={"model": L3})
    api._.put_documents(
        parameters={"collection": "generated"}, data={"documents": [{"id": "g1", "text": "generated clients work"}]}
    )
    result = api._.query(parameters={"collection": "generated"}, data={"text": "generated", "k": 1})
    assert result.model == L3 and [hit.id for hit in result.hits] == ["g1"]
    counted = api._.count_documents(parameters={"collection": "generated"}, data={})
    assert counted.count == 1
