"""OpenAPI 3 description of every endpoint, built from the same models that parse requests."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from gateway import __version__
from gateway.api.admin import (
    AdapterFitBody,
    BackfillBody,
    PlanMigration,
    ReadModeBody,
    ReadModelBody,
    RetireBody,
    ShadowBody,
    StartMigration,
    VerifyBody,
)
from gateway.api.adoption import AdoptBody
from gateway.api.embeddings import EmbeddingsBody
from gateway.api.requests import BatchBody, CreateCollection, DocumentBody, QueryBody
from gateway.api.responses import json_response
from gateway.domain.backfill import BackfillState
from gateway.domain.phases import Phase

routes = web.RouteTableDef()

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_NAME = {
    "name": "collection",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,47}$"},
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 256}}


_COMPONENTS: dict[str, dict] = {}


def _schema(model: type[BaseModel]) -> dict:
    """A model's JSON schema with its nested models moved to components/schemas."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _COMPONENTS.update(schema.pop("$defs", {}))
    return schema


_BACKFILL_STATE = {"type": "string", "enum": [s.value for s in BackfillState]}
_STATUS = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": [p.value for p in Phase]},
        "read_model": {"type": "string"},
        "write_models": {"type": "array", "items": {"type": "string"}},
        "from_model": {"type": "string", "nullable": True},
        "to_model": {"type": "string", "nullable": True},
        "backfill": {"type": "object", "properties": {"state": _BACKFILL_STATE}},
    },
}
_BACKFILL_ANSWER = {
    "type": "object",
    "properties": {"state": _BACKFILL_STATE, "max_rate": {"type": "number", "nullable": True}},
}


def _op(
    summary: str,
    ok: str,
    *,
    body: type[BaseModel] | None = None,
    params: tuple = (),
    errors=(400, 404),
    answer: dict | None = None,
) -> dict:
    schema = answer or {"type": "object"}
    responses = {ok: {"description": "success", "content": {"application/json": {"schema": schema}}}}
    for status in errors:
        responses[str(status)] = {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
    operation: dict = {"summary": summary, "parameters": list(params), "responses": responses}
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(body)}},
        }
    return operation


def build_spec() -> dict:
    coll = "/v1/collections/{collection}"
    doc = coll + "/documents/{id}"
    spec = {
        "openapi": "3.0.3",
        "info": {
            "title": "driftgate",
            "version": __version__,
            "description": "Pinned-model embedding gateway for pgvector with zero-downtime model migrations.",
        },
        "paths": {
            coll: {
                "put": _op(
                    "Create a collection served by one model",
                    "201",
                    body=CreateCollection,
                    params=(_NAME,),
                    errors=(400, 409, 413),
                ),
                "get": _op("Describe a collection", "200", params=(_NAME,)),
            },
            coll + "/documents": {
                "post": _op(
                    "Upsert a batch of documents (all or nothing)",
                    "200",
                    body=BatchBody,
                    params=(_NAME,),
                    errors=(400, 404, 409, 413, 503),
                ),
            },
            doc: {
                "put": _op(
                    "Upsert one document",
                    "200",
                    body=DocumentBody,
                    params=(_NAME, _ID),
                    errors=(400, 404, 409, 413, 503),
                ),
                "get": _op("Read one document", "200", params=(_NAME, _ID)),
                "delete": _op("Delete one document", "200", params=(_NAME, _ID)),
            },
            coll + "/query": {
                "post": _op(
                    "k-NN search by text or by vector of the read model",
                    "200",
                    body=QueryBody,
                    params=(_NAME,),
                    errors=(400, 404, 409, 413, 503),
                ),
            },
            "/v1/embeddings": {
                "post": _op(
                    "OpenAI-compatible embeddings with a pinned model",
                    "200",
                    body=EmbeddingsBody,
                    errors=(400, 404, 409, 413, 503),
                ),
            },
            **_admin_paths(),
            "/healthz": {"get": _op("Liveness", "200", errors=())},
            "/readyz": {"get": _op("Readiness: database reachable, models loaded and verified", "200", errors=(503,))},
            "/metrics": {"get": _op("Prometheus metrics (text format)", "200", errors=())},
            "/openapi.json": {"get": _op("This document", "200", errors=())},
        },
    }
    spec["components"] = {
        "schemas": dict(_COMPONENTS),
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
    }
    return spec


def _admin_paths() -> dict:
    base = "/admin/v1/collections/{collection}"
    admin: dict = {"security": [{"adminToken": []}]}
    errors = (400, 401, 404, 409, 503)

    def op(summary: str, ok: str, body: type[BaseModel] | None, answer: dict | None = None) -> dict:
        return {**_op(summary, ok, body=body, params=(_NAME,), errors=errors, answer=answer), **admin}

    return {
        f"{base}/status": {"get": op("Migration status: phase, coverage, backfill, replicas", "200", None, _STATUS)},
        f"{base}/migrations": {"post": op("Start a migration (dual-write + backfill)", "202", StartMigration)},
        f"{base}/migrations/plan": {
            "post": op("Plan a migration: documents, tokens, time, cost; writes nothing", "200", PlanMigration)
        },
        f"{base}/backfill": {
            "post": op("Pause, resume or rate-limit the backfill", "200", BackfillBody, _BACKFILL_ANSWER)
        },
        f"{base}/shadow": {"post": op("Configure shadow reads", "200", ShadowBody)},
        f"{base}/read-model": {"post": op("Switch the read model (cutover or rollback)", "200", ReadModelBody)},
        f"{base}/read-target": {
            "post": {
                **op("Switch the read model (the path's first name; same as read-model)", "200", ReadModelBody),
                "deprecated": True,
            }
        },
        f"{base}/verify": {"post": op("Verify every written model", "200", VerifyBody)},
        f"{base}/retire": {"post": op("Retire the old model", "200", RetireBody)},
        f"{base}/abort": {"post": op("Abort the migration", "200", None)},
        f"{base}/adapter": {
            "post": op(
                "Fit the adapter between the migration's two models on backfilled pairs (held-out figures); "
                "409 no_migration, too_few_pairs, adapter_below_floor",
                "200",
                AdapterFitBody,
            ),
            "get": op("The adapter's version and held-out figures; 404 adapter_missing", "200", None),
        },
        f"{base}/read-mode": {
            "post": op(
                "Read mode native or adapted (new-model queries mapped into the old index), and whether raw "
                "vectors of the other model are translated; 409 adapter_missing, adapter_below_floor",
                "200",
                ReadModeBody,
            )
        },
        f"{base}/adopt": {
            "post": op(
                "Adopt an existing pgvector table as a new collection (sample check, "
                "import, optional follow); 409 vectors_mismatch when the stored vectors "
                "are not the model's",
                "202",
                AdoptBody,
            )
        },
        f"{base}/adopt/stop": {
            "post": op("Stop following the adopted table: drop its triggers and queue", "200", None)
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_spec())
