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
from gateway.api.requests import (
    BatchBody,
    CountDocumentsBody,
    CreateCollection,
    DeleteDocumentsBody,
    DocumentBody,
    GetDocumentsBody,
    ListDocumentsBody,
    QueryBody,
)
from gateway.api.responses import json_response
from gateway.api.schemas import SCHEMAS, ref

routes = web.RouteTableDef()

_NAME = {
    "name": "collection",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,47}$"},
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 256}}
_INDEX_MODE = {
    "name": "index",
    "in": "query",
    "required": False,
    "description": "auto: keep the HNSW indexes while the load has written fewer rows than "
    "backfill.bulk_rebuild_fraction (0.1) of the collection's rows at its start, then as rebuild (an empty "
    "collection: rebuild from the start); rebuild: drop the HNSW indexes, build them when the load ends; later: "
    "leave them unbuilt (POST /admin/v1/collections/{collection}/index); keep: insert into them row by row",
    "schema": {"type": "string", "enum": ["auto", "rebuild", "later", "keep"], "default": "auto"},
}
_DATA_ERRORS = (400, 404, 409, 413, 503)
_ADMIN_ERRORS = (400, 401, 404, 409, 503)


def _schema(model: type[BaseModel], components: dict) -> dict:
    """A model's JSON schema with its nested models moved to components/schemas."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


class _Spec:
    """Collects operations; every one has an operationId, its answer's schema and its errors."""

    def __init__(self) -> None:
        self.paths: dict[str, dict] = {}
        self.components: dict[str, dict] = dict(SCHEMAS)

    def add(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        answer: str,
        *,
        ok: str = "200",
        body: type[BaseModel] | None = None,
        params: tuple = (),
        errors: tuple[int, ...] = (400, 404),
        admin: bool = False,
        content_type: str = "application/json",
        **extra,
    ) -> None:
        schema = {"type": "string"} if content_type != "application/json" else ref(answer)
        responses = {ok: {"description": answer, "content": {content_type: {"schema": schema}}}}
        for status in errors:
            responses[str(status)] = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
        operation: dict = {"operationId": operation_id, "summary": summary, "responses": responses, **extra}
        if params:
            operation["parameters"] = list(params)
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(body, self.components)}},
            }
        if admin:
            operation["security"] = [{"adminToken": []}]
        self.paths.setdefault(path, {})[method] = operation


def build_spec() -> dict:
    spec = _Spec()
    _data_plane(spec)
    _admin_plane(spec)
    spec.add("get", "/healthz", "healthz", "Liveness", "Health", errors=())
    spec.add(
        "get",
        "/readyz",
        "readyz",
        "Readiness: database reachable, models loaded and verified",
        "Readiness",
        errors=(503,),
    )
    spec.add("get", "/metrics", "metrics", "Prometheus metrics", "Metrics", errors=(), content_type="text/plain")
    spec.add("get", "/openapi.json", "openapi", "This document", "OpenAPI", errors=())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "driftgate",
            "version": __version__,
            "description": "Pinned-model embedding gateway for pgvector with zero-downtime model migrations.",
        },
        "servers": [{"url": "/", "description": "the gateway that served this document"}],
        "paths": spec.paths,
        "components": {
            "schemas": spec.components,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }


def _data_plane(spec: _Spec) -> None:
    coll = "/v1/collections/{collection}"
    doc = coll + "/documents/{id}"
    name, both = (_NAME,), (_NAME, _ID)
    spec.add(
        "put",
        coll,
        "create_collection",
        "Create a collection served by one model",
        "CreatedCollection",
        ok="201",
        body=CreateCollection,
        params=name,
        errors=(400, 409, 413),
    )
    spec.add("get", coll, "get_collection", "Describe a collection", "Collection", params=name)
    spec.add(
        "post",
        coll + "/documents",
        "put_documents",
        "Upsert a batch of documents (all or nothing)",
        "WriteResults",
        body=BatchBody,
        params=name,
        errors=_DATA_ERRORS,
    )
    spec.add(
        "put",
        doc,
        "put_document",
        "Upsert one document",
        "WriteResult",
        body=DocumentBody,
        params=both,
        errors=_DATA_ERRORS,
    )
    spec.add("get", doc, "get_document", "Read one document", "Document", params=both)
    spec.add(
        "delete", doc, "delete_document", "Delete one document", "DeletedDocument", params=both, errors=(400, 404, 409)
    )
    spec.add(
        "post",
        coll + "/documents:get",
        "get_documents",
        "Read many documents by id (missing ones are left out, the order of ids kept)",
        "Documents",
        body=GetDocumentsBody,
        params=name,
        errors=(400, 404, 413),
    )
    spec.add(
        "post",
        coll + "/documents:list",
        "list_documents",
        "List the documents a filter matches, ordered by id, one page at a time",
        "DocumentPage",
        body=ListDocumentsBody,
        params=name,
        errors=(400, 404, 413),
    )
    spec.add(
        "post",
        coll + "/documents:count",
        "count_documents",
        "Count the documents a filter matches",
        "Count",
        body=CountDocumentsBody,
        params=name,
        errors=(400, 404, 413),
    )
    spec.add(
        "post",
        coll + "/documents:delete",
        "delete_documents",
        "Delete documents by ids or by filter (with their embeddings in every model)",
        "Deleted",
        body=DeleteDocumentsBody,
        params=name,
        errors=(400, 404, 409, 413),
    )
    spec.add(
        "post",
        coll + "/documents:bulk",
        "bulk_load",
        "Load documents streamed as NDJSON ({id, text, metadata} a line), in chunks through the write path, "
        "with the HNSW index deferred; 400 invalid_line names the first bad line and how many lines are stored",
        "BulkLoad",
        params=(*name, _INDEX_MODE),
        errors=(400, 404, 409, 503, 504),
    )
    spec.paths[coll + "/documents:bulk"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/x-ndjson": {"schema": {"type": "string", "description": "one JSON document a line"}}},
    }
    spec.add(
        "post",
        coll + "/query",
        "query",
        "k-NN search by text or by vector of the read model, with a filter",
        "QueryResult",
        body=QueryBody,
        params=name,
        errors=_DATA_ERRORS,
    )
    spec.add(
        "post",
        "/v1/embeddings",
        "create_embeddings",
        "OpenAI-compatible embeddings with a pinned model",
        "Embeddings",
        body=EmbeddingsBody,
        errors=_DATA_ERRORS,
    )


def _admin_plane(spec: _Spec) -> None:
    base = "/admin/v1/collections/{collection}"

    def op(method, action, operation_id, summary, answer, body=None, ok="200", **extra) -> None:
        spec.add(
            method,
            f"{base}/{action}",
            operation_id,
            summary,
            answer,
            ok=ok,
            body=body,
            params=(_NAME,),
            errors=_ADMIN_ERRORS,
            admin=True,
            **extra,
        )

    op("get", "status", "migration_status", "Migration status: phase, coverage, backfill, replicas", "Status")
    op(
        "post",
        "migrations",
        "start_migration",
        "Start a migration (dual-write + backfill)",
        "MigrationState",
        StartMigration,
        ok="202",
    )
    op(
        "post",
        "migrations/plan",
        "plan_migration",
        "Plan a migration: documents, tokens, time, cost; writes nothing",
        "Plan",
        PlanMigration,
    )
    op("post", "backfill", "set_backfill", "Pause, resume or rate-limit the backfill", "BackfillSetting", BackfillBody)
    op("post", "shadow", "set_shadow", "Configure shadow reads", "MigrationState", ShadowBody)
    op(
        "post",
        "read-model",
        "set_read_model",
        "Switch the read model (cutover or rollback)",
        "MigrationState",
        ReadModelBody,
    )
    op(
        "post",
        "read-target",
        "set_read_target",
        "Switch the read model (the path's first name; same as read-model)",
        "MigrationState",
        ReadModelBody,
        deprecated=True,
    )
    op("post", "verify", "verify", "Verify every written model", "Verification", VerifyBody)
    op("post", "retire", "retire", "Retire the old model", "MigrationState", RetireBody)
    op("post", "abort", "abort", "Abort the migration", "MigrationState")
    op(
        "post",
        "adapter",
        "fit_adapter",
        "Fit the adapter between the migration's two models on backfilled pairs (held-out figures); "
        "409 no_migration, too_few_pairs, adapter_below_floor",
        "Adapter",
        AdapterFitBody,
    )
    op("get", "adapter", "get_adapter", "The adapter's version and held-out figures; 404 adapter_missing", "Adapter")
    op(
        "post",
        "read-mode",
        "set_read_mode",
        "Read mode native or adapted (new-model queries mapped into the old index), and whether raw vectors of "
        "the other model are translated; 409 adapter_missing, adapter_below_floor",
        "MigrationState",
        ReadModeBody,
    )
    op("post", "index", "build_indexes", "Build the HNSW index of every written model that lacks one", "IndexBuild")
    op(
        "post",
        "adopt",
        "adopt",
        "Adopt an existing pgvector table as a new collection (sample check, import, optional follow); "
        "409 vectors_mismatch when the stored vectors are not the model's",
        "Adoption",
        AdoptBody,
        ok="202",
    )
    op(
        "post",
        "adopt/stop",
        "stop_adoption",
        "Stop following the adopted table: drop its triggers and queue",
        "Adoption",
    )
    spec.add(
        "post",
        "/admin/v1/models/rescan",
        "rescan_models",
        "Pick up models imported while the gateway runs, here and on every replica",
        "ModelRescan",
        errors=(401, 503),
        admin=True,
    )


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_spec())
