"""gateway.client against a real gateway: every data-plane and admin call, errors, retries.

One gateway (a thread on a loopback port, `tests/live.py`) serves the module; the retry tests
start their own small ones (a gateway that is not up yet; one with a single connection slot).
"""

from __future__ import annotations

import ast
import asyncio
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

import gateway
from gateway.client import AsyncClient, Client, Document
from gateway.client.errors import (
    BY_CODE,
    CollectionNotFound,
    DocumentNotFound,
    DriftgateError,
    GatewayUnreachable,
    IllegalTransition,
    ModelMismatch,
    NotAdopted,
    NotFound,
    TokenIdsNotAccepted,
    TooManyConnections,
    Unauthorized,
)
from tests.helpers import L3, L6, free_port, wait_for_progress
from tests.live import ServerThread, module_database

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def server(server_dsn):
    live = ServerThread(
        module_database(server_dsn, "client"),
        admin_token=TOKEN,
        backfill={"poll_interval_s": 0.1, "chunk_size": 16},
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def dg(server):
    with Client(server.url, admin_token=TOKEN, timeout=120) as client:
        client.create_collection("docs", L3)
        yield client


def test_documents_round_trip_one_by_one_and_in_bulk(dg):
    first = dg.put_document("docs", "a/1", "the cat sat on the mat", {"kind": "animal"})
    assert first.id == "a/1" and first.version > 0  # an id with a slash is quoted in the path
    results = dg.put_documents(
        "docs",
        [
            Document("b", "graphics cards multiply matrices", {"kind": "tech"}),
            {"id": "c", "text": "tomato soup with basil", "metadata": {"kind": "food"}},
        ],
    )
    assert [r.id for r in results] == ["b", "c"]
    assert dg.get_document("docs", "a/1") == Document("a/1", "the cat sat on the mat", {"kind": "animal"}, 1)
    assert [d.id for d in dg.get_documents("docs", ["c", "missing", "a/1"])] == ["c", "a/1"]
    assert dg.count_documents("docs") == 3 and dg.count_documents("docs", {"kind": {"$ne": "food"}}) == 2
    collection = dg.get_collection("docs")
    assert (collection.read_model, collection.documents, collection.phase) == (L3, 3, "steady")
    again = dg.create_collection("docs", L3)
    assert again.created is False and again.read_model == L3


def test_queries_by_text_and_by_vector_keep_the_model_and_honour_the_filter(dg):
    dg.put_documents("docs", [{"id": f"q{i}", "text": f"kittens and cats {i}", "metadata": {"i": i}} for i in range(5)])
    by_text = dg.query("docs", text="a kitten", k=3, filter={"i": {"$gte": 2}})
    assert by_text.model == L3 and len(by_text.hits) == 3
    assert all(h.metadata["i"] >= 2 for h in by_text.hits)
    vector = dg.embed(L3, ["a kitten"], input_type="query").vectors[0]
    by_vector = dg.query("docs", vector=vector, model=L3, k=3, filter={"i": {"$gte": 2}})
    assert [h.id for h in by_vector.hits] == [h.id for h in by_text.hits]
    with pytest.raises(ModelMismatch) as mismatch:
        dg.query("docs", vector=vector, model=L6, k=3)
    assert mismatch.value.status == 409 and L3 in mismatch.value.message
    assert dg.delete_documents("docs", filter={"i": {"$exists": True}}) == 5


def test_listing_iterates_every_document_once_in_id_order(dg):
    dg.put_documents("docs", [{"id": f"l{i:02d}", "text": f"list me {i}", "metadata": {"l": True}} for i in range(7)])
    page = dg.list_documents("docs", {"l": True}, limit=3)
    assert [d.id for d in page.documents] == ["l00", "l01", "l02"] and page.next_cursor
    assert [d.id for d in dg.iter_documents("docs", {"l": True}, page_size=3)] == [f"l{i:02d}" for i in range(7)]
    assert dg.delete_documents("docs", ids=[f"l{i:02d}" for i in range(7)] + ["nope"]) == 7
    assert dg.delete_document("docs", "c") is True
    with pytest.raises(DocumentNotFound):
        dg.delete_document("docs", "c")


def test_every_error_answer_raises_the_class_of_its_code(dg, server):
    with pytest.raises(CollectionNotFound) as missing:
        dg.get_collection("nope")
    assert isinstance(missing.value, NotFound) and missing.value.code == "collection_not_found"
    with pytest.raises(TokenIdsNotAccepted, match="check_embedding_ctx_length=False"):
        dg.embed(L3, [[101, 2023, 102]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exactly one"):
        dg.delete_documents("docs", ids=["a"], filter={"x": 1})
    both = httpx.post(f"{server.url}/v1/collections/docs/documents:delete", json={"ids": ["a"], "filter": {"x": 1}})
    assert both.status_code == 400 and "exactly one" in both.json()["error"]["message"]
    too_many = [f"x{i}" for i in range(1001)]
    refused = httpx.post(f"{server.url}/v1/collections/docs/documents:get", json={"ids": too_many})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "batch_too_large"
    assert dg.get_documents("docs", too_many) == []  # the client splits what the API would refuse
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.status("docs")
    with pytest.raises(NotAdopted):
        dg.stop_adoption("docs")
    with pytest.raises(IllegalTransition, match="nothing to roll back"):
        dg.rollback("docs")


def test_the_client_has_a_class_for_every_error_code_the_gateway_raises():
    """Every `code="..."` in the gateway's source (and every GatewayError subclass's code)."""
    root = Path(gateway.__file__).parent
    codes: set[str] = set()
    for path in root.rglob("*.py"):
        if "client" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.Constant):
                codes.add(node.value.value)
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["code"]:
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    codes.add(node.value.value)
    codes |= set(re.findall(r'_error_body\("([a-z_]+)"', (root / "api" / "transport.py").read_text()))
    codes.discard("error")
    assert codes and codes <= set(BY_CODE), sorted(codes - set(BY_CODE))


async def test_the_async_client_drives_a_whole_migration(server):
    async with AsyncClient(server.url, admin_token=TOKEN, timeout=120) as dg:
        await dg.create_collection("mig", L3)
        await dg.put_documents("mig", [{"id": f"m{i}", "text": f"migrating text {i}"} for i in range(20)])
        plan = await dg.plan("mig", L6, sample=4)
        assert plan["documents"] == 20
        started = await dg.start_migration("mig", L6)
        assert (started.phase, started.to_model) == ("dual_write", L6)
        assert (await dg.backfill("mig", None, 1000.0))["max_rate"] == 1000.0
        status = await wait_for_progress(
            lambda: dg.status("mig"), lambda s: s.phase == "ready", lambda s: (s.phase, s.backfill.get("done"))
        )
        assert status.models[L6]["coverage"] == 1.0
        assert (await dg.verify("mig", sample=5)).passed is True
        assert (await dg.shadow("mig", L6, 0.5)).shadow_model == L6
        assert (await dg.cutover("mig", L6)).read_model == L6
        assert (await dg.query("mig", text="migrating", k=2)).model == L6
        assert (await dg.rollback("mig")).read_model == L3
        assert (await dg.cutover("mig", L6)).read_model == L6
        retired = await dg.retire("mig", L3)
        assert retired.changed is True and retired.phase == "steady" and retired.write_models == (L6,)
        assert [d.id async for d in dg.iter_documents("mig", page_size=7)] == sorted(f"m{i}" for i in range(20))


def test_a_gateway_that_is_not_up_yet_is_retried_until_it_answers(server_dsn):
    port = free_port()
    late = ServerThread(module_database(server_dsn, "client_late"))
    late.port, late.url = port, f"http://127.0.0.1:{port}"
    starter = threading.Timer(1.0, late.start)
    starter.start()
    try:
        with Client(late.url, retries=600, max_retry_wait=0.2, timeout=120) as dg:
            assert dg.create_collection("late", L3).created is True
    finally:
        starter.join()
        late.stop()


def test_an_unreachable_gateway_raises_gateway_unreachable_after_the_retries():
    with Client(f"http://127.0.0.1:{free_port()}", retries=2, max_retry_wait=0.01) as dg:
        with pytest.raises(GatewayUnreachable, match="is `driftgate serve` running"):
            dg.get_collection("docs")


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


def test_a_503_with_retry_after_is_retried_and_a_lasting_one_is_raised(server_dsn):
    """A gateway with one connection slot answers a second connection 503 + Retry-After."""
    small = ServerThread(module_database(server_dsn, "client_small"), server={"max_connections": 1}).start()
    holder = socket.create_connection(("127.0.0.1", small.port))
    try:
        time.sleep(0.2)  # the held connection is accepted first
        transport = CountingTransport()
        with Client(small.url, retries=1, max_retry_wait=0.05, transport=transport) as dg:
            with pytest.raises((TooManyConnections, GatewayUnreachable)):
                dg.get_collection("docs")
        assert transport.requests == 2  # the first attempt and one retry
        releaser = threading.Timer(0.5, holder.close)
        releaser.start()
        transport = CountingTransport()
        with Client(small.url, retries=50, max_retry_wait=0.2, transport=transport) as dg:
            with pytest.raises(CollectionNotFound):  # an answer at last: the slot came free
                dg.get_collection("docs")
        releaser.join()
        assert transport.requests >= 2
    finally:
        holder.close()
        small.stop()


def test_errors_carry_status_code_and_message():
    error = BY_CODE["invalid_filter"](400, "invalid_filter", "filter.x: bad")
    assert isinstance(error, DriftgateError) and str(error) == "400 invalid_filter: filter.x: bad"
    assert asyncio.iscoroutinefunction(AsyncClient.query) and not asyncio.iscoroutinefunction(Client.query)
