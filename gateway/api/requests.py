"""Request bodies: parsed strictly, checked against the configured limits, 400 on any problem."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.api import fastjson
from gateway.config import LimitsConfig
from gateway.domain.errors import InvalidRequest
from gateway.domain.filters import Filter, parse_filter

T = TypeVar("T", bound=BaseModel)


class StrictBody(BaseModel):
    """A JSON body: unknown fields and loose types (a string for a number) are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CreateCollection(StrictBody):
    model: str = Field(min_length=1, description="model key from `driftgate models list`")


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


async def parse_body(request: web.Request, model: type[T]) -> T:
    """Read and validate a JSON body; the body size limit is enforced by aiohttp (413)."""
    raw = await request.read()
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
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidRequest(
                    f"{path} contains a NUL character, which PostgreSQL cannot store", code="invalid_text"
                )
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(f"{path} is not valid Unicode (lone surrogate)", code="invalid_text") from None
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidRequest(f"{path} holds a number too large for JSON", code="invalid_number")
        elif isinstance(item, dict):
            stack.extend((key, f"{path} key") for key in item)
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}.{i}") for i, v in enumerate(item))


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
    if not metadata:  # the common case in bulk writes: nothing to check, and "{}" is within any limit (>= 2)
        return
    check_storable(metadata, where)
    size = len(json.dumps(metadata))
    if size > limits.max_metadata_bytes:
        raise InvalidRequest(
            f"{where} is {size} bytes as JSON, the limit is {limits.max_metadata_bytes}", code="metadata_too_large"
        )


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
