"""The gateway's edge under hostile clients (issue 23, points 2, 9 and 10): bodies of millions
of values, API keys scoped to collections, credentials that are not UTF-8, the Server header,
an infinite rate, verify racing the end of a migration, many concurrent large answers, and the
start-up warning of an open data plane.

One gateway for the module (API keys on, a small value budget); each test failed on the
gateway before the fix it names.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import threading
import uuid

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from gateway.api.app import create_app
from gateway.api.keys import LARGE_RESPONSES, VERIFIER
from gateway.api.requests import count_values
from gateway.api.transport import runner_options
from gateway.commands.serve import open_data_plane_warning
from gateway.config import ConfigError, load_settings
from tests.conftest import GatewayTestServer, with_database
from tests.helpers import AUTH, DRIFTGATE, L3, L6, STALL_S, TOKEN, free_port

on_edge = pytest.mark.asyncio(loop_scope="module")  # the async tests share the module's gateway and loop

KEY_A = "key-for-collection-a-0001"  # scoped to collection `a`
KEY_ALL = "key-for-every-collection-02"
ALL = {"X-API-Key": KEY_ALL}
ONLY_A = {"Authorization": f"Bearer {KEY_A}"}
VALUES = 1000  # limits.max_json_values of this module's gateway


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(server_dsn):
    name = f"edge_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    settings = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        limits={"max_json_values": VALUES},
        backfill={"chunk_size": 32, "poll_interval_s": 0.2},
        server={
            "request_timeout_s": 600,
            "max_large_responses": 1,
            "api_keys": [{"key": KEY_A, "collections": ["a"]}, KEY_ALL],
        },
    )
    app = create_app(settings, with_database(server_dsn, name), admin_token=TOKEN, api_keys="")
    client = TestClient(GatewayTestServer(app, runner_options(settings.server)))
    await client.start_server()
    for collection in ("a", "b"):
        response = await client.put(f"/v1/collections/{collection}", json={"model": L3}, headers=ALL)
        assert response.status == 201, await response.text()
    yield client
    await client.close()
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def error_of(response, status: int, code: str) -> str:
    body = await response.json()
    assert response.status == status and body["error"]["code"] == code, (response.status, body)
    return body["error"]["message"]


async def raw_exchange(client: TestClient, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes aiohttp's client would refuse to send (non-UTF-8 headers); (status, headers, body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


# -- point 2: a body's values are counted before it is parsed ----------------------------------------


def numbers(n: int) -> str:
    return "[" + ",".join(["0"] * n) + "]"


@on_edge
async def test_the_issues_8_million_value_metadata_is_refused_413_before_parsing_and_nothing_is_written(edge):
    raw = '{"text": "hello", "metadata": {"a": %s}}' % numbers(8_000_000)  # 16 MB, as in the issue
    response = await edge.put("/v1/collections/a/documents/huge", data=raw, headers=ALL)
    message = await error_of(response, 413, "too_many_values")
    assert f"more than {VALUES} JSON values" in message and "limits.max_json_values" in message
    assert (await edge.get("/v1/collections/a/documents/huge", headers=ALL)).status == 404


@on_edge
@pytest.mark.parametrize(
    "method, path, raw",
    [
        ("PUT", "/v1/collections/a/documents/d", '{"text": "t", "metadata": {"a": %s}}' % numbers(2 * VALUES)),
        (
            "POST",
            "/v1/collections/a/documents",
            '{"documents": [{"id": "d", "text": "t", "metadata": %s}]}' % numbers(2 * VALUES),
        ),
        ("POST", "/v1/collections/a/query", '{"text": "t", "filter": {"a": %s}}' % numbers(2 * VALUES)),
        ("POST", "/v1/collections/a/query", '{"vector": %s, "model": "%s"}' % (numbers(2 * VALUES), L3)),
        ("POST", "/v1/embeddings", '{"model": "%s", "input": %s}' % (L3, json.dumps(["x"] * 2 * VALUES))),
    ],
    ids=["metadata", "batch metadata", "query filter", "query vector", "embedding inputs"],
)
async def test_every_body_over_the_value_budget_is_refused_413_and_changes_nothing(edge, method, path, raw):
    response = await edge.request(method, path, data=raw, headers=ALL)
    await error_of(response, 413, "too_many_values")
    assert (await edge.get("/v1/collections/a/documents/d", headers=ALL)).status == 404


@on_edge
async def test_commas_quotes_and_backslashes_inside_texts_are_not_counted_as_values(edge):
    text = 'a, b, "quoted, with \\ backslash", ' * 300  # 1,200 commas, all inside the string
    response = await edge.put("/v1/collections/a/documents/csv", json={"text": text}, headers=ALL)
    assert response.status == 200, await response.text()
    stored = await (await edge.get("/v1/collections/a/documents/csv", headers=ALL)).json()
    assert stored["text"] == text


@on_edge
async def test_oversized_metadata_is_refused_by_its_size_before_its_values_are_walked(edge):
    # 70 kB and a NUL deep inside: the size (computed in C) refuses it; the slow walk that would
    # have found the NUL never runs
    metadata = {"big": "x" * 70_000, "deep": [{"nul": "a\u0000b"}]}
    response = await edge.put("/v1/collections/a/documents/m", json={"text": "t", "metadata": metadata}, headers=ALL)
    assert "at least" in await error_of(response, 400, "metadata_too_large")


# -- point 9: API keys scoped to collections ------------------------------------------------------------


@on_edge
async def test_a_key_scoped_to_collection_a_uses_a_and_cannot_read_or_write_b(edge):
    put = await edge.put("/v1/collections/a/documents/s1", json={"text": "visible to key a"}, headers=ONLY_A)
    assert put.status == 200, await put.text()
    assert (await edge.get("/v1/collections/a/documents/s1", headers=ONLY_A)).status == 200
    query = await edge.post("/v1/collections/a/query", json={"text": "visible"}, headers=ONLY_A)
    assert query.status == 200
    assert (await edge.put("/v1/collections/b/documents/s2", json={"text": "secret b"}, headers=ALL)).status == 200
    for method, path, body in [
        ("GET", "/v1/collections/b", None),
        ("GET", "/v1/collections/b/documents/s2", None),
        ("POST", "/v1/collections/b/query", {"text": "secret"}),
        ("PUT", "/v1/collections/b/documents/s3", {"text": "intruder"}),
        ("DELETE", "/v1/collections/b/documents/s2", None),
        ("PUT", "/v1/collections/c", {"model": L3}),
        ("POST", "/v1/embeddings", {"model": "collection:b", "input": "x"}),
    ]:
        response = await edge.request(method, path, json=body, headers=ONLY_A)
        assert "does not cover collection" in await error_of(response, 403, "forbidden"), path
    assert (await edge.get("/v1/collections/b/documents/s2", headers=ALL)).status == 200  # still there
    assert (await edge.get("/v1/collections/b/documents/s3", headers=ALL)).status == 404
    assert (await edge.get("/v1/collections/c", headers=ALL)).status == 404
    embed = await edge.post("/v1/embeddings", json={"model": "collection:a", "input": "x"}, headers=ONLY_A)
    assert embed.status == 200
    assert (await edge.get("/v1/collections/a", headers={"X-API-Key": "key-for-nothing-000000"})).status == 401


@on_edge
@pytest.mark.parametrize(
    "path, header",
    [
        ("/v1/collections/a", b"Authorization: Bearer \xff\xfe-not-utf8"),
        ("/v1/collections/a", b"X-API-Key: \xc3\x28\xff"),
        ("/admin/v1/collections/a/status", b"Authorization: Bearer \xff\xfe-not-utf8"),
    ],
    ids=["bearer", "x-api-key", "admin token"],
)
async def test_a_credential_that_is_not_utf8_is_a_401_not_a_500(edge, path, header):
    request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n"
    status, headers, body = await raw_exchange(edge, request)
    assert status == 401, body
    assert json.loads(body)["error"]["code"] == "unauthorized" and headers["server"] == "driftgate"


# -- point 10: the smaller ones --------------------------------------------------------------------------


@on_edge
async def test_every_answer_names_driftgate_as_server_without_python_or_aiohttp_versions(edge):
    for response in (
        await edge.get("/healthz"),
        await edge.get("/v1/collections/a", headers=ALL),
        await edge.get("/no/such/route"),
        await edge.get("/v1/collections/a"),  # 401
    ):
        assert response.headers["Server"] == "driftgate", response.headers
    status, headers, _ = await raw_exchange(edge, b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n")  # unparsable
    assert status == 400 and headers["server"] == "driftgate"


@on_edge
async def test_an_infinite_max_rate_is_refused_with_400_and_the_backfill_is_unchanged(edge):
    before = await (await edge.get("/admin/v1/collections/a/status", headers=AUTH)).json()
    response = await edge.post(
        "/admin/v1/collections/a/backfill", data='{"action": "pause", "max_rate": 1e400}', headers=AUTH
    )
    assert "finite" in await error_of(response, 400, "invalid_request")
    after = await (await edge.get("/admin/v1/collections/a/status", headers=AUTH)).json()
    assert after["state_version"] == before["state_version"]


@on_edge
async def test_verify_racing_the_end_of_a_migration_answers_409_not_500(edge):
    docs = [{"id": f"v{i}", "text": f"verify race document {i}"} for i in range(4)]
    assert (await edge.post("/v1/collections/b/documents", json={"documents": docs}, headers=ALL)).status == 200
    started = await edge.post("/admin/v1/collections/b/migrations", json={"to_model": L6}, headers=AUTH)
    assert started.status == 202, await started.text()
    verifier = edge.app[VERIFIER]
    original = verifier._verify_model

    async def abort_first(name: str, model: str, sample: int) -> dict:
        if model == L6:  # verify has read the state; the migration ends before it reads L6's table
            aborted = await edge.post("/admin/v1/collections/b/abort", headers=AUTH)
            assert aborted.status == 200, await aborted.text()
        return await original(name, model, sample)

    verifier._verify_model = abort_first
    try:
        response = await edge.post("/admin/v1/collections/b/verify", json={"sample": 2}, headers=AUTH)
    finally:
        del verifier._verify_model
    assert "run verify again" in await error_of(response, 409, "state_changed")
    again = await edge.post("/admin/v1/collections/b/verify", json={"sample": 2}, headers=AUTH)
    assert again.status == 200 and list((await again.json())["models"]) == [L3]


@on_edge
async def test_answers_of_k_100_with_large_texts_possible_share_the_large_response_slots(edge):
    large = edge.app[LARGE_RESPONSES]
    assert large.is_large(100) and not large.is_large(10)  # 100 x (100,000 + 65,536) bytes > 8 MiB
    waited = large.waited

    async def query() -> dict:
        response = await edge.post("/v1/collections/a/query", json={"text": "visible", "k": 100}, headers=ALL)
        assert response.status == 200
        return json.loads(await response.read())  # streamed, still one JSON document

    answers = await asyncio.gather(*(query() for _ in range(12)))
    assert all(a["hits"] and a["model"] == L3 for a in answers)
    assert large.high_water == 1 and large.in_flight == 0  # never more than max_large_responses at once
    assert large.waited > waited  # the others waited their turn


# -- point 9: the start-up warning -----------------------------------------------------------------------


def test_serve_warns_at_start_when_the_data_plane_is_open_on_a_non_loopback_address(server_dsn):
    env = {k: v for k, v in os.environ.items() if k not in ("DRIFTGATE_API_KEYS", "DRIFTGATE_CONFIG")}
    env["DATABASE_URL"] = server_dsn
    port = free_port()
    process = subprocess.Popen(
        [*DRIFTGATE, "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
    seen = []
    try:
        while not seen or "listening on" not in seen[-1]:
            seen.append(lines.get(timeout=STALL_S))  # no output for STALL_S: a stall
    finally:
        process.send_signal(signal.SIGINT)
        try:
            stopped = process.wait(timeout=60)  # the shutdown makes progress: 60 s without an exit is a hang
        except subprocess.TimeoutExpired:
            process.kill()
            stopped = None
    output = "".join(seen)
    assert stopped == 0, f"serve did not stop on SIGINT after:\n{output}"

    assert "listening on" in output, output
    assert "the data plane (/v1/) is open to anyone who can reach 0.0.0.0" in output


@pytest.mark.parametrize(
    "host, keys, warns",
    [("0.0.0.0", False, True), ("::", False, True), ("gateway.internal", False, True), ("0.0.0.0", True, False)]
    + [("127.0.0.1", False, False), ("::1", False, False), ("localhost", False, False)],
)
def test_the_open_data_plane_warning_is_given_exactly_when_keys_are_missing_off_loopback(host, keys, warns):
    assert (open_data_plane_warning(host, keys) is not None) is warns


@pytest.mark.parametrize(
    "raw, budget, counted",
    [
        (b'{"a": [1, 2, 3]}', 100, 9),  # short bodies: the bound len // 2 + 1, nothing scanned
        (b'{"t": "' + b"," * 500 + b'", "n": [1, 2]}', 10, 6),  # commas in a string are not values
        (b'{"t": "a \\" , \\\\", "n": 1}', 5, 5),  # escaped quote and backslash stay inside the string
        (b"[" + b"0," * 600 + b"0]", 100, None),  # 601 numbers: over the budget
        (b'["' + b"x" * 600 + b",", 100, 1),  # unterminated string: the parser will refuse it
    ],
    ids=["short", "commas in text", "escapes", "over budget", "unterminated"],
)
def test_count_values_counts_commas_outside_strings_and_strings(raw, budget, counted):
    assert count_values(raw, budget) == counted


def test_api_keys_are_configured_plain_or_scoped_and_short_keys_are_refused_by_field(monkeypatch):
    monkeypatch.setenv("DRIFTGATE_SERVER__API_KEYS", json.dumps([{"key": KEY_A, "collections": ["a"]}, KEY_ALL]))
    keys = load_settings(None).server.api_keys
    assert keys[0].collections == ("a",) and keys[1] == KEY_ALL
    monkeypatch.delenv("DRIFTGATE_SERVER__API_KEYS")
    with pytest.raises(ConfigError, match=r"server\.api_keys"):
        load_settings(None, server={"api_keys": ["short"]})
