"""The console's guarded actions: the admin API's services, guards and audit, behind forms.

Each calls the same service, with the same guards and audit, as the admin API route of the
same name; a refusal is the same GatewayError, answered as JSON by the one error middleware
and shown by the page (static/console.js)."""

from __future__ import annotations

import math

from aiohttp import web
from multidict import MultiDictProxy

from gateway.api.keys import BACKFILL_CONTROL, COLLECTIONS, EMBEDDINGS, MIGRATIONS, POOL, REPLICA_ID, VERIFIER
from gateway.console.render import render
from gateway.console.views import COLLECTION
from gateway.domain.backfill import BackfillAction
from gateway.domain.errors import InvalidRequest
from gateway.services import plan as plan_service
from gateway.services.migrations import Actor

routes = web.RouteTableDef()


def _actor(request: web.Request) -> Actor:
    """The audit log names the console and the operator's address."""
    return Actor(address=f"console {request.remote}", replica=request.app[REPLICA_ID])


def _text(form: MultiDictProxy, field: str, *, required: bool = True) -> str:
    value = str(form.get(field, "")).strip()
    if required and not value:
        raise InvalidRequest(f"the form field {field!r} is empty; fill it in and try again")
    return value


def _number(form: MultiDictProxy, field: str) -> float | None:
    """A positive number, or None when the field is empty."""
    value = _text(form, field, required=False)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise InvalidRequest(f"{field} must be a positive number (got {value!r}); leave it empty for no limit")
    return number


def done(message: str) -> web.Response:
    """A success note for the page's flash area; HX-Trigger makes the page reload its panels."""
    return render("_flash.html", headers={"HX-Trigger": "state-changed"}, message=message, ok=True)


@routes.post(COLLECTION + "/plan")
async def plan(request: web.Request) -> web.Response:
    app = request.app
    to_model = _text(await request.post(), "to_model")
    result = await plan_service.plan_migration(
        app[POOL], app[COLLECTIONS], app[EMBEDDINGS], request.match_info["collection"], to_model
    )
    return render("_plan.html", plan=result)


@routes.post(COLLECTION + "/migrations")
async def start(request: web.Request) -> web.Response:
    name = request.match_info["collection"]
    to_model = _text(await request.post(), "to_model")
    await request.app[MIGRATIONS].start(name, to_model, _actor(request))
    return done(f"migration of {name} to {to_model} started: dual-write and backfill are running")


@routes.post(COLLECTION + "/backfill")
async def backfill(request: web.Request) -> web.Response:
    form = await request.post()
    action = _text(form, "action", required=False)
    if action not in ("", *BackfillAction):
        raise InvalidRequest(f"unknown backfill action {action!r}; use pause or resume")
    set_rate = "max_rate" in form
    max_rate = _number(form, "max_rate") if set_rate else None
    result = await request.app[BACKFILL_CONTROL].apply(
        request.match_info["collection"],
        BackfillAction(action) if action else None,
        max_rate,
        set_rate,
        _actor(request),
    )
    rate = f", max rate {result['max_rate']:g} docs/s" if result.get("max_rate") else ", no rate limit"
    return done(f"backfill {result['state']}{rate}")


@routes.post(COLLECTION + "/shadow")
async def shadow(request: web.Request) -> web.Response:
    form = await request.post()
    model = _text(form, "model", required=False) or None
    rate = _number(form, "sample_rate") if model else None
    if rate is not None and rate > 1:
        raise InvalidRequest("sample_rate is a share of queries between 0 and 1, e.g. 0.1")
    floor = _number(form, "noise_floor_rate") if model else None
    name = request.match_info["collection"]
    await request.app[MIGRATIONS].set_shadow(name, model, rate or 0.1, floor, _actor(request))
    return done(f"shadow reads on {model} for {rate or 0.1:.0%} of queries" if model else "shadow reads stopped")


@routes.post(COLLECTION + "/verify")
async def verify(request: web.Request) -> web.Response:
    report = await request.app[VERIFIER].verify(request.match_info["collection"], 200)
    return render("_verify.html", headers={"HX-Trigger": "state-changed"}, report=report)


@routes.post(COLLECTION + "/read-model")
async def read_model(request: web.Request) -> web.Response:
    form = await request.post()
    model = _text(form, "model")
    force = _text(form, "force", required=False) == "true"
    name = request.match_info["collection"]
    state = await request.app[MIGRATIONS].set_read_model(name, model, force, _actor(request))
    return done(f"{name} now reads {state.read_model} (phase {state.phase.value})")


@routes.post(COLLECTION + "/retire")
async def retire(request: web.Request) -> web.Response:
    form = await request.post()
    name = request.match_info["collection"]
    model = _text(form, "model")
    if _text(form, "confirm", required=False) != name:
        raise InvalidRequest(
            f"type the collection's name ({name}) to confirm that {model!r} and its table are to be dropped",
            code="confirmation_mismatch",
        )
    state, changed = await request.app[MIGRATIONS].retire(name, model, _actor(request))
    return done(
        f"{model} retired: {name} is steady on {state.read_model}" if changed else f"{model} was already retired"
    )


@routes.post(COLLECTION + "/abort")
async def abort(request: web.Request) -> web.Response:
    name = request.match_info["collection"]
    state, changed = await request.app[MIGRATIONS].abort(name, _actor(request))
    return done(f"migration aborted: {name} is steady on {state.read_model}" if changed else "no migration to abort")
