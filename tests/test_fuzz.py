"""Fuzzing the whole API from its own OpenAPI description (schemathesis, bounded examples).

Every generated request must get an answer below 500, and every error must have the
documented body {"error": {"code", "message"}}.
"""

from __future__ import annotations

import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from gateway.api.app import create_app
from gateway.config import load_settings
from tests.helpers import in_json_api
from tests.live import ServerThread, module_database

TOKEN = "fuzz-token"


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value) -> bytes:
    """A bulk load's body is NDJSON text: generated strings go as they are (mostly bad lines)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else str(value).encode()


@pytest.fixture(scope="module")
def fuzz_dsn(server_dsn):
    return module_database(server_dsn, "fuzz")


@pytest.fixture(scope="module")
def gateway_url(fuzz_dsn):
    server = ServerThread(
        fuzz_dsn, admin_token=TOKEN, backfill={"enabled": False}, limits={"max_text_chars": 2000}
    ).start()
    # a collection with a few documents, so generated requests also reach the happy paths
    requests.put(f"{server.url}/v1/collections/docs", json={"model": "paraphrase-MiniLM-L3-v2"}, timeout=60)
    requests.post(
        f"{server.url}/v1/collections/docs/documents",
        json={"documents": [{"id": f"d{i}", "text": f"fuzz document {i}"} for i in range(5)]},
        timeout=60,
    )
    yield server.url
    server.stop()


def gateway_routes() -> list:
    """The routes the app really registers (the app is built, never started)."""
    return list(create_app(load_settings(None), "postgresql://unused/unused").router.routes())


def _check(case, gateway_url: str) -> None:
    response = case.call(base_url=gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error
        assert isinstance(error["message"], str) and error["message"], error


def test_no_request_the_schema_allows_gets_a_5xx_and_every_error_has_the_documented_body(gateway_url):
    api = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    # every route the app serves is fuzzed (schemathesis leaves /openapi.json itself out)
    served = {
        (r.method, r.resource.canonical) for r in gateway_routes() if r.method not in ("HEAD", "*") and in_json_api(r)
    }
    served.discard(("GET", "/openapi.json"))
    assert {(op.method.upper(), op.path) for op in operations} == served
    for operation in operations:

        @settings(
            max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            _check(case, gateway_url)

        fuzz()
