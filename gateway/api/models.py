"""Control-plane route for the model registry: pick up models imported while the gateway runs."""

from __future__ import annotations

from aiohttp import web

from gateway.api.keys import EMBEDDINGS, POOL, REPLICA_ID
from gateway.api.responses import json_response

routes = web.RouteTableDef()


@routes.post("/admin/v1/models/rescan")
async def rescan(request: web.Request) -> web.Response:
    """Rescan the model cache and config on this replica and, by NOTIFY, on every other one.

    `driftgate models import` writes into the model cache; until a rescan (or a restart) a
    running gateway answers `unknown_model` for the new key."""
    app = request.app
    added = await app[EMBEDDINGS].rescan_everywhere(app[POOL], app[REPLICA_ID])
    return json_response({"added": added, "models": sorted(app[EMBEDDINGS].specs)})
