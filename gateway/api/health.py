"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from aiohttp import web

from gateway.api.keys import EMBEDDINGS, LARGE_RESPONSES, METRICS, POOL
from gateway.api.responses import json_response
from gateway.services.database import database_answers

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and every model in use is loaded and matches its registration."""
    database = await database_answers(request.app[POOL])
    drifted = request.app[EMBEDDINGS].drifted
    ready = database and not drifted
    return json_response(
        {
            "ready": ready,
            "database": database,
            "models_loaded": request.app[EMBEDDINGS].loaded(),
            "models_drifted": drifted,
        },
        status=200 if ready else 503,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    request.app[METRICS].record_large_responses(request.app[LARGE_RESPONSES])
    embeddings = request.app[EMBEDDINGS]
    request.app[METRICS].record_providers({key: embeddings.execution_provider(key) for key in embeddings.loaded()})
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )
