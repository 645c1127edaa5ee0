"""Reliability under abuse: overload, hostile transport, out-of-range vectors, log forging,
a retire that could lose documents, the embedded server's lifecycle, big answers.

Each test here failed on the gateway before the fix it names.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging

import aiohttp
import pytest

from gateway.api.keys import EMBEDDINGS
from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.logs import RequestContextFilter
from tests.conftest import SLOW_MACHINE_SERVER
from tests.helpers import (
    L3,
    L6,
    TOKEN,
    admin,
    create_collection,
    finish_without_stalling,
    seed,
    settings_with,
    until,
    wait_for_progress,
    wait_phase,
)


def settings(**server):
    return load_settings(
        None,
        database={"pool_min": 1, "pool_max": 6},
        server={**SLOW_MACHINE_SERVER, **server},
        models={"serve": [L3]},  # /v1/embeddings with no collection on it
    )


def metric(exposition: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    values = [float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def strict_json(text: str):
    """Parse as a strict JSON parser would: NaN and Infinity are not JSON."""

    def refuse(name: str):
        raise AssertionError(f"response contains {name}")

    return json.loads(text, parse_constant=refuse)


# -- 1. overload --------------------------------------------------------------------------------


async def test_work_of_abandoned_embedding_requests_is_dropped_and_a_query_is_served_after_them(make_client):
    client = await make_client(settings())
    await create_collection(client, "docs", L3)
    await client.put("/v1/collections/docs/documents/a", json={"text": "a document about radio waves"})
    url = str(client.make_url("/v1/embeddings"))
    text = ("antenna impedance measurements at microwave frequencies " * 80)[:4000]
    body = {"model": L3, "input": [f"{i} {text}" for i in range(300)]}

    async def abandon() -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.post(url, json=body) as response:
                    await response.read()  # a 503 (encoder busy) is an answer too
            except (TimeoutError, aiohttp.ClientError):
                pass  # the client gave up and disconnected

    await asyncio.gather(*(abandon() for _ in range(16)))
    submitted = 16 * 300
    batcher = (await client.app[EMBEDDINGS].load(L3)).batcher

    async def encoded() -> float:
        await asyncio.sleep(0.5)
        exposition = await (await client.get("/metrics")).text()
        return metric(exposition, "driftgate_encode_batch_size_sum", f'model="{L3}"')

    # the encoder settles (nothing left to compute) long before 4,800 texts could have been embedded
    done = await wait_for_progress(encoded, lambda n: batcher._queued_texts == 0, lambda n: n)
    query = await client.post("/v1/collections/docs/query", json={"text": "radio", "k": 1})
    assert query.status == 200
    settled = await encoded()
    assert settled == done or settled - done <= 1  # the query's own text, nothing else queued
    assert done < 0.2 * submitted, f"{done:.0f} of {submitted} abandoned texts were embedded anyway"
    assert batcher.skipped_pieces > 0


async def test_an_embedding_request_beyond_the_queue_bound_is_refused_503_with_retry_after(make_client):
    client = await make_client(settings())
    await client.post("/v1/embeddings", json={"model": L3, "input": "warm up"})
    batcher = (await client.app[EMBEDDINGS].load(L3)).batcher
    batcher._max_queued = 50
    long_texts = [f"{i} " + "word " * 300 for i in range(40)]
    first = asyncio.ensure_future(client.post("/v1/embeddings", json={"model": L3, "input": long_texts}))
    await wait_for_progress(
        lambda: asyncio.sleep(0.01), lambda _: batcher._queued_texts > 0, lambda _: batcher._queued_texts
    )
    refused = await client.post("/v1/embeddings", json={"model": L3, "input": long_texts})
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["code"] == "encoder_busy"
    assert (await first).status == 200  # the work already accepted is finished, not dropped


# -- 2 and 7. hostile transport --------------------------------------------------------------------


async def test_a_compressed_body_is_refused_415_without_being_inflated(make_client):
    client = await make_client(settings())
    bomb = gzip.compress(b'{"text": "' + b"a" * (64 * 1024 * 1024) + b'"}')
    for path in ("/v1/collections/docs/documents/x", "/admin/v1/collections/docs/migrations"):
        response = (
            await client.put(path, data=bomb, headers={"Content-Encoding": "gzip"})
            if "documents" in path
            else await client.post(path, data=bomb, headers={"Content-Encoding": "gzip"})
        )
        assert response.status == 415
        assert (await response.json())["error"]["code"] == "unsupported_content_encoding"
    for encoding in ("br", "zstd", "deflate"):
        response = await client.put(
            "/v1/collections/docs", data=b"\x00\x01\x02", headers={"Content-Encoding": encoding}
        )
        body = await response.text()
        assert response.status == 415 and "Brotli" not in body and "install" not in body, body


async def test_errors_aiohttp_raises_before_routing_are_json_and_log_one_line(make_client, caplog):
    client = await make_client(settings())
    caplog.set_level(logging.DEBUG)
    response = await client.get("/v1/collections/" + "x" * 10_000)
    assert response.status in (400, 414) and response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error["code"] == "request_too_large" and "8190" not in error.get("detail", "")
    assert "Got more than" not in error["message"]
    malformed = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(malformed) == 1 and malformed[0].exc_info is None


async def test_a_huge_integer_is_a_clear_400_without_python_internals(make_client):
    client = await make_client(settings())
    await create_collection(client, "docs", L3)
    body = '{"text": "x", "k": ' + "9" * 5000 + "}"
    response = await client.post("/v1/collections/docs/query", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert "set_int_max_str_digits" not in message and "digits" in message


async def test_a_connection_that_never_finishes_its_headers_is_closed(make_client):
    client = await make_client(settings(header_timeout_s=1.0))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for line in range(400):  # one header line every 0.3 s (2 minutes), never the blank line ending them
        try:
            closed = await asyncio.wait_for(reader.read(1024), 0.3) == b""
        except TimeoutError:
            pass
        except ConnectionError:
            closed = True
        if closed:
            break
        try:
            writer.write(f"X-Slow-{line}: 1\r\n".encode())
            await writer.drain()
        except ConnectionError:
            closed = True
            break
    writer.close()
    assert closed, "the server kept a header-dribbling connection open"
    assert (await client.get("/healthz")).status == 200


async def test_connections_beyond_the_cap_get_a_json_503_and_are_closed(make_client):
    client = await make_client(settings(max_connections=2))
    held = [await asyncio.open_connection(client.host, client.port) for _ in range(2)]
    try:

        async def accepted() -> bool:  # the server holds both: the next one is over the cap
            return len(client.server.runner.server.connections) == 2

        await until(accepted, "the server to accept the held connections")
        reader, writer = await asyncio.open_connection(client.host, client.port)
        answer = await reader.read()  # until the server closes it
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b'"too_many_connections"' in answer, answer
    finally:
        for _, held_writer in held:
            held_writer.close()


# -- 3. retire after a forced cutover ----------------------------------------------------------


async def test_retire_after_a_forced_cutover_is_refused_until_the_new_model_covers_every_document(make_client, dsn):
    client = await make_client(settings_with(enabled=False), admin_token=TOKEN)
    await seed(client, n=30)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    assert (await admin(client, "POST", "read-model", {"model": L6, "force": True}))[0] == 200
    code, body = await admin(client, "POST", "retire", {"model": L3})
    assert code == 409 and body["error"]["code"] == "index_incomplete" and "lose" in body["error"]["message"]
    status = (await admin(client, "GET", "status"))[1]
    assert set(status["models"]) == {L3, L6} and status["models"][L3]["rows"] == 30

    from gateway.api.keys import EMBEDDINGS as EMB
    from gateway.api.keys import POOL
    from gateway.services.backfill import BackfillWorker

    worker = BackfillWorker(client.app[POOL], client.app[EMB], "w", chunk_size=8, poll_interval_s=0.05)
    counters = worker.counters
    await finish_without_stalling(worker.run(asyncio.Event(), burst=True), lambda: counters.chunks)
    code, body = await admin(client, "POST", "retire", {"model": L3})
    assert code == 200 and body["phase"] == "steady", body
    status = (await admin(client, "GET", "status"))[1]
    assert status["models"][L6]["rows"] == 30 and status["models"][L6]["coverage"] == 1.0
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM driftgate.backfill_chunks") == 0
    finally:
        await conn.close()


# -- 4. out-of-range vectors --------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e39, -1e39, 1e-50])
async def test_a_vector_out_of_float32_range_is_a_400_invalid_vector(make_client, value):
    client = await make_client(settings())
    await create_collection(client, "docs", L3)
    await client.put("/v1/collections/docs/documents/a", json={"text": "some text"})
    response = await client.post("/v1/collections/docs/query", json={"vector": [value] * 384, "model": L3})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_vector"


async def test_a_huge_but_finite_vector_gets_finite_scores_and_strict_json(make_client):
    client = await make_client(settings())
    await create_collection(client, "docs", L3)
    await client.put("/v1/collections/docs/documents/a", json={"text": "some text"})
    response = await client.post("/v1/collections/docs/query", json={"vector": [3e38] * 384, "model": L3})
    assert response.status == 200
    body = strict_json(await response.text())
    assert body["hits"] and all(-1.0 <= hit["score"] <= 1.0 for hit in body["hits"])


# -- 5. log forging ------------------------------------------------------------------------------


async def test_a_request_path_with_a_newline_cannot_forge_a_log_line(make_client):
    client = await make_client(settings(), admin_token=TOKEN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s [%(request_id)s]: %(message)s"))
    handler.addFilter(RequestContextFilter())
    logging.getLogger("gateway").addHandler(handler)
    try:
        response = await client.get("/admin/v1/collections/x%0AINFO%20forged%20line%0D%0A/status")
    finally:
        logging.getLogger("gateway").removeHandler(handler)
    assert response.status == 401
    lines = stream.getvalue().splitlines()
    assert lines and all(not line.startswith("INFO forged") for line in lines), lines
    assert any("\\n" in line for line in lines), lines


# -- 8. the embedded server's lifecycle: tests/test_embedded_server.py ---------------------------


# -- 9. big answers ---------------------------------------------------------------------------------


async def test_concurrent_large_answers_are_bounded_and_streamed_whole(make_client):
    client = await make_client(settings(max_large_responses=2))
    await create_collection(client, "docs", L3)
    docs = [{"id": doc_id, "text": text} for doc_id, text in vaswani(limit=200).corpus]
    assert (await client.post("/v1/collections/docs/documents", json={"documents": docs})).status == 200

    async def big_query(i: int) -> dict:
        response = await client.post("/v1/collections/docs/query", json={"text": f"document {i}", "k": 150})
        assert response.status == 200 and response.headers["X-Driftgate-Model"] == L3
        return strict_json(await response.text())

    answers = await asyncio.gather(*(big_query(i) for i in range(8)))
    assert [len(a["hits"]) for a in answers] == [150] * 8
    assert all(len(a["hits"]) == 150 and a["model"] == L3 and "text" in a["hits"][0] for a in answers)
    exposition = await (await client.get("/metrics")).text()
    assert 1 <= metric(exposition, "driftgate_large_responses_high_water") <= 2
    small = await client.post("/v1/collections/docs/query", json={"text": "document 1", "k": 5})
    assert len((await small.json())["hits"]) == 5


async def test_the_ready_phase_is_still_reached_with_the_new_scheduler(make_client):
    """The backfill's bulk work shares the encoder with interactive writes and still finishes."""
    client = await make_client(settings_with(), admin_token=TOKEN)
    await seed(client, n=24)
    assert (await admin(client, "POST", "migrations", {"to_model": L6}))[0] == 202
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await client.put(f"/v1/collections/docs/documents/w{n % 5}", json={"text": f"write {n}"})

    writers = [asyncio.ensure_future(writer()) for _ in range(3)]
    try:
        await wait_phase(client, "ready")
    finally:
        stop.set()
        await asyncio.gather(*writers)


# -- shutdown -----------------------------------------------------------------------------------


async def test_a_gateway_whose_workers_poll_hourly_still_stops_them_at_shutdown_without_cancelling(make_client):
    # the backfill worker and the adoption runner end on the stop, not after sleeping out their
    # poll interval; the adoption runner used to sleep it out (0.5 s by default on every shutdown,
    # here an hour: cut off by the gateway's 30 s cap on a worker's stop, which cancels it)
    hourly = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 4},
        server={**SLOW_MACHINE_SERVER, "sync_poll_interval_s": 60},
        backfill={"poll_interval_s": 3600},
        adoption={"poll_interval_s": 3600},
    )
    client = await make_client(hourly)
    assert (await client.get("/readyz")).status == 200
    workers = {t.get_name(): t for t in asyncio.all_tasks() if t.get_name() in ("backfill-worker", "adoption-runner")}
    assert set(workers) == {"backfill-worker", "adoption-runner"}
    await client.close()
    assert {name: (task.done(), task.cancelled()) for name, task in workers.items()} == {
        "backfill-worker": (True, False),
        "adoption-runner": (True, False),
    }
