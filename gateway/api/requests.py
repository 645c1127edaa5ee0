"""Request bodies: parsed strictly, checked against the configured limits, 400 on any problem."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.api import fastjson
from gateway.api.keys import SETTINGS
from gateway.config import LimitsConfig
from gateway.domain.errors import InvalidRequest, PayloadTooLarge
from gateway.domain.filters import Filter, parse_filter
from gateway.domain.storage import Storage

T = TypeVar("T", bound=BaseModel)


class StrictBody(BaseModel):
    """A JSON body: unknown fields and loose types (a string for a number) are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CreateCollection(StrictBody):
    model: str = Field(min_length=1, description="model key from `driftgate models list`")
    storage: Storage | None = Field(
        default=None,
        strict=False,
        description="the model table's element type: vector (float32, the default) or halfvec "
        "(float16: half the size of table and index, docs/storage.md); an existing collection "
        "asked for with another storage answers 409",
    )


class DocumentBody(StrictBody):
    text: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class BatchDocument(DocumentBody):
    id: str  # checked by validate_document_id, like the path's id


class BatchBody(StrictBody):
    documents: list[BatchDocument] = Field(min_length=1)


FILTER_DOC = (
    "metadata filter (MongoDB-style: $eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not on dotted "
    'paths; {"key": value} is $eq); see docs/api.md'
)


class GetDocumentsBody(StrictBody):
    ids: list[str] = Field(description="document ids; missing ones are left out of the answer")


class ListDocumentsBody(StrictBody):
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DOC)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, description="next_cursor of the previous page")


class CountDocumentsBody(StrictBody):
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DOC)


class DeleteDocumentsBody(StrictBody):
    ids: list[str] | None = Field(default=None, description="delete these documents (missing ones are skipped)")
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DOC)

    @model_validator(mode="after")
    def _ids_or_filter(self) -> DeleteDocumentsBody:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("send exactly one of `ids` or `filter`")
        return self


class QueryBody(StrictBody):
    text: str | None = Field(default=None, min_length=1)
    vector: list[float] | None = None
    model: str | None = Field(default=None, description="required with `vector`: the model that made it")
    k: int = Field(default=10, ge=1)
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DOC)

    @model_validator(mode="after")
    def _text_or_vector(self) -> QueryBody:
        if (self.text is None) == (self.vector is None):
            raise ValueError("send exactly one of `text` or `vector`")
        if self.vector is not None and not self.model:
            raise ValueError("a `vector` query must name the `model` that produced it")
        return self


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


MAX_INT_DIGITS = 64


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer has {len(text.lstrip('-'))} digits, the limit is {MAX_INT_DIGITS}")
    return int(text)


_COUNT_OFF_LOOP = 1 << 18  # bodies of more bytes are counted in a thread, so the event loop keeps its turns
_WINDOW = 1 << 16  # bytes counted at a time: a run of millions of numbers stops at the budget


def count_values(raw: bytes, budget: int) -> int | None:
    """An upper bound on the JSON values (numbers, strings, containers...) in `raw`, or None
    when it exceeds `budget`.

    Commas outside strings plus strings, found with C-speed byte searches; the Python loop
    runs once per string or 64 kB window and stops at the budget, so a hostile body costs
    O(budget), never O(its size): parsing 8 million numbers takes seconds of the event loop,
    refusing them a few milliseconds.
    """
    if len(raw) // 2 + 1 <= budget:  # every value but the first takes a comma or a colon and one byte
        return len(raw) // 2 + 1
    if b"\\" in raw:  # drop escaped backslashes, then escaped quotes: every quote left opens or closes a string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    values, pos, end = 1, 0, len(raw)
    while values <= budget:
        opening = raw.find(b'"', pos)
        stop = end if opening < 0 else opening
        while pos < stop and values <= budget:
            window = min(stop, pos + _WINDOW)
            values += raw.count(b",", pos, window)
            pos = window
        if opening < 0 or values > budget:
            break
        closing = raw.find(b'"', opening + 1)
        if closing < 0:
            break  # unterminated: the parser says so
        values += 1
        pos = closing + 1
    return values if values <= budget else None


async def _count_off_loop(raw: bytes, budget: int) -> int | None:
    if len(raw) < _COUNT_OFF_LOOP:
        return count_values(raw, budget)
    return await asyncio.to_thread(count_values, raw, budget)  # the count loops in Python: the loop keeps its turns


def _too_many_values(budget: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body holds more than {budget} JSON values (limits.max_json_values); "
        "send fewer documents per batch, or smaller metadata, filters or vectors",
        code="too_many_values",
    )


async def read_body(request: web.Request, limits: LimitsConfig, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to hold more than `limits.max_json_values`
    values or more than `max_bytes`: a 16 MB body of numbers is refused after its first half
    megabyte, without being joined, counted whole or parsed. (aiohttp then reads and discards
    the rest for up to 10 s, so that the client, still sending, gets the 413 and not a reset.)"""
    budget = limits.max_json_values
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge("request body is too large; split the batch")
    parts: list[bytes] = []
    size, separators, checkpoint = 0, 0, _COUNT_OFF_LOOP
    async for chunk in request.content.iter_any():
        before = size
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge("request body is too large; split the batch")
        parts.append(chunk)
        if size // 2 + 1 <= budget:  # too short to hold more values (see count_values): no need to count
            continue
        if before // 2 + 1 <= budget:  # the first chunk past that size: count the ones before it too
            separators = sum(part.count(b",") + part.count(b'"') for part in parts[:-1])
        separators += chunk.count(b",") + chunk.count(b'"')
        if separators > budget and size >= checkpoint:  # maybe over: count what came so far exactly
            parts = [b"".join(parts)]
            if await _count_off_loop(parts[0], budget) is None:
                raise _too_many_values(budget)
            checkpoint = 2 * size  # at most twice the body is ever counted
    raw = b"".join(parts)
    if separators > budget and await _count_off_loop(raw, budget) is None:
        raise _too_many_values(budget)
    return raw


async def parse_body(request: web.Request, model: type[T]) -> T:
    """Read and validate a JSON body; its size and number of values are bounded (413) while it
    is read, before anything parses it."""
    settings = request.config_dict[SETTINGS]  # also from a sub-application
    raw = await read_body(request, settings.limits, settings.server.max_body_bytes)
    if not raw:
        raise InvalidRequest("request body is empty; send a JSON object", code="invalid_json")
    data = fastjson.loads(raw)  # the same answer, faster, where orjson agrees (fastjson.py)
    try:
        if data is fastjson.NOT_FAST:
            data = json.loads(raw, parse_constant=_reject_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code="invalid_json"
        ) from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8 text", code="invalid_json") from None
    except ValueError as exc:  # our own hooks' messages; never the library's
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_request")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()]
        raise InvalidRequest("; ".join(problems), code="invalid_request") from None


def check_storable(value: Any, where: str) -> None:
    """Refuse values PostgreSQL cannot store as text or jsonb: NUL characters, lone
    surrogates, and numbers that overflowed to infinity (JSON has no NaN or Infinity)."""
    if isinstance(value, str):
        _check_string(value, where)
        return
    # (item, parent link, key): the path is spelled out only for the one that is refused
    stack: list[tuple[Any, Any, Any]] = [(value, None, where)]
    while stack:
        link = stack.pop()
        item = link[0]
        if isinstance(item, str):
            if "\x00" in item or not item.isascii():
                _check_string(item, _path(link))
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidRequest(f"{_path(link)} holds a number too large for JSON", code="invalid_number")
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, link, " key"))
                stack.append((child, link, key))
        elif isinstance(item, list):
            stack.extend((child, link, index) for index, child in enumerate(item))


def _path(link: tuple[Any, Any, Any]) -> str:
    """'metadata.a.0' (or 'metadata.a key') for a link of check_storable's walk."""
    parts = []
    while link is not None:
        parts.append(link[2])
        link = link[1]
    parts.reverse()
    head, rest = str(parts[0]), parts[1:]
    return head + "".join(part if part == " key" else f".{part}" for part in rest)


def _check_string(text: str, where: str) -> None:
    if "\x00" in text:
        raise InvalidRequest(f"{where} contains a NUL character, which PostgreSQL cannot store", code="invalid_text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{where} is not valid Unicode (lone surrogate)", code="invalid_text") from None


def check_text(text: str, limits: LimitsConfig, where: str = "text") -> None:
    if not text.strip():
        raise InvalidRequest(f"{where} is blank; send some text", code="empty_text")
    if len(text) > limits.max_text_chars:
        raise InvalidRequest(
            f"{where} has {len(text)} characters, the limit is {limits.max_text_chars}; split the document",
            code="text_too_long",
        )
    check_storable(text, where)


def check_metadata(metadata: dict, limits: LimitsConfig, where: str = "metadata") -> None:
    """Size first (in C), then the walk: a metadata object of millions of values is refused in
    milliseconds instead of being walked for seconds on the event loop."""
    if not metadata:  # the common case in bulk writes: nothing to check, and "{}" is within any limit (>= 2)
        return
    limit = limits.max_metadata_bytes
    try:  # orjson's compact form is never longer than the standard library's
        at_least = len(orjson.dumps(metadata))
    except orjson.JSONEncodeError:  # a lone surrogate: only the standard library writes it (escaped)
        at_least = len(json.dumps(metadata))
    if at_least > limit:
        raise InvalidRequest(
            f"{where} is at least {at_least} bytes as JSON, the limit is {limit}", code="metadata_too_large"
        )
    check_storable(metadata, where)
    size = len(json.dumps(metadata))
    if size > limit:
        raise InvalidRequest(f"{where} is {size} bytes as JSON, the limit is {limit}", code="metadata_too_large")


def parse_metadata_filter(raw: dict | None, limits: LimitsConfig) -> Filter | None:
    """A request's `filter`: storable, within the metadata size limit, and in the filter language."""
    if raw is None:
        return None
    check_metadata(raw, limits, "filter")
    return parse_filter(raw)


def check_id_count(ids: list[str], limits: LimitsConfig, where: str = "ids") -> None:
    if len(ids) > limits.max_batch_documents:
        raise InvalidRequest(
            f"{where} has {len(ids)} ids, the limit is {limits.max_batch_documents}; split the request",
            code="batch_too_large",
        )


def check_document(doc: DocumentBody, limits: LimitsConfig, where: str = "") -> None:
    check_text(doc.text, limits, f"{where}text")
    check_metadata(doc.metadata, limits, f"{where}metadata")
