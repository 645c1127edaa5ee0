"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the gateway's success answers.

Named once here and referenced from /openapi.json (`#/components/schemas/...`), so that a
generated client gets typed answers. `tests/test_openapi.py` checks real answers against them.
"""

from __future__ import annotations

from typing import Any

from gateway.domain.backfill import BackfillState
from gateway.domain.phases import Phase
from gateway.domain.storage import Storage

Schema = dict[str, Any]


def obj(required: list[str], properties: Schema, *, extra: bool = True) -> Schema:
    """An object schema; answers may grow fields, so unknown ones are allowed unless `extra=False`."""
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    if not extra:
        schema["additionalProperties"] = False
    return schema


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
METADATA: Schema = {"type": "object", "additionalProperties": True}
STRINGS: Schema = {"type": "array", "items": STRING}
PHASE: Schema = {"type": "string", "enum": [p.value for p in Phase]}
BACKFILL_STATE: Schema = {"type": "string", "enum": [s.value for s in BackfillState]}
STORAGE: Schema = {"type": "string", "enum": [s.value for s in Storage]}
# one model of a collection in the status report; execution_provider: where this replica runs it
STATUS_MODEL: Schema = obj(
    ["dim", "rows", "coverage", "execution_provider"],
    {
        "dim": INTEGER,
        "rows": INTEGER,
        "coverage": NUMBER,
        "missing": INTEGER,
        "stale": INTEGER,
        "index_ready": BOOLEAN,
        "verified": nullable(BOOLEAN),
        "storage": STORAGE,
        "execution_provider": {"type": "string", "enum": ["cpu", "cuda", "remote"]},
    },
)

SCHEMAS: dict[str, Schema] = {
    "Error": obj(["error"], {"error": obj(["code", "message"], {"code": STRING, "message": STRING})}),
    "CreatedCollection": obj(
        ["name", "model", "phase"], {"name": STRING, "model": STRING, "phase": PHASE, "storage": STORAGE}
    ),
    "Collection": obj(
        ["name", "read_model", "write_models", "phase", "documents"],
        {
            "name": STRING,
            "read_model": STRING,
            "write_models": STRINGS,
            "phase": PHASE,
            "documents": INTEGER,
            # present when a write model's table is not `vector` (docs/storage.md)
            "storage": {"type": "object", "additionalProperties": STORAGE},
        },
    ),
    "WriteResult": obj(["id", "version"], {"id": STRING, "version": INTEGER, "truncated": BOOLEAN}),
    "WriteResults": obj(["results"], {"results": {"type": "array", "items": ref("WriteResult")}}),
    "Document": obj(
        ["id", "text", "metadata", "version"], {"id": STRING, "text": STRING, "metadata": METADATA, "version": INTEGER}
    ),
    "Documents": obj(["documents"], {"documents": {"type": "array", "items": ref("Document")}}),
    "DocumentPage": obj(
        ["documents", "next_cursor"],
        {"documents": {"type": "array", "items": ref("Document")}, "next_cursor": nullable(STRING)},
    ),
    "Count": obj(["count"], {"count": INTEGER}),
    "BulkLoad": obj(
        ["loaded", "chunks", "lines", "truncated", "index"],
        {
            "loaded": INTEGER,
            "chunks": INTEGER,
            "lines": INTEGER,
            "truncated": INTEGER,
            "index": {"type": "string", "enum": ["built", "deferred", "kept"]},
        },
    ),
    "IndexBuild": obj(["built"], {"built": STRINGS}),
    "ModelRescan": obj(["added", "models"], {"added": STRINGS, "models": STRINGS}),
    "Deleted": obj(["deleted"], {"deleted": INTEGER}),
    "DeletedDocument": obj(["id", "deleted"], {"id": STRING, "deleted": BOOLEAN}),
    "Hit": obj(
        ["id", "score", "text", "metadata"], {"id": STRING, "score": NUMBER, "text": STRING, "metadata": METADATA}
    ),
    "QueryResult": obj(
        ["model", "hits"],
        {"model": STRING, "truncated": BOOLEAN, "hits": {"type": "array", "items": ref("Hit")}},
    ),
    "Embeddings": obj(
        ["object", "data", "model", "usage"],
        {
            "object": {"const": "list"},
            "model": STRING,
            "data": {
                "type": "array",
                "items": obj(
                    ["object", "index", "embedding"],
                    {
                        "object": {"const": "embedding"},
                        "index": INTEGER,
                        "embedding": {"anyOf": [{"type": "array", "items": NUMBER}, STRING]},
                    },
                ),
            },
            "usage": obj(["prompt_tokens", "total_tokens"], {"prompt_tokens": INTEGER, "total_tokens": INTEGER}),
        },
    ),
    "MigrationState": obj(
        ["name", "phase", "read_model", "write_models", "state_version"],
        {
            "name": STRING,
            "phase": PHASE,
            "read_model": STRING,
            "write_models": STRINGS,
            "shadow_model": nullable(STRING),
            "shadow_sample_rate": NUMBER,
            "from_model": nullable(STRING),
            "to_model": nullable(STRING),
            "noise_floor_rate": NUMBER,
            "read_mode": {"type": "string", "enum": ["native", "adapted"]},
            "translate_vectors": BOOLEAN,
            "adapter_version": nullable(INTEGER),
            "state_version": INTEGER,
            "changed": BOOLEAN,
        },
    ),
    "Status": obj(
        ["name", "phase", "read_model", "write_models", "state_version", "models", "backfill", "replicas"],
        {
            "name": STRING,
            "phase": PHASE,
            "read_model": STRING,
            "write_models": STRINGS,
            "from_model": nullable(STRING),
            "to_model": nullable(STRING),
            "state_version": INTEGER,
            "models": {"type": "object", "additionalProperties": STATUS_MODEL},
            "backfill": obj([], {"state": BACKFILL_STATE, "done": INTEGER, "total": INTEGER}),
            "shadow": METADATA,
            "shadow_metrics": METADATA,
            "replicas": {"type": "array", "items": METADATA},
            "adoption": nullable(METADATA),
        },
    ),
    "Plan": obj(
        ["collection", "from_model", "to_model", "documents"],
        {
            "collection": STRING,
            "from_model": STRING,
            "to_model": STRING,
            "documents": INTEGER,
            "tokens": NUMBER,
            "estimated_seconds": NUMBER,
            "cost": nullable(NUMBER),
        },
    ),
    "Verification": obj(
        ["collection", "passed", "models"],
        {"collection": STRING, "state_version": INTEGER, "passed": BOOLEAN, "models": METADATA},
    ),
    "Adapter": obj(
        ["version", "pairs", "floor", "adapt", "translate"],
        {"version": INTEGER, "pairs": INTEGER, "floor": NUMBER, "adapt": METADATA, "translate": METADATA},
    ),
    "BackfillSetting": obj(["state"], {"state": BACKFILL_STATE, "max_rate": nullable(NUMBER)}),
    "Adoption": obj(["name", "adoption"], {"name": STRING, "adoption": METADATA}),
    "Health": obj(["status"], {"status": STRING}),
    "Readiness": obj(
        ["ready", "database"],
        {"ready": BOOLEAN, "database": BOOLEAN, "models_loaded": STRINGS, "models_drifted": METADATA},
    ),
    "OpenAPI": obj(["openapi", "paths"], {"openapi": STRING, "paths": METADATA}),
}
