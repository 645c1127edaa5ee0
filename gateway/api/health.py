"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from aiohttp import web

from gateway.api.keys import COLLECTIONS, EMBEDDINGS, METRICS, POOL
from gateway.services.database import database_answers

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and every model in use is loaded and matches its registration."""
    database = await database_answers(request.app[POOL])
    drifted = request.app[COLLECTIONS].drifted
    ready = database and not drifted
    return web.json_response(
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
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )
