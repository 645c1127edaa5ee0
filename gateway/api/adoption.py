"""Adoption routes (operators): adopt an existing pgvector table, stop following it.

Admin bearer auth comes from the admin middleware (every /admin path). The background
runner that imports and follows is owned by this module's cleanup_ctx.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import Field

from gateway.api.keys import (
    ADOPTION,
    ADOPTION_RUNNER,
    COLLECTIONS,
    EMBEDDINGS,
    METRICS,
    POOL,
    REPLICA_ID,
    SETTINGS,
    WATCHER,
)
from gateway.api.requests import StrictBody, parse_body
from gateway.domain.adoption import RowFilter, SourceSpec
from gateway.services.adoption import AdoptionService, AdoptRequest
from gateway.services.follow import AdoptionRunner

routes = web.RouteTableDef()
PREFIX = "/admin/v1/collections/{collection}"


class RowFilterBody(StrictBody):
    column: str = Field(min_length=1, description="column compared, e.g. collection_id")
    value: str | int = Field(description="the value it must equal (cast to the column's type)")


class AdoptBody(StrictBody):
    table: str = Field(min_length=1, description="schema.table in the gateway's database, e.g. public.items")
    id_column: str = Field(min_length=1, description="unique column that becomes the document id")
    text_column: str = Field(min_length=1, description="the text that was embedded")
    vector_column: str = Field(min_length=1, description="pgvector column with the stored embeddings")
    metadata_columns: list[str] = Field(default_factory=list, max_length=64)
    metadata_json_column: str | None = Field(
        default=None,
        min_length=1,
        description="json/jsonb column whose object is the metadata itself (e.g. LangChain's cmetadata)",
    )
    row_filter: RowFilterBody | None = Field(
        default=None,
        description="adopt only the rows where column = value (one collection of a shared table)",
    )
    model: str = Field(min_length=1, description="key of the model that made the stored vectors")
    sample: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="rows re-embedded and compared before anything is written; 0 skips the check",
    )
    follow: bool = Field(default=False, description="keep applying the table's changes (triggers + queue)")


@routes.post(PREFIX + "/adopt")
async def adopt(request: web.Request) -> web.Response:
    body = await parse_body(request, AdoptBody)
    row_filter = RowFilter.parse(body.row_filter.column, body.row_filter.value) if body.row_filter else None
    source = SourceSpec.parse(
        body.table,
        body.id_column,
        body.text_column,
        body.vector_column,
        body.metadata_columns,
        body.metadata_json_column,
        row_filter,
    )
    result = await request.app[ADOPTION].adopt(
        request.match_info["collection"], AdoptRequest(source, body.model, body.sample, body.follow), request.remote
    )
    return web.json_response({"name": request.match_info["collection"], "adoption": result}, status=202)


@routes.post(PREFIX + "/adopt/stop")
async def stop(request: web.Request) -> web.Response:
    result = await request.app[ADOPTION].stop(
        request.match_info["collection"], request.remote, request.app[ADOPTION_RUNNER]
    )
    return web.json_response({"name": request.match_info["collection"], "adoption": result})


async def adoption_ctx(app: web.Application) -> AsyncIterator[None]:
    """Own the adoption service and its runner; refuse gateway writes to followed collections."""
    settings, metrics = app[SETTINGS], app[METRICS]
    runner = AdoptionRunner(
        app[POOL],
        app[EMBEDDINGS],
        app[COLLECTIONS].writer,
        replica=app[REPLICA_ID],
        chunk_rows=settings.adoption.chunk_rows,
        max_rows_per_s=settings.adoption.max_rows_per_s,
        apply_batch=settings.adoption.apply_batch,
        backfill_chunk=settings.backfill.chunk_size,
        poll_interval_s=settings.adoption.poll_interval_s,
        on_lag=metrics.record_follow_lag,
        on_failure=metrics.record_adoption_failure,
    )
    service = AdoptionService(
        app[POOL], app[COLLECTIONS], app[EMBEDDINGS], replica=app[REPLICA_ID], on_change=runner.wake
    )
    app[ADOPTION], app[ADOPTION_RUNNER] = service, runner
    app[COLLECTIONS].write_guard = service.guard_write
    app[WATCHER].on_change(lambda _collection: runner.wake())
    stop_event = asyncio.Event()
    task = asyncio.create_task(runner.run(stop_event), name="adoption-runner")
    yield
    stop_event.set()
    runner.wake()  # an idle runner waits on its wake-up, not on the stop: shut down now, not a poll later
    try:
        await asyncio.wait_for(task, timeout=30)
    except TimeoutError:
        task.cancel()
