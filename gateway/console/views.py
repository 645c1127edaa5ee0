"""The console's pages: collections, one collection (live panels and charts), models.

Every fact comes from the same status report the admin API answers (api/admin.status_report);
the console adds only presentation: verdicts in words, the cutover guard's checks, the timeline.
"""

from __future__ import annotations

import hashlib
import json
import time

from aiohttp import web

from gateway.api.admin import status_report
from gateway.api.keys import COLLECTIONS, CONSOLE_HISTORY, DRIFT_WATCH, EMBEDDINGS, POOL, SETTINGS
from gateway.api.responses import json_response
from gateway.commands.models_import import model_origin
from gateway.commands.status_view import RECENT_S, format_circuit, next_step
from gateway.console.auth import CSRF, ROOT
from gateway.console.render import render
from gateway.encoders.remote import RemoteModelSpec
from gateway.services.overview import collection_names, phase_timeline, registered_models
from gateway.store.registry import RegisteredModel

routes = web.RouteTableDef()
COLLECTION = ROOT + "/collections/{collection}"


def page(request: web.Request, template: str, **context) -> web.Response:
    return render(template, csrf=request[CSRF], section=context.pop("section", ""), **context)


def drift_verdict(request: web.Request, key: str, model: dict | None = None) -> dict:
    """`{"drifted": bool, "text": str}`: a pinned model's drift state as this replica knows it."""
    reason = request.app[EMBEDDINGS].drifted.get(key)  # the model registry's one verdict
    remote = (model or {}).get("drift") or {}
    if reason:
        return {"drifted": True, "text": f"drifted: {reason}"}
    if remote.get("detected"):
        return {"drifted": True, "text": f"drifted (probe cosine {remote.get('min_cosine')})"}
    return {"drifted": False, "text": "matches its pin"}


def replica_health(report: dict) -> list[dict]:
    """Each replica's health in the words of `migrate status` (commands/status_view.format_replica)."""
    out = []
    for replica in report["replicas"]:
        if replica["applied_state_version"] == report["state_version"]:
            health = "in sync"
        elif replica.get("seen_s_ago", 0.0) < RECENT_S:
            health = "catching up"
        else:
            health = "behind: is it running and connected to the database?"
        out.append({**replica, "health": health, "ok": health == "in sync"})
    return out


def cutover_checks(report: dict) -> list[dict]:
    """The checks the read-model switch makes (services/migrations.set_read_model), shown before it is asked."""
    target = report["to_model"]
    model = report["models"].get(target) if target else None
    if model is None:
        return []
    return [
        {"name": "coverage 100%", "ok": model["coverage"] >= 1.0, "value": f"{model['coverage'] * 100:.2f}%"},
        {"name": "verification passed", "ok": bool(model["verified"]), "value": "yes" if model["verified"] else "no"},
        {"name": "index built", "ok": bool(model["index_ready"]), "value": "yes" if model["index_ready"] else "no"},
    ]


def summary(request: web.Request, report: dict) -> dict:
    """A status report with the console's verdicts added."""
    for key, model in report["models"].items():
        model["verdict"] = drift_verdict(request, key, model)
        model["circuit_text"] = format_circuit(model["circuit"]) if model.get("circuit") else None
    return {
        **report,
        "replica_health": replica_health(report),
        "checks": cutover_checks(report),
        "next_step": next_step(report),
    }


@routes.get(ROOT)
async def collections(request: web.Request) -> web.Response:
    app = request.app
    reports = [summary(request, await status_report(app, name)) for name in await collection_names(app[POOL])]
    return page(request, "collections.html", section="collections", reports=reports)


def shown(report: dict) -> str:
    """A short digest of the facts the actions panel depends on: unchanged facts, no reload (which
    would wipe what the operator is typing)."""
    backfill = report["backfill"]
    facts = [
        report["state_version"],
        report["checks"],
        [(k, m["verified"], m["verified_at"]) for k, m in sorted(report["models"].items())],
        [backfill.get("state"), backfill.get("max_rate")],
        report["shadow"],
    ]
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


async def collection_context(request: web.Request) -> dict:
    """What the collection page and its actions panel show: the report and the models one could migrate to."""
    app = request.app
    report = summary(request, await status_report(app, request.match_info["collection"]))
    targets = [k for k in sorted(app[EMBEDDINGS].specs) if k not in report["write_models"]]
    return {"report": report, "targets": targets, "shown": shown(report)}


@routes.get(COLLECTION)
async def collection(request: web.Request) -> web.Response:
    app = request.app
    timeline = await phase_timeline(app[POOL], app[COLLECTIONS], request.match_info["collection"])
    return page(
        request, "collection.html", section="collections", timeline=timeline, **await collection_context(request)
    )


@routes.get(COLLECTION + "/live")
async def live(request: web.Request) -> web.Response:
    """The live panel (phase, progress, rate, ETA, models, replicas); polled by the page every 2 s.

    When the state version moved since the page's last look, HX-Trigger tells the page to
    reload its other panels (actions, timeline)."""
    report = summary(request, await status_report(request.app, request.match_info["collection"]))
    seen = request.query.get("seen", "")
    headers = {"HX-Trigger": "state-changed"} if seen and seen != str(report["state_version"]) else None
    return render("_live.html", headers=headers, report=report)


@routes.get(COLLECTION + "/actions")
async def actions(request: web.Request) -> web.Response:
    context = await collection_context(request)
    if request.query.get("shown") == context["shown"]:
        return web.Response(status=204)  # htmx keeps the panel as it is
    return page(request, "_actions.html", **context)


@routes.get(COLLECTION + "/timeline")
async def timeline(request: web.Request) -> web.Response:
    app = request.app
    return render(
        "_timeline.html", timeline=await phase_timeline(app[POOL], app[COLLECTIONS], request.match_info["collection"])
    )


@routes.get(COLLECTION + "/shadow.json")
async def shadow_series(request: web.Request) -> web.Response:
    """Shadow metrics over time for the charts: overlap@k, RBO, latency ratio and the A/A noise floor."""
    name = request.match_info["collection"]
    await request.app[COLLECTIONS].state(name)  # 404 for an unknown collection
    return json_response({"collection": name, "now": time.time(), "points": request.app[CONSOLE_HISTORY].series(name)})


def model_rows(request: web.Request, registered: dict[str, RegisteredModel]) -> list[dict]:
    app = request.app
    settings = app[SETTINGS]
    rows = []
    for key, spec in sorted(app[EMBEDDINGS].specs.items()):
        if isinstance(spec, RemoteModelSpec):  # where its vectors come from, for the operator
            endpoint = spec.endpoint
            source = f"remote: {endpoint.base_url} ({endpoint.model})" if endpoint else "remote"
        else:
            origin = model_origin(spec, settings.model_cache_dir())
            source = origin["source"] + (f" ({', '.join(origin['wheels'])})" if origin.get("wheels") else "")
        pin = registered.get(key)
        rows.append(
            {
                "key": key,
                "dim": spec.dim,
                "fingerprint": spec.fingerprint,
                "source": source,
                "revision": getattr(spec, "revision", ""),
                "loaded": app[EMBEDDINGS].is_loaded(key),
                "execution_provider": app[EMBEDDINGS].execution_provider(key),
                "registered": pin is not None,
                "pin_matches": pin is None or pin.fingerprint == spec.fingerprint,
                "verdict": drift_verdict(request, key, app[DRIFT_WATCH].describe(key)),
            }
        )
    return rows


@routes.get(ROOT + "/models")
async def models(request: web.Request) -> web.Response:
    registered = await registered_models(request.app[POOL])
    return page(request, "models.html", section="models", models=model_rows(request, registered))
