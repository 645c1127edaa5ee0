"""The status report of a collection: phase, models, backfill, replicas, recent actions."""

from __future__ import annotations

import asyncpg

from gateway.domain.backfill import eta_seconds
from gateway.services.collections import CollectionService
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store import replicas as replicas_sql
from gateway.store.retry import db_retrying


def recent_rate(progress: dict) -> float:
    """Documents per second over the last 30 s of finished chunks."""
    span = float(progress["recent_span_s"] or 0.0)
    return progress["done_recent"] / max(span, 1.0) if progress["done_recent"] else 0.0


async def collection_status(
    pool: asyncpg.Pool, collections: CollectionService, name: str, shadow_metrics: dict | None = None
) -> dict:
    await collections.state(name)  # validates the name; 404 for an unknown collection
    async for attempt in db_retrying():
        with attempt:
            # one snapshot: state, tables and backfill progress are read as of one moment
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
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
                        "rows": cover["rows"],
                        "coverage": cover["coverage"],
                        "missing": cover["missing"],
                        "stale": cover["stale"],
                        "index_ready": table["index_ready"],
                        "verified": table["verified_ok"],
                        "verified_at": table["verified_at"].isoformat() if table["verified_at"] else None,
                    }
                backfill = await _backfill(conn, name, state.target_model, tables)
                replicas = await replicas_sql.list_replicas(conn, name)
                audit = await collections_sql.audit_log(conn, name, limit=5)
    return {
        "name": name,
        "phase": state.phase.value,
        "read_model": state.read_model,
        "write_models": list(state.write_models),
        "source_model": state.source_model,
        "target_model": state.target_model,
        "shadow": {"model": state.shadow_model, "sample_rate": state.shadow_sample_rate,
                   "noise_floor_rate": state.noise_floor_rate},
        "state_version": state.state_version,
        "models": models,
        "backfill": backfill,
        "shadow_metrics": shadow_metrics,
        "replicas": replicas,
        "recent_actions": [
            {"at": a["at"], "action": a["action"], "actor": a["actor"], "forced": a["forced"]} for a in audit
        ],
    }


async def _backfill(conn: asyncpg.Connection, name: str, model: str | None, tables: dict) -> dict:
    settings = await backfill_sql.backfill_settings(conn, name)
    if model is None:
        return {"state": settings["backfill_state"], "done": 0, "total": 0, "rate_per_s": 0.0,
                "eta_s": None, "errors": 0}
    progress = await backfill_sql.progress(conn, name, model)
    rate = recent_rate(progress)
    index = None
    if model in tables and not tables[model]["index_ready"]:
        index = await collections_sql.index_build_progress(conn, name, model)
    return {
        "model": model,
        "state": settings["backfill_state"],
        "done": int(progress["done"]),
        "total": int(progress["total"]),
        "written": int(progress["written"]),
        "chunks": int(progress["chunks"]),
        "chunks_done": int(progress["chunks_done"]),
        "rate_per_s": round(rate, 1),
        "eta_s": eta_seconds(int(progress["done"]), int(progress["total"]), rate),
        "max_rate": settings["backfill_max_rate"],
        "errors": int(progress["errors"]),
        "error_samples": await backfill_sql.list_errors(conn, name, model, limit=5),
        "index_build": index,
    }


async def backfill_progress(pool: asyncpg.Pool) -> list[tuple[str, str, dict]]:
    """(collection, model, {done, total, errors, rate_per_s}) of every migration in flight."""
    out = []
    async with pool.acquire() as conn:
        for collection, model in await backfill_sql.migrations_in_flight(conn):
            progress = await backfill_sql.progress(conn, collection, model)
            rate = recent_rate(progress)
            out.append((collection, model, {"done": int(progress["done"]), "total": int(progress["total"]),
                                            "errors": int(progress["errors"]), "rate_per_s": rate}))
    return out


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
