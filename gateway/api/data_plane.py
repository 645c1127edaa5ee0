"""Data-plane handlers (applications): collections, documents, queries. Thin: parse, call, shape."""

from __future__ import annotations

import base64
import time

from aiohttp import web

from gateway.api.keys import COLLECTIONS, LARGE_RESPONSES, METRICS, SETTINGS, SHADOW
from gateway.api.requests import (
    BatchBody,
    CountDocumentsBody,
    CreateCollection,
    DeleteDocumentsBody,
    DocumentBody,
    GetDocumentsBody,
    ListDocumentsBody,
    QueryBody,
    check_document,
    check_id_count,
    check_text,
    parse_body,
    parse_metadata_filter,
)
from gateway.api.responses import json_response, strict_dumps
from gateway.domain.errors import InvalidFilter, InvalidRequest
from gateway.domain.storage import Storage
from gateway.services.collections import DocumentRow, NewDocument

routes = web.RouteTableDef()
# the query route, registered before every other route (app.py): aiohttp tries the resources
# under one path prefix in registration order, awaiting each one's match, on every request
query_routes = web.RouteTableDef()


@routes.put("/v1/collections/{collection}")
async def put_collection(request: web.Request) -> web.Response:
    body = await parse_body(request, CreateCollection)
    name = request.match_info["collection"]
    state, created = await request.app[COLLECTIONS].create(name, body.model, body.storage)
    storage = (await request.app[COLLECTIONS].storage(name))[state.read_model]
    answer = {"name": state.name, "model": state.read_model, "phase": state.phase.value}
    if storage != Storage.VECTOR:  # said where it is not the default, so older answers stay as they were
        answer["storage"] = storage.value
    return json_response(answer, status=201 if created else 200)


@routes.get("/v1/collections/{collection}")
async def get_collection(request: web.Request) -> web.Response:
    name = request.match_info["collection"]
    state, count = await request.app[COLLECTIONS].describe(name)
    storage = {m: s for m, s in (await request.app[COLLECTIONS].storage(name)).items() if m in state.write_models}
    answer = {
        "name": state.name,
        "read_model": state.read_model,
        "write_models": list(state.write_models),
        "phase": state.phase.value,
        "documents": count,
    }
    if any(s != Storage.VECTOR for s in storage.values()):  # absent: every table is `vector`
        answer["storage"] = {model: s.value for model, s in storage.items()}
    return json_response(answer)


@routes.put("/v1/collections/{collection}/documents/{id}")
async def put_document(request: web.Request) -> web.Response:
    body = await parse_body(request, DocumentBody)
    check_document(body, request.app[SETTINGS].limits)
    doc = NewDocument(request.match_info["id"], body.text, body.metadata)
    [result] = await request.app[COLLECTIONS].upsert(request.match_info["collection"], [doc])
    return json_response({"id": result.id, "version": result.version, "truncated": result.truncated})


@routes.post("/v1/collections/{collection}/documents")
async def post_documents(request: web.Request) -> web.Response:
    limits = request.app[SETTINGS].limits
    body = await parse_body(request, BatchBody)
    if len(body.documents) > limits.max_batch_documents:
        raise InvalidRequest(
            f"batch has {len(body.documents)} documents, the limit is {limits.max_batch_documents}; split it",
            code="batch_too_large",
        )
    for index, doc in enumerate(body.documents):
        check_document(doc, limits, f"documents.{index}.")
    docs = [NewDocument(d.id, d.text, d.metadata) for d in body.documents]
    results = await request.app[COLLECTIONS].upsert(request.match_info["collection"], docs)
    return json_response({"results": [{"id": r.id, "version": r.version, "truncated": r.truncated} for r in results]})


@routes.get("/v1/collections/{collection}/documents/{id}")
async def get_document(request: web.Request) -> web.Response:
    row = await request.app[COLLECTIONS].get_document(request.match_info["collection"], request.match_info["id"])
    return json_response({"id": row.id, "text": row.text, "metadata": row.metadata, "version": row.version})


@routes.delete("/v1/collections/{collection}/documents/{id}")
async def delete_document(request: web.Request) -> web.Response:
    doc_id = request.match_info["id"]
    await request.app[COLLECTIONS].delete_document(request.match_info["collection"], doc_id)
    return json_response({"id": doc_id, "deleted": True})


@routes.post("/v1/collections/{collection}/documents:get")
async def get_documents(request: web.Request) -> web.Response:
    body = await parse_body(request, GetDocumentsBody)
    check_id_count(body.ids, request.app[SETTINGS].limits)
    rows = await request.app[COLLECTIONS].get_documents(request.match_info["collection"], body.ids)
    return json_response({"documents": [_document(r) for r in rows]})


@routes.post("/v1/collections/{collection}/documents:list")
async def list_documents(request: web.Request) -> web.Response:
    body = await parse_body(request, ListDocumentsBody)
    metadata_filter = parse_metadata_filter(body.filter, request.app[SETTINGS].limits)
    after = None if body.cursor is None else decode_cursor(body.cursor)
    rows = await request.app[COLLECTIONS].list_documents(
        request.match_info["collection"], metadata_filter, body.limit + 1, after
    )
    page = rows[: body.limit]
    next_cursor = encode_cursor(page[-1].id) if len(rows) > body.limit else None
    return json_response({"documents": [_document(r) for r in page], "next_cursor": next_cursor})


@routes.post("/v1/collections/{collection}/documents:count")
async def count_documents(request: web.Request) -> web.Response:
    body = await parse_body(request, CountDocumentsBody)
    metadata_filter = parse_metadata_filter(body.filter, request.app[SETTINGS].limits)
    count = await request.app[COLLECTIONS].count_documents(request.match_info["collection"], metadata_filter)
    return json_response({"count": count})


@routes.post("/v1/collections/{collection}/documents:delete")
async def delete_documents(request: web.Request) -> web.Response:
    limits = request.app[SETTINGS].limits
    body = await parse_body(request, DeleteDocumentsBody)
    if body.ids is not None:
        check_id_count(body.ids, limits)
    metadata_filter = parse_metadata_filter(body.filter, limits)
    if body.filter == {}:
        raise InvalidFilter(
            'filter: an empty filter would delete every document; name a condition (e.g. {"source": "old-crawl"}) '
            "or delete by ids",
        )
    deleted = await request.app[COLLECTIONS].delete_documents(
        request.match_info["collection"], body.ids, metadata_filter
    )
    return json_response({"deleted": deleted})


def _document(row: DocumentRow) -> dict:
    return {"id": row.id, "text": row.text, "metadata": row.metadata, "version": row.version}


def encode_cursor(last_id: str) -> str:
    """An opaque cursor: the last id of a page (callers must not build or parse it)."""
    return base64.urlsafe_b64encode(b"v1:" + last_id.encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        after = raw[3:].decode()
        if not raw.startswith(b"v1:") or "\x00" in after:
            raise ValueError
        return after
    except ValueError:
        raise InvalidRequest(
            "cursor is not one this gateway gave out; pass next_cursor from the previous page unchanged",
            code="invalid_cursor",
        ) from None


@query_routes.post("/v1/collections/{collection}/query")
async def query(request: web.Request) -> web.StreamResponse:
    limits = request.app[SETTINGS].limits
    body = await parse_body(request, QueryBody)
    if body.k > limits.max_k:
        raise InvalidRequest(f"k is {body.k}, the limit is {limits.max_k}", code="k_out_of_range")
    metadata_filter = parse_metadata_filter(body.filter, limits)
    large = request.app[LARGE_RESPONSES]
    if not large.is_large(body.k):  # the common answer: no slot to take, built whole
        result = await _answer_query(request, body, metadata_filter)
        return json_response(
            {"model": result.model, "truncated": result.truncated, "hits": [_hit(h) for h in result.hits]}
            | ({"adapted_from": result.adapted_from} if result.adapted_from else {}),
            headers={"X-Driftgate-Model": result.model_header},
        )
    async with large.slot(body.k):
        return await _stream_hits(request, await _answer_query(request, body, metadata_filter))


async def _answer_query(request: web.Request, body: QueryBody, metadata_filter):
    """Run the query (text or vector) and count it in the metrics."""
    limits = request.app[SETTINGS].limits
    service = request.app[COLLECTIONS]
    name = request.match_info["collection"]
    started = time.perf_counter()
    if body.text is not None:
        check_text(body.text, limits)
        result = await service.query_text(name, body.text, body.k, metadata_filter)
        # after the answer is computed and before it is sent: offer() never waits
        request.app[SHADOW].offer(
            result,
            text=body.text,
            k=body.k,
            metadata_filter=metadata_filter,
            request_id=request.headers.get("X-Request-Id"),
        )
    else:
        assert body.vector is not None and body.model is not None
        result = await service.query_vector(name, body.vector, body.model, body.k, metadata_filter)
    request.app[METRICS].query_latency_of(name, result.model).observe(time.perf_counter() - started)
    if result.adapted_from:
        request.app[METRICS].adapted_queries.labels(name, result.adapted_from).inc()
    return result


def _hit(hit) -> dict:
    return {"id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata}


async def _stream_hits(request: web.Request, result) -> web.StreamResponse:
    """The same JSON as the small answer, written hit by hit instead of built whole in memory."""
    response = web.StreamResponse(
        headers={"X-Driftgate-Model": result.model_header, "Content-Type": "application/json"}
    )
    await response.prepare(request)
    head = strict_dumps({"model": result.model, "truncated": result.truncated})
    await response.write(head[:-1].encode() + b', "hits": [')
    for i, hit in enumerate(result.hits):
        await response.write((", " if i else "").encode() + strict_dumps(_hit(hit)).encode())
    await response.write(b"]}")
    await response.write_eof()
    return response
