"""Bulk loads over HTTP: `POST /v1/collections/{c}/documents:bulk` takes NDJSON, one document a
line, streamed; `POST /admin/v1/collections/{c}/index` builds indexes a load left deferred.

The body is read as it arrives, never whole: lines are split here with a bound on each line's
size, parsed and checked like the batch route's documents, and grouped into chunks of at most
`limits.max_batch_documents` (a repeated id starts a new chunk, so the later line wins, as it
would in two requests). The route has no total time limit (a load of millions of lines takes
as long as it takes); instead a client that sends nothing for `server.request_timeout_s` is
cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import ValidationError

from gateway.api.keys import BULK, SETTINGS
from gateway.api.requests import BatchDocument, check_document
from gateway.api.responses import json_response
from gateway.config import LimitsConfig
from gateway.domain.errors import BadLine, GatewayError, InvalidRequest, RequestTimeout
from gateway.domain.identifiers import validate_document_id
from gateway.services.bulk import Chunk, IndexMode
from gateway.services.collections import NewDocument

routes = web.RouteTableDef()


def unbounded(handler):
    """Mark a handler that streams its input: the timeout middleware bounds its silences instead."""
    handler.streams_input = True
    return handler


@routes.post("/v1/collections/{collection}/documents:bulk")
@unbounded
async def bulk_load(request: web.Request) -> web.Response:
    try:
        mode = IndexMode(request.query.get("index", IndexMode.AUTO))
    except ValueError:
        raise InvalidRequest(
            f"index must be one of {', '.join(m.value for m in IndexMode)}", code="invalid_request"
        ) from None
    settings = request.app[SETTINGS]
    chunks = read_chunks(request, settings.limits, settings.server.request_timeout_s)
    report = await request.app[BULK].load(request.match_info["collection"], chunks, index=mode)
    return json_response(
        {
            "loaded": report.loaded,
            "chunks": report.chunks,
            "lines": report.lines,
            "truncated": report.truncated,
            "index": report.index,
        }
    )


@routes.post("/admin/v1/collections/{collection}/index")
async def build_indexes(request: web.Request) -> web.Response:
    built = await request.app[BULK].build_indexes(request.match_info["collection"])
    return json_response({"built": built})


async def read_chunks(request: web.Request, limits: LimitsConfig, silence_s: float) -> AsyncIterator[Chunk]:
    """Chunks of valid documents from the NDJSON body; a bad line raises `BadLine` naming it."""
    documents: list[NewDocument] = []
    ids: set[str] = set()
    number = 0
    async for line in lines(request.content, max_line_bytes(limits), silence_s):
        number += 1
        if not line.strip():
            continue
        document = parse_line(line, number, limits)
        if document.id in ids or len(documents) >= limits.max_batch_documents:
            yield Chunk(documents, number - 1)
            documents, ids = [], set()
        documents.append(document)
        ids.add(document.id)
    if documents:
        yield Chunk(documents, number)


def max_line_bytes(limits: LimitsConfig) -> int:
    """The longest line a valid document can need: its text (4 bytes a character at most, JSON
    escapes aside), its metadata, and room for the id and the keys."""
    return limits.max_text_chars * 4 + limits.max_metadata_bytes + 4096


def parse_line(line: bytes, number: int, limits: LimitsConfig) -> NewDocument:
    try:
        doc = BatchDocument.model_validate_json(line)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'line'}: {err['msg']}" for err in exc.errors()]
        raise BadLine(number, "; ".join(problems) + ' (expected {"id", "text", "metadata"})') from None
    try:
        validate_document_id(doc.id)
        check_document(doc, limits)
    except GatewayError as exc:
        raise BadLine(number, exc.message) from None
    return NewDocument(doc.id, doc.text, doc.metadata)


async def lines(stream, max_bytes: int, silence_s: float) -> AsyncIterator[bytes]:
    """Split a byte stream on newlines; a line over `max_bytes` or `silence_s` without data fails."""
    buffer = bytearray()
    number = 1
    while True:
        try:
            async with asyncio.timeout(silence_s):
                data = await stream.readany()
        except TimeoutError:
            raise RequestTimeout(
                f"nothing arrived for {silence_s:.0f} s after line {number - 1}; the lines before the "
                "last complete chunk are stored: send the rest again"
            ) from None
        if not data:
            break
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if len(line) > max_bytes:
                raise BadLine(number, f"the line is {len(line)} bytes, longer than any valid document ({max_bytes})")
            yield line
            number += 1
        if len(buffer) > max_bytes:
            raise BadLine(number, f"the line is longer than any valid document ({max_bytes} bytes) and goes on")
    if buffer:
        yield bytes(buffer)
