"""The aiohttp application factory. Every long-lived resource starts and stops in a cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.api import admin, adoption, bulk, data_plane, embeddings, health, models, openapi
from gateway.api.auth import api_key_middleware, grants
from gateway.api.context import request_id_middleware
from gateway.api.errors import error_middleware
from gateway.api.keys import (
    ADAPTERS,
    ADMIN_TOKEN,
    API_KEYS,
    BACKFILL_CONTROL,
    BULK,
    COLLECTIONS,
    DRIFT_WATCH,
    DSN,
    EMBEDDINGS,
    LARGE_RESPONSES,
    METRICS,
    MIGRATION_TOKENS,
    MIGRATIONS,
    POOL,
    REPLICA_ID,
    SETTINGS,
    SHADOW,
    VERIFIER,
    WATCHER,
    EncoderLoaderKey,
)
from gateway.api.large import LargeResponses
from gateway.api.metrics import Metrics
from gateway.api.transport import SERVER, content_encoding_middleware, streamed_answer_middleware
from gateway.config import Settings, admin_token_from_env, api_keys_from_env
from gateway.console import setup as console
from gateway.domain.deadline import request_deadline
from gateway.domain.errors import NotFound, RequestTimeout
from gateway.domain.phases import Phase
from gateway.encoders.base import EncoderLoader
from gateway.services.adapter import AdapterService
from gateway.services.backfill import BackfillWorker
from gateway.services.bulk import BulkLoader
from gateway.services.collections import CollectionService
from gateway.services.database import TRANSIENT_ERRORS, close_pool, open_pool, replica_id
from gateway.services.drift_watch import DriftWatch
from gateway.services.embedding import EmbeddingService
from gateway.services.migrations import BackfillControl, MigrationService
from gateway.services.shadow import ShadowRunner
from gateway.services.state_sync import StateWatcher
from gateway.services.status import backfill_progress
from gateway.services.verify import Verifier

log = logging.getLogger(__name__)


@web.middleware
async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.request_count(request.method, route, str(response.status)).inc()
    metrics.request_latency(request.method, route).observe(time.perf_counter() - started)
    return response


@web.middleware
async def timeout_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Bound every request; a slow one answers 504 instead of holding the client forever.

    A route that streams its input (a bulk load) bounds its silences itself instead."""
    if getattr(request.match_info.handler, "streams_input", False):
        return await handler(request)
    limit = request.app[SETTINGS].server.request_timeout_s
    token = request_deadline.set(asyncio.get_running_loop().time() + limit)  # for remote encoders' retries
    try:
        async with asyncio.timeout(limit):
            return await handler(request)
    except TimeoutError:
        raise RequestTimeout(f"the request took longer than {limit:.0f} s; retry, or split it") from None
    finally:
        request_deadline.reset(token)


async def _database(app: web.Application) -> AsyncIterator[None]:
    pool = await open_pool(app[DSN], app[SETTINGS].database)
    app[POOL] = pool
    yield
    if not await close_pool(pool):
        log.warning("pool did not close in 10 s; connections terminated")


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    embeddings = EmbeddingService.from_settings(
        settings,
        loader=app.get(EncoderLoaderKey),
        on_batch=metrics.record_batch,
        on_tokens=lambda key, n: metrics.model_tokens.labels(key).inc(n),
    )
    collections = CollectionService(app[POOL], embeddings, exact_scan_max_rows=settings.database.exact_scan_max_rows)
    app[EMBEDDINGS] = embeddings
    app[COLLECTIONS] = collections
    app[MIGRATIONS] = MigrationService(app[POOL], collections, embeddings, chunk_size=settings.backfill.chunk_size)
    app[BACKFILL_CONTROL] = BackfillControl(app[POOL], collections)
    app[VERIFIER] = Verifier(app[POOL], collections, embeddings)
    app[BULK] = BulkLoader(app[POOL], collections, settings.backfill, encode_ahead=settings.models.bulk_lanes)
    collections.adapters.on_load = metrics.record_adapter
    app[ADAPTERS] = AdapterService(app[POOL], collections, collections.adapters, settings.adapter)
    shadow = settings.shadow
    app[SHADOW] = ShadowRunner(
        app[POOL],
        embeddings,
        queue_size=shadow.queue_size,
        concurrency=shadow.concurrency,
        timeout_s=shadow.timeout_s,
        window=shadow.window,
        keep_samples=shadow.keep_samples,
        store_query_text=shadow.store_query_text,
        metrics=metrics,
    )
    await collections.check_models()
    await embeddings.load_served()
    await app[SHADOW].start()
    yield
    await app[SHADOW].stop()
    await embeddings.close()


async def _state_watcher(app: web.Application) -> AsyncIterator[None]:
    watcher = StateWatcher(
        app[DSN],
        app[POOL],
        app[COLLECTIONS],
        app[REPLICA_ID],
        poll_interval_s=app[SETTINGS].server.sync_poll_interval_s,
    )
    app[WATCHER] = watcher
    watcher.on_models_changed(app[EMBEDDINGS].rescan)  # another replica's rescan (an import) reaches this one
    await watcher.start()
    yield
    await watcher.stop()


async def _backfill_worker(app: web.Application) -> AsyncIterator[None]:
    config = app[SETTINGS].backfill
    if not config.enabled:
        yield
        return
    metrics = app[METRICS]
    worker = BackfillWorker.from_config(
        app[POOL],
        app[EMBEDDINGS],
        app[REPLICA_ID],
        config,
        on_written=lambda c, m, n: metrics.backfill_written.labels(c, m).inc(n),
        on_tokens=lambda c, m, n: _count_migration_tokens(app, c, m, n),
    )
    app[WATCHER].on_change(lambda _collection: worker.wake())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="backfill-worker")
    yield
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=30)
    except TimeoutError:
        task.cancel()


def _count_migration_tokens(app: web.Application, collection: str, model: str, tokens: int) -> None:
    if tokens and model in app[EMBEDDINGS].tokens_used():
        app[MIGRATION_TOKENS][(collection, model)] = app[MIGRATION_TOKENS].get((collection, model), 0) + tokens
        app[METRICS].migration_tokens.labels(collection, model).inc(tokens)


async def _drift_watch(app: web.Application) -> AsyncIterator[None]:
    """Re-check every remote model's probes on its timer (see services/drift_watch.py)."""
    metrics = app[METRICS]
    watch = DriftWatch(
        app[POOL],
        app[EMBEDDINGS],
        on_verdict=lambda key, drifted: metrics.model_drift.labels(key).set(int(drifted)),
    )
    app[DRIFT_WATCH] = watch
    await watch.start()
    yield
    await watch.stop()


async def _gauges(app: web.Application) -> AsyncIterator[None]:
    """Refresh the gauges that describe shared state (backfill progress, applied state versions)."""

    async def refresh() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].server.sync_poll_interval_s * 2)
            try:
                collections = app[COLLECTIONS]
                for name, version in collections.cached_versions().items():
                    app[METRICS].state_version.labels(name).set(version)
                    with contextlib.suppress(NotFound):  # dropped meanwhile (evaluate's scratch collections)
                        app[METRICS].record_phase(name, (await collections.state(name)).phase.value, Phase)
                for key in app[EMBEDDINGS].loaded():
                    app[METRICS].model_drift.labels(key).set(int(key in app[EMBEDDINGS].drifted))
                for collection, model, progress in await backfill_progress(app[POOL]):
                    app[METRICS].record_backfill(collection, model, progress)
            except TRANSIENT_ERRORS:
                continue

    task = asyncio.create_task(refresh(), name="gauges")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    """Name the product, not the Python and aiohttp versions a scanner would look up."""
    response.headers["Server"] = SERVER


def create_app(
    settings: Settings,
    dsn: str,
    *,
    encoder_loader: EncoderLoader | None = None,
    admin_token: str | None = None,
    api_keys: str | None = None,
) -> web.Application:
    """Build the gateway for the database at `dsn` (start the embedded one first if needed).

    The admin token comes from DRIFTGATE_ADMIN_TOKEN unless passed here (tests).
    """
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[
            request_id_middleware,
            content_encoding_middleware,
            metrics_middleware,
            error_middleware,
            streamed_answer_middleware,
            timeout_middleware,
            admin.admin_auth,
            console.middleware,
            api_key_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[DSN] = dsn
    app[METRICS] = Metrics()
    limits = settings.limits
    app[LARGE_RESPONSES] = LargeResponses(
        settings.server.max_large_responses,
        max_bytes=settings.server.large_response_bytes,
        hit_bytes=limits.max_text_chars + limits.max_metadata_bytes,
    )
    app[REPLICA_ID] = replica_id(settings.server.replica_id)
    app[ADMIN_TOKEN] = admin_token if admin_token is not None else admin_token_from_env()
    keys = api_keys if api_keys is not None else api_keys_from_env()
    app[API_KEYS] = grants(settings.server.api_keys, keys)
    app[MIGRATION_TOKENS] = {}
    if encoder_loader is not None:
        app[EncoderLoaderKey] = encoder_loader
    app.on_response_prepare.append(_server_header)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_drift_watch)
    app.cleanup_ctx.append(_state_watcher)
    app.cleanup_ctx.append(_backfill_worker)
    app.cleanup_ctx.append(_gauges)
    app.cleanup_ctx.append(adoption.adoption_ctx)
    app.add_routes(data_plane.query_routes)  # first: the hot path is the first route tried (data_plane.py)
    app.add_routes(admin.routes)
    app.add_routes(bulk.routes)
    app.add_routes(adoption.routes)
    app.add_routes(data_plane.routes)
    app.add_routes(embeddings.routes)
    app.add_routes(health.routes)
    app.add_routes(models.routes)
    app.add_routes(openapi.routes)
    console.setup(app)
    return app
