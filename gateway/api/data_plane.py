"""Data-plane handlers (applications): collections, documents, queries. Thin: parse, call, shape."""

from __future__ import annotations

from aiohttp import web

from gateway.api.keys import COLLECTIONS, LARGE_RESPONSES, METRICS, SETTINGS, SHADOW
from gateway.api.large import LARGE_K
from gateway.api.requests import (
    BatchBody,
    CreateCollection,
    DocumentBody,
    QueryBody,
    check_document,
    check_metadata,
    check_text,
    parse_body,
)
from gateway.api.responses import json_response, strict_dumps
from gateway.domain.errors import InvalidRequest
from gateway.services.collections import NewDocument

routes = web.RouteTableDef()


@routes.put("/v1/collections/{collection}")
async def put_collection(request: web.Request) -> web.Response:
    body = await parse_body(request, CreateCollection)
    state, created = await request.app[COLLECTIONS].create(request.match_info["collection"], body.model)
    return json_response(
        {"name": state.name, "model": state.read_model, "phase": state.phase.value}, status=201 if created else 200
    )


@routes.get("/v1/collections/{collection}")
async def get_collection(request: web.Request) -> web.Response:
    state, count = await request.app[COLLECTIONS].describe(request.match_info["collection"])
    return json_response(
        {
            "name": state.name,
            "read_model": state.read_model,
            "write_models": list(state.write_models),
            "phase": state.phase.value,
            "documents": count,
        }
    )


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


@routes.post("/v1/collections/{collection}/query")
async def query(request: web.Request) -> web.StreamResponse:
    limits = request.app[SETTINGS].limits
    body = await parse_body(request, QueryBody)
    if body.k > limits.max_k:
        raise InvalidRequest(f"k is {body.k}, the limit is {limits.max_k}", code="k_out_of_range")
    if body.filter is not None:
        check_metadata(body.filter, limits, "filter")
    service = request.app[COLLECTIONS]
    name = request.match_info["collection"]
    async with request.app[LARGE_RESPONSES].slot(body.k):
        if body.text is not None:
            check_text(body.text, limits)
            result = await service.query_text(name, body.text, body.k, body.filter)
            # after the answer is computed and before it is sent: offer() never waits
            request.app[SHADOW].offer(
                result,
                text=body.text,
                k=body.k,
                metadata_filter=body.filter,
                request_id=request.headers.get("X-Request-Id"),
            )
        else:
            assert body.vector is not None and body.model is not None
            result = await service.query_vector(name, body.vector, body.model, body.k, body.filter)
        if result.adapted_from:
            request.app[METRICS].adapted_queries.labels(name, result.adapted_from).inc()
        if body.k <= LARGE_K:
            return json_response(
                {"model": result.model, "truncated": result.truncated, "hits": [_hit(h) for h in result.hits]}
                | ({"adapted_from": result.adapted_from} if result.adapted_from else {}),
                headers={"X-Driftgate-Model": result.model_header},
            )
        return await _stream_hits(request, result)


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
