"""The status report of a collection: phase, models, backfill, replicas, recent actions."""

from __future__ import annotations

import asyncpg

from gateway.domain.backfill import eta_seconds
from gateway.services.adoption import adoption_status
from gateway.services.collections import CollectionService
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store import replicas as replicas_sql
from gateway.store.retry import in_transaction, with_connection

RATE_WINDOW_S = 30.0


def recent_rate(progress: dict) -> float:
    """Documents per second over the last 30 s (or since the backfill started, if sooner)."""
    window = min(RATE_WINDOW_S, float(progress["running_s"] or 0.0))
    return float(progress["done_recent"]) / max(window, 1.0)


async def collection_status(
    pool: asyncpg.Pool, collections: CollectionService, name: str, shadow_metrics: dict | None = None
) -> dict:
    await collections.state(name)  # validates the name; 404 for an unknown collection

    async def snapshot(conn: asyncpg.Connection) -> tuple:
        state = await collections_sql.get_state(conn, name)
        if state is None:
            await collections.reload(name)
            await collections.state(name)
        assert state is not None
        tables = await collections_sql.model_tables(conn, name)
        models = {}
        for key, table in tables.items():
            cover = await collections_sql.coverage(conn, name, key)
            models[key] = {
                "dim": table["dim"],
                "storage": table["storage"],
                "rows": cover["rows"],
                "coverage": cover["coverage"],
                "missing": cover["missing"],
                "stale": cover["stale"],
                "index_ready": table["index_ready"],
                "verified": table["verified_ok"],
                "verified_at": table["verified_at"].isoformat() if table["verified_at"] else None,
            }
        backfill = await _backfill(conn, name, state.to_model, tables)
        replicas = await replicas_sql.list_replicas(conn, name)
        audit = await collections_sql.audit_log(conn, name, limit=5)
        document_count = await collections_sql.count_documents(conn, name)
        adoption = await adoption_status(conn, name)
        return state, models, backfill, replicas, audit, document_count, adoption

    # one snapshot: state, tables and backfill progress are read as of one moment
    state, models, backfill, replicas, audit, document_count, adoption = await in_transaction(
        pool, snapshot, isolation="repeatable_read", readonly=True
    )
    return {
        "name": name,
        "phase": state.phase.value,
        "read_model": state.read_model,
        "write_models": list(state.write_models),
        "from_model": state.from_model,
        "to_model": state.to_model,
        "shadow": {
            "model": state.shadow_model,
            "sample_rate": state.shadow_sample_rate,
            "noise_floor_rate": state.noise_floor_rate,
        },
        "state_version": state.state_version,
        "document_count": document_count,
        "models": models,
        "backfill": backfill,
        "shadow_metrics": shadow_metrics,
        "replicas": replicas,
        "adoption": adoption,
        "recent_actions": [
            {"at": a["at"], "action": a["action"], "actor": a["actor"], "forced": a["forced"]} for a in audit
        ],
    }


async def _backfill(conn: asyncpg.Connection, name: str, model: str | None, tables: dict) -> dict:
    settings = await backfill_sql.backfill_settings(conn, name)
    assert settings is not None
    if model is None:
        return {"state": settings.state, "done": 0, "total": 0, "rate_per_s": 0.0, "eta_s": None, "errors": 0}
    progress = await backfill_sql.progress(conn, name, model)
    rate = recent_rate(progress)
    index = None
    if model in tables and not tables[model]["index_ready"]:
        index = await collections_sql.index_build_progress(conn, name, model)
    return {
        "model": model,
        "state": settings.state,
        "done": int(progress["done"]),
        "total": int(progress["total"]),
        "written": int(progress["written"]),
        "chunks": int(progress["chunks"]),
        "chunks_done": int(progress["chunks_done"]),
        "rate_per_s": round(rate, 1),
        "eta_s": eta_seconds(int(progress["done"]), int(progress["total"]), rate),
        "max_rate": settings.max_rate,
        "errors": int(progress["errors"]),
        "error_samples": await backfill_sql.list_errors(conn, name, model, limit=5),
        "index_build": index,
    }


async def backfill_progress(pool: asyncpg.Pool) -> list[tuple[str, str, dict]]:
    """(collection, model, {done, total, errors, rate_per_s}) of every migration in flight."""

    async def read(conn: asyncpg.Connection) -> list[tuple[str, str, dict]]:
        out = []
        for collection, model in await backfill_sql.migrations_in_flight(conn):
            progress = await backfill_sql.progress(conn, collection, model)
            figures = {key: int(progress[key]) for key in ("done", "total", "errors")}
            out.append((collection, model, {**figures, "rate_per_s": recent_rate(progress)}))
        return out

    return await with_connection(pool, read)


def annotate_remote(report: dict, watch, migration_tokens: dict, replica: str) -> dict:
    """Add remote models' drift verdict, circuit and tokens (this replica's counts) to a status report."""
    for key, model in report["models"].items():
        extra = watch.describe(key)
        if extra is not None:
            model.update(extra)
    backfill = report["backfill"]
    model = backfill.get("model")
    if model and watch.describe(model) is not None:
        backfill["tokens_used"] = migration_tokens.get((report["name"], model), 0)
        backfill["tokens_counted_by"] = replica  # per process; Prometheus sums the replicas
    return report
