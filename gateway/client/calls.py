"""Every API call as a value: method, path, JSON body and how to read the answer.

Pure (no I/O), so that `Client` and `AsyncClient` share one definition of each call and differ
only in how they send it. Bulk calls are split into batches of at most `BATCH` items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from gateway.client.models import (
    BulkLoad,
    Collection,
    Document,
    Embeddings,
    Hit,
    MigrationState,
    Page,
    QueryResult,
    Report,
    Status,
    WriteResult,
)

T = TypeVar("T")
BATCH = 1000  # the gateway's default limit of documents or ids per request
Answer = tuple[int, Mapping[str, str], Any]  # status, headers, decoded JSON body


class Keep:
    """`backfill(max_rate=KEEP)`: leave the rate as it is."""


KEEP = Keep()


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    body: Any
    read: Callable[[Answer], T]
    admin: bool = False


def _c(name: str) -> str:
    return "/v1/collections/" + quote(name, safe="")


def _a(name: str, action: str) -> str:
    return f"/admin/v1/collections/{quote(name, safe='')}/{action}"


def _json(answer: Answer) -> Any:
    return answer[2]


def batches(items: Sequence[T], size: int = BATCH) -> list[Sequence[T]]:
    """`items` in slices of at most `size` (none for no items: nothing is sent)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- data plane -------------------------------------------------------------------------


def create_collection(name: str, model: str, storage: str | None = None) -> Call[Collection]:
    def read(answer: Answer) -> Collection:
        data = answer[2]
        storage = {data["model"]: data.get("storage", "vector")}  # absent: the default
        return Collection(
            data["name"], data["model"], (data["model"],), data["phase"], created=answer[0] == 201, storage=storage
        )

    body = {"model": model} if storage is None else {"model": model, "storage": storage}
    return Call("PUT", _c(name), body, read)


def get_collection(name: str) -> Call[Collection]:
    def read(answer: Answer) -> Collection:
        d = answer[2]
        return Collection(
            d["name"],
            d["read_model"],
            tuple(d["write_models"]),
            d["phase"],
            d["documents"],
            storage=d.get("storage") or dict.fromkeys(d["write_models"], "vector"),  # absent: all `vector`
        )

    return Call("GET", _c(name), None, read)


def put_document(collection: str, doc_id: str, text: str, metadata: Mapping[str, Any] | None) -> Call[WriteResult]:
    body = {"text": text, "metadata": dict(metadata or {})}
    return Call("PUT", f"{_c(collection)}/documents/{quote(doc_id, safe='')}", body, _write_result)


def _write_result(answer: Answer) -> WriteResult:
    d = answer[2]
    return WriteResult(d["id"], d["version"], d.get("truncated", False))


def put_documents(collection: str, documents: Sequence[Document | Mapping[str, Any]]) -> Call[list[WriteResult]]:
    body = {"documents": [d.to_json() if isinstance(d, Document) else dict(d) for d in documents]}

    def read(answer: Answer) -> list[WriteResult]:
        return [WriteResult(r["id"], r["version"], r.get("truncated", False)) for r in answer[2]["results"]]

    return Call("POST", f"{_c(collection)}/documents", body, read)


def get_document(collection: str, doc_id: str) -> Call[Document]:
    return Call("GET", f"{_c(collection)}/documents/{quote(doc_id, safe='')}", None, lambda a: Document.from_json(a[2]))


def get_documents(collection: str, ids: Sequence[str]) -> Call[list[Document]]:
    return Call("POST", f"{_c(collection)}/documents:get", {"ids": list(ids)}, _documents)


def _documents(answer: Answer) -> list[Document]:
    return [Document.from_json(d) for d in answer[2]["documents"]]


def delete_document(collection: str, doc_id: str) -> Call[bool]:
    return Call("DELETE", f"{_c(collection)}/documents/{quote(doc_id, safe='')}", None, lambda a: a[2]["deleted"])


def delete_documents(collection: str, ids: Sequence[str] | None, filter: Mapping | None) -> Call[int]:
    body = {"ids": list(ids)} if ids is not None else {"filter": filter}
    return Call("POST", f"{_c(collection)}/documents:delete", body, lambda a: a[2]["deleted"])


def list_documents(collection: str, filter: Mapping | None, limit: int, cursor: str | None) -> Call[Page]:
    body: dict[str, Any] = {"limit": limit}
    if filter is not None:
        body["filter"] = filter
    if cursor is not None:
        body["cursor"] = cursor

    def read(answer: Answer) -> Page:
        return Page(tuple(_documents(answer)), answer[2]["next_cursor"])

    return Call("POST", f"{_c(collection)}/documents:list", body, read)


def count_documents(collection: str, filter: Mapping | None) -> Call[int]:
    body = {} if filter is None else {"filter": filter}
    return Call("POST", f"{_c(collection)}/documents:count", body, lambda a: a[2]["count"])


def query(
    collection: str,
    text: str | None,
    vector: Sequence[float] | None,
    model: str | None,
    k: int,
    filter: Mapping | None,
) -> Call[QueryResult]:
    if (text is None) == (vector is None):
        raise ValueError("query: pass exactly one of text or vector")
    body: dict[str, Any] = {"k": k}
    if text is not None:
        body["text"] = text
    else:
        body["vector"] = list(vector or ())
        body["model"] = model
    if filter is not None:
        body["filter"] = filter
    return Call("POST", f"{_c(collection)}/query", body, _query_result)


def _query_result(answer: Answer) -> QueryResult:
    data = answer[2]
    hits = tuple(Hit(h["id"], h["score"], h["text"], h["metadata"]) for h in data["hits"])
    return QueryResult(answer[1].get("x-driftgate-model", data["model"]), hits, data.get("truncated", False))


def bulk_load(collection: str, index: str) -> Call[BulkLoad]:
    """A bulk load; its body is the caller's stream of NDJSON lines, not `body`."""
    return Call(
        "POST",
        f"{_c(collection)}/documents:bulk?index={quote(index, safe='')}",
        None,
        lambda a: BulkLoad(**{k: a[2][k] for k in ("loaded", "chunks", "lines", "truncated", "index")}),
    )


NDJSON = {"Content-Type": "application/x-ndjson"}


def embed(model: str, texts: str | Sequence[str], input_type: str | None) -> Call[Embeddings]:
    body: dict[str, Any] = {"model": model, "input": texts if isinstance(texts, str) else list(texts)}
    if input_type is not None:
        body["input_type"] = input_type

    def read(answer: Answer) -> Embeddings:
        data = answer[2]
        ordered = sorted(data["data"], key=lambda item: item["index"])
        vectors = tuple(tuple(item["embedding"]) for item in ordered)
        return Embeddings(data["model"], vectors, data["usage"]["total_tokens"])

    return Call("POST", "/v1/embeddings", body, read)


# -- admin plane ------------------------------------------------------------------------


def _state(answer: Answer) -> MigrationState:
    return MigrationState.from_json(answer[2])


def _report(answer: Answer) -> Report:
    return Report(answer[2])


def status(collection: str) -> Call[Status]:
    return Call("GET", _a(collection, "status"), None, lambda a: Status.from_json(a[2]), admin=True)


def plan(collection: str, to_model: str, sample: int | None) -> Call[Report]:
    body: dict[str, Any] = {"to_model": to_model}
    if sample is not None:
        body["sample"] = sample
    return Call("POST", _a(collection, "migrations/plan"), body, _report, admin=True)


def start_migration(collection: str, to_model: str, storage: str = "vector") -> Call[MigrationState]:
    body = {"to_model": to_model, "storage": storage}
    return Call("POST", _a(collection, "migrations"), body, _state, admin=True)


def backfill(collection: str, action: str | None, max_rate: float | None | Keep) -> Call[Report]:
    body: dict[str, Any] = {"action": action}
    if not isinstance(max_rate, Keep):
        body["max_rate"] = max_rate
    return Call("POST", _a(collection, "backfill"), body, _report, admin=True)


def shadow(collection: str, model: str | None, sample_rate: float) -> Call[MigrationState]:
    body = {"model": model, "sample_rate": sample_rate}
    return Call("POST", _a(collection, "shadow"), body, _state, admin=True)


def verify(collection: str, sample: int) -> Call[Report]:
    return Call("POST", _a(collection, "verify"), {"sample": sample}, _report, admin=True)


def cutover(collection: str, model: str, force: bool) -> Call[MigrationState]:
    return Call("POST", _a(collection, "read-model"), {"model": model, "force": force}, _state, admin=True)


def retire(collection: str, model: str) -> Call[MigrationState]:
    return Call("POST", _a(collection, "retire"), {"model": model}, _state, admin=True)


def abort(collection: str) -> Call[MigrationState]:
    return Call("POST", _a(collection, "abort"), None, _state, admin=True)


def fit_adapter(collection: str, max_pairs: int | None) -> Call[Report]:
    body = {"max_pairs": max_pairs} if max_pairs is not None else {}
    return Call("POST", _a(collection, "adapter"), body, _report, admin=True)


def adapter(collection: str) -> Call[Report]:
    return Call("GET", _a(collection, "adapter"), None, _report, admin=True)


def read_mode(collection: str, mode: str, translate_vectors: bool | None) -> Call[MigrationState]:
    body: dict[str, Any] = {"mode": mode}
    if translate_vectors is not None:
        body["translate_vectors"] = translate_vectors
    return Call("POST", _a(collection, "read-mode"), body, _state, admin=True)


def adopt(collection: str, spec: Mapping[str, Any]) -> Call[Report]:
    return Call("POST", _a(collection, "adopt"), dict(spec), _report, admin=True)


def stop_adoption(collection: str) -> Call[Report]:
    return Call("POST", _a(collection, "adopt/stop"), None, _report, admin=True)


def adopt_body(
    table: str,
    id_column: str,
    text_column: str,
    vector_column: str,
    model: str,
    metadata_columns: Iterable[str],
    sample: int,
    follow: bool,
    metadata_json_column: str | None = None,
    where: Mapping[str, str | int] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "table": table,
        "id_column": id_column,
        "text_column": text_column,
        "vector_column": vector_column,
        "metadata_columns": list(metadata_columns),
        "model": model,
        "sample": sample,
        "follow": follow,
    }
    if metadata_json_column is not None:
        body["metadata_json_column"] = metadata_json_column
    if where is not None:
        if len(where) != 1:
            raise ValueError("where takes one column and its value, e.g. {'collection_id': '<uuid>'}")
        [(column, value)] = where.items()
        body["row_filter"] = {"column": column, "value": value}
    return body
