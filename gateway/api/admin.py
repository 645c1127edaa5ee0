"""Control-plane handlers (operators). Every route needs `Authorization: Bearer <token>`."""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import Field

from gateway.api.auth import bearer_token, same_secret
from gateway.api.keys import (
    ADAPTERS,
    ADMIN_TOKEN,
    BACKFILL_CONTROL,
    COLLECTIONS,
    DRIFT_WATCH,
    EMBEDDINGS,
    MIGRATION_TOKENS,
    MIGRATIONS,
    POOL,
    REPLICA_ID,
    SHADOW,
    VERIFIER,
)
from gateway.api.requests import StrictBody, parse_body
from gateway.api.responses import json_response
from gateway.domain.backfill import BackfillAction
from gateway.domain.errors import NotFound, Unauthorized
from gateway.domain.state import ReadMode
from gateway.domain.storage import Storage
from gateway.services import plan as plan_service
from gateway.services.migrations import Actor
from gateway.services.status import annotate_remote, collection_status

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
PREFIX = "/admin/v1/collections/{collection}"


class StartMigration(StrictBody):
    to_model: str = Field(min_length=1)
    storage: Storage = Field(
        default=Storage.VECTOR,
        strict=False,
        description="the new model table's element type: vector (float32) or halfvec (float16, docs/storage.md)",
    )


class PlanMigration(StrictBody):
    to_model: str = Field(min_length=1)
    sample: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="documents to embed for the estimate (default max_batch x max_concurrency)",
    )


class BackfillBody(StrictBody):
    action: BackfillAction | None = Field(
        default=None, strict=False, description="pause or resume; null changes only max_rate"
    )
    max_rate: float | None = Field(
        default=None, allow_inf_nan=False, description="documents per second; null clears it"
    )


class ShadowBody(StrictBody):
    model: str | None = Field(default=None, description="a written model other than the read model; null stops")
    sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    noise_floor_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="share of queries also run A/A: read model, exact search (no index); null keeps it",
    )


class ReadModelBody(StrictBody):
    model: str = Field(min_length=1)
    force: bool = False


class VerifyBody(StrictBody):
    sample: int = Field(default=200, ge=0, le=10_000)


class RetireBody(StrictBody):
    model: str = Field(min_length=1)


class AdapterFitBody(StrictBody):
    max_pairs: int | None = Field(
        default=None, ge=20, le=200_000, description="backfilled pairs to sample (default adapter.max_pairs)"
    )


class ReadModeBody(StrictBody):
    mode: ReadMode = Field(strict=False, description="native, or adapted: to-model queries mapped into the from-index")
    translate_vectors: bool | None = Field(
        default=None,
        description="map raw vectors of the migration's other model instead of refusing them; null keeps it",
    )


@web.middleware
async def admin_auth(request: web.Request, handler) -> web.StreamResponse:
    """Bearer-token check for /admin paths, in constant time; the token is never logged."""
    if request.path.startswith("/admin/"):
        expected = request.app[ADMIN_TOKEN]
        if not expected:
            raise Unauthorized("the admin API is disabled: set DRIFTGATE_ADMIN_TOKEN on the gateway")
        token = bearer_token(request)
        if not token or not same_secret(token, expected):
            log.warning(
                "admin request without a valid token from %s: %s %s", request.remote, request.method, request.path
            )
            raise Unauthorized("missing or wrong admin token: send Authorization: Bearer <DRIFTGATE_ADMIN_TOKEN>")
    return await handler(request)


def _actor(request: web.Request) -> Actor:
    return Actor(address=request.remote, replica=request.app[REPLICA_ID])


def _state_body(state) -> dict:
    return {"name": state.name, **state.as_dict()}


async def status_report(app: web.Application, name: str) -> dict:
    """The collection's status report, as the admin API and the console show it."""
    report = await collection_status(
        app[POOL], app[COLLECTIONS], name, {"replica": app[REPLICA_ID], **app[SHADOW].summary(name)}
    )
    report["adapter"] = await app[ADAPTERS].describe(name)
    for key, model in report["models"].items():
        model["execution_provider"] = app[EMBEDDINGS].execution_provider(key)
    return annotate_remote(report, app[DRIFT_WATCH], app[MIGRATION_TOKENS], app[REPLICA_ID])


@routes.get(PREFIX + "/status")
async def status(request: web.Request) -> web.Response:
    return json_response(await status_report(request.app, request.match_info["collection"]))


@routes.post(PREFIX + "/migrations")
async def start_migration(request: web.Request) -> web.Response:
    body = await parse_body(request, StartMigration)
    state = await request.app[MIGRATIONS].start(
        request.match_info["collection"], body.to_model, _actor(request), body.storage
    )
    return json_response(_state_body(state), status=202)


@routes.post(PREFIX + "/migrations/plan")
async def plan_migration(request: web.Request) -> web.Response:
    body = await parse_body(request, PlanMigration)
    app = request.app
    return web.json_response(
        await plan_service.plan_migration(
            app[POOL], app[COLLECTIONS], app[EMBEDDINGS], request.match_info["collection"], body.to_model, body.sample
        )
    )


@routes.post(PREFIX + "/backfill")
async def backfill(request: web.Request) -> web.Response:
    body = await parse_body(request, BackfillBody)
    result = await request.app[BACKFILL_CONTROL].apply(
        request.match_info["collection"],
        body.action,
        body.max_rate,
        "max_rate" in body.model_fields_set,
        _actor(request),
    )
    return json_response(result)


@routes.post(PREFIX + "/shadow")
async def shadow(request: web.Request) -> web.Response:
    body = await parse_body(request, ShadowBody)
    state = await request.app[MIGRATIONS].set_shadow(
        request.match_info["collection"], body.model, body.sample_rate, body.noise_floor_rate, _actor(request)
    )
    return json_response(_state_body(state))


@routes.post(PREFIX + "/read-model")
@routes.post(PREFIX + "/read-target")  # the path's first name, kept for existing scripts
async def read_model(request: web.Request) -> web.Response:
    body = await parse_body(request, ReadModelBody)
    state = await request.app[MIGRATIONS].set_read_model(
        request.match_info["collection"], body.model, body.force, _actor(request)
    )
    return json_response(_state_body(state))


@routes.post(PREFIX + "/verify")
async def verify(request: web.Request) -> web.Response:
    body = await parse_body(request, VerifyBody) if request.can_read_body else VerifyBody()
    return json_response(await request.app[VERIFIER].verify(request.match_info["collection"], body.sample))


@routes.post(PREFIX + "/retire")
async def retire(request: web.Request) -> web.Response:
    body = await parse_body(request, RetireBody)
    state, changed = await request.app[MIGRATIONS].retire(request.match_info["collection"], body.model, _actor(request))
    return json_response({**_state_body(state), "changed": changed})


@routes.post(PREFIX + "/abort")
async def abort(request: web.Request) -> web.Response:
    state, changed = await request.app[MIGRATIONS].abort(request.match_info["collection"], _actor(request))
    return json_response({**_state_body(state), "changed": changed})


@routes.post(PREFIX + "/adapter")
async def fit_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, AdapterFitBody) if request.can_read_body else AdapterFitBody()
    return json_response(
        await request.app[ADAPTERS].fit(request.match_info["collection"], body.max_pairs, _actor(request))
    )


@routes.get(PREFIX + "/adapter")
async def get_adapter(request: web.Request) -> web.Response:
    name = request.match_info["collection"]
    report = await request.app[ADAPTERS].describe(name)
    if report is None:
        raise NotFound(
            f"collection {name!r} has no adapter; fit one with POST {PREFIX.format(collection=name)}/adapter",
            code="adapter_missing",
        )
    return json_response(report)


@routes.post(PREFIX + "/read-mode")
async def read_mode(request: web.Request) -> web.Response:
    body = await parse_body(request, ReadModeBody)
    state = await request.app[ADAPTERS].set_read_mode(
        request.match_info["collection"], body.mode, body.translate_vectors, _actor(request)
    )
    return json_response(_state_body(state))
