"""Bulk loads (NDJSON, streamed): every line stored through the one write path, the HNSW index
deferred and built when the load ends, exact scans meanwhile; a bad line stops the load
before its chunk with its line number, everything before that chunk kept."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from gateway.config import load_settings
from gateway.datasets import vaswani
from tests.conftest import SLOW_MACHINE_SERVER
from tests.helpers import AUTH, L3, L6, TOKEN, admin, create_collection, status, wait_phase

C = "docs"
CHUNK = 50  # limits.max_batch_documents in these tests: a few hundred lines make several chunks


@pytest.fixture
async def gateway(make_client):
    settings = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        limits={"max_batch_documents": CHUNK},
        backfill={"chunk_size": 64, "poll_interval_s": 0.2},
        server={**SLOW_MACHINE_SERVER, "sync_poll_interval_s": 0.5},
    )
    client = await make_client(settings, admin_token=TOKEN)
    await create_collection(client, C, L3)
    return client


def ndjson(docs: list[tuple[str, str]], **metadata) -> bytes:
    return b"".join(
        json.dumps({"id": doc_id, "text": text, "metadata": {"n": i, **metadata}}).encode() + b"\n"
        for i, (doc_id, text) in enumerate(docs)
    )


async def bulk(client, body: bytes, index: str | None = None, collection: str = C):
    query = f"?index={index}" if index else ""
    return await client.post(
        f"/v1/collections/{collection}/documents:bulk{query}",
        data=body,
        headers={"Content-Type": "application/x-ndjson"},
    )


async def stored(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT d.id, d.version FROM dgc_{C}.documents d")
        return {r["id"]: r["version"] for r in rows}
    finally:
        await conn.close()


async def test_a_bulk_load_stores_every_line_and_builds_the_index_when_it_ends(gateway, dsn):
    docs = vaswani(limit=230).corpus
    response = await bulk(gateway, ndjson(docs))
    assert response.status == 200, await response.text()
    answer = await response.json()
    # L3 reads 128 tokens: a few long abstracts are cut, and the answer counts them
    assert answer == {"loaded": 230, "chunks": 5, "lines": 230, "truncated": answer["truncated"], "index": "built"}
    assert 0 < answer["truncated"] < 230
    report = await status(gateway)
    assert report["models"][L3]["rows"] == 230 and report["models"][L3]["coverage"] == 1.0
    assert report["models"][L3]["index_ready"] is True
    hits = await (await gateway.post(f"/v1/collections/{C}/query", json={"text": docs[7][1], "k": 3})).json()
    assert hits["hits"][0]["id"] == docs[7][0]


async def test_with_the_index_left_for_later_queries_are_exact_scans_until_an_operator_builds_it(gateway, dsn):
    docs = vaswani(limit=120).corpus
    response = await bulk(gateway, ndjson(docs), index="later")
    assert (await response.json())["index"] == "deferred"
    assert (await status(gateway))["models"][L3]["index_ready"] is False
    # without the graph every document is reachable: k = all of them returns all of them
    body = await (await gateway.post(f"/v1/collections/{C}/query", json={"text": "radio waves", "k": 120})).json()
    assert len(body["hits"]) == 120
    code, built = await admin(gateway, "POST", "index")
    assert code == 200 and built == {"built": [L3]}
    assert (await status(gateway))["models"][L3]["index_ready"] is True
    code, again = await admin(gateway, "POST", "index")
    assert code == 200 and again == {"built": []}


async def test_a_bad_line_stops_the_load_before_its_chunk_and_says_where_to_resume(gateway, dsn):
    docs = vaswani(limit=160).corpus
    lines = ndjson(docs).splitlines(keepends=True)
    lines[119] = b'{"id": "broken", "text": "   "}\n'  # line 120, in the third chunk (101-150)
    response = await bulk(gateway, b"".join(lines))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_line" and error["message"].startswith("line 120: text is blank")
    assert error["line"] == 120 and error["committed_lines"] == 100 and error["loaded"] == 100
    assert "from line 101" in error["message"]
    assert set(await stored(dsn)) == {doc_id for doc_id, _ in docs[:100]}  # nothing of lines 101-119
    assert (await status(gateway))["models"][L3]["index_ready"] is True  # rebuilt for what was stored

    resumed = await bulk(gateway, b"".join(lines[100:119] + lines[120:]))
    assert resumed.status == 200 and (await resumed.json())["loaded"] == 59
    assert set(await stored(dsn)) == {doc_id for doc_id, _ in docs} - {docs[119][0]}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json at all", "line 2: "),
        (b'{"id": "x"}', "line 2: text: Field required"),
        (b'{"id": "x", "text": "t", "extra": 1}', "line 2: extra: Extra inputs are not permitted"),
        (b'{"id": "x", "text": "t", "metadata": {"k": "' + b"v" * 70_000 + b'"}}', "line 2: metadata is"),
        (b'{"id": "", "text": "t"}', "line 2: "),
        (b'{"id": "x", "text": "nul \\u0000 here"}', "line 2: text contains a NUL"),
    ],
)
async def test_every_kind_of_bad_line_gets_a_400_naming_it_and_nothing_of_its_chunk(gateway, dsn, line, says):
    body = b'{"id": "first", "text": "a fine document"}\n' + line + b"\n"
    response = await bulk(gateway, body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_line" and error["message"].startswith(says), error
    assert await stored(dsn) == {}


async def test_a_line_longer_than_any_document_is_refused_without_being_held(gateway, dsn):
    huge = b'{"id": "x", "text": "' + b"a" * (100_000 * 4 + 70_000) + b'"}\n'
    response = await bulk(gateway, huge)
    assert response.status == 400
    assert "longer than any valid document" in (await response.json())["error"]["message"]


async def test_a_repeated_id_is_written_in_order_so_the_later_line_wins(gateway, dsn):
    body = ndjson([("a", "first text"), ("b", "other"), ("a", "second text")])
    response = await bulk(gateway, body)
    assert response.status == 200 and (await response.json())["chunks"] == 2
    document = await (await gateway.get(f"/v1/collections/{C}/documents/a")).json()
    assert document["text"] == "second text"


async def test_an_unknown_index_mode_or_collection_is_refused(gateway):
    response = await bulk(gateway, ndjson([("a", "t")]), index="sometimes")
    assert response.status == 400 and "rebuild, later, keep" in (await response.json())["error"]["message"]
    response = await bulk(gateway, ndjson([("a", "t")]), collection="nope")
    assert response.status == 404


async def test_the_next_chunk_is_embedded_while_the_one_before_it_is_still_in_flight(gateway, dsn, monkeypatch):
    # models.bulk_lanes is 2: the loader starts embedding chunk 2 before chunk 1 is committed. The
    # first embed waits until the second has started (a serial loader never starts it: a stall)
    from gateway.api.keys import BULK

    collections = gateway.server.app[BULK]._collections
    real = collections.embed_documents
    second_started = asyncio.Event()
    calls = []

    async def embed_documents(name, documents, *, bulk=False):
        calls.append(len(documents))
        if len(calls) == 1:
            async with asyncio.timeout(60):  # a stall backstop, not a speed check
                await second_started.wait()
        else:
            second_started.set()
        return await real(name, documents, bulk=bulk)

    monkeypatch.setattr(collections, "embed_documents", embed_documents)
    docs = vaswani(limit=120).corpus
    response = await bulk(gateway, ndjson(docs))
    assert response.status == 200, await response.text()
    assert (await response.json())["loaded"] == 120 and calls == [50, 50, 20]
    assert set(await stored(dsn)) == {doc_id for doc_id, _ in docs}


async def index_oid(dsn: str) -> int | None:
    """The OID of the L3 table's HNSW index (a new one after a rebuild), None without one."""
    from gateway.domain.identifiers import embedding_table

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT to_regclass($1)::oid", f"dgc_{C}.{embedding_table(L3)}_hnsw")
    finally:
        await conn.close()


async def test_index_auto_keeps_the_index_for_a_small_load_and_rebuilds_it_for_a_large_one(gateway, dsn):
    docs = vaswani(limit=230).corpus
    first = await (await bulk(gateway, ndjson(docs[:100]))).json()  # the default: auto, into an empty collection
    assert first["index"] == "built" and first["loaded"] == 100
    before = await index_oid(dsn)
    assert before is not None
    # 10 rows are a tenth of 100 (backfill.bulk_rebuild_fraction): the graph takes them row by row
    small = await (await bulk(gateway, ndjson(docs[100:110]), index="auto")).json()
    assert small == {"loaded": 10, "chunks": 1, "lines": 10, "truncated": small["truncated"], "index": "kept"}
    assert await index_oid(dsn) == before
    # 120 rows pass a tenth of 110 in the first chunk: dropped, written, built again when the load ends
    large = await (await bulk(gateway, ndjson(docs[110:]))).json()
    assert large["index"] == "built" and large["loaded"] == 120 and large["chunks"] == 3
    after = await index_oid(dsn)
    assert after is not None and after != before
    report = await status(gateway)
    assert report["models"][L3]["rows"] == 230 and report["models"][L3]["index_ready"] is True


async def test_a_bulk_load_during_a_migration_writes_both_models(gateway, dsn):
    docs = vaswani(limit=80).corpus
    await bulk(gateway, ndjson(docs[:40]))
    response = await gateway.post(f"/admin/v1/collections/{C}/migrations", json={"to_model": L6}, headers=AUTH)
    assert response.status == 202
    response = await bulk(gateway, ndjson(docs[40:]), index="keep")
    assert response.status == 200 and (await response.json())["index"] == "kept"
    report = await wait_phase(gateway, "ready")
    assert report["models"][L3]["rows"] == report["models"][L6]["rows"] == 80
    assert report["models"][L6]["coverage"] == 1.0


def test_driftgate_load_stops_at_a_bad_line_and_resumes_from_its_checkpoint_after_the_fix(server_dsn, tmp_path):
    from gateway.client import Client
    from tests.helpers import run
    from tests.live import ServerThread, module_database

    server = ServerThread(module_database(server_dsn, "bulk_cli"), limits={"max_batch_documents": 20}).start()
    try:
        with Client(server.url) as dg:
            dg.create_collection(C, L3)
        docs = vaswani(limit=130).corpus
        lines = ndjson(docs).splitlines(keepends=True)
        good = lines[94]
        lines[94] = b'{"id": "x", "text": "  "}\n'  # line 95: in the third segment of 40, its first chunk of 20
        data = tmp_path / "docs.ndjson"
        data.write_bytes(b"".join(lines))

        first = run("load", C, str(data), "--url", server.url, "--segment", "40")
        assert first.returncode == 1, first.stderr
        assert "line 95: text is blank" in first.stderr and "--resume" in first.stderr
        checkpoint = json.loads((tmp_path / "docs.ndjson.driftgate-load.json").read_text())
        assert checkpoint["lines_done"] == 80  # two whole segments; nothing of lines 81-100
        with Client(server.url) as dg:
            assert dg.count_documents(C) == 80

        refused = run("load", C, str(data), "--url", server.url)
        assert refused.returncode == 2 and "--resume" in refused.stderr

        lines[94] = good
        data.write_bytes(b"".join(lines))
        resumed = run("load", C, str(data), "--url", server.url, "--segment", "40", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert "going on from line 81" in resumed.stderr and "50 documents loaded" in resumed.stdout
        assert not (tmp_path / "docs.ndjson.driftgate-load.json").exists()
        with Client(server.url) as dg:
            assert dg.count_documents(C) == 130
    finally:
        server.stop()


async def test_a_key_scoped_to_other_collections_cannot_bulk_load_into_this_one(make_client, dsn):
    key = "k-for-another-collection"
    settings = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 4},
        server={**SLOW_MACHINE_SERVER, "api_keys": [{"key": key, "collections": ["other"]}]},
    )
    client = await make_client(settings, admin_token=TOKEN, api_keys="")
    response = await client.put(f"/v1/collections/{C}", json={"model": L3}, headers={"X-API-Key": key})
    assert response.status == 403
    response = await client.post(
        f"/v1/collections/{C}/documents:bulk",
        data=ndjson([("a", "a document")]),
        headers={"Content-Type": "application/x-ndjson", "X-API-Key": key},
    )
    assert response.status == 403 and (await response.json())["error"]["code"] == "forbidden"
