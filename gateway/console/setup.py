"""What the console adds to the gateway app: routes, static files, sign-in gate, shadow sampler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway.api.keys import COLLECTIONS, CONSOLE_HISTORY, SHADOW
from gateway.console import actions, auth, views
from gateway.console.history import ShadowHistory

STATIC = Path(__file__).parent / "static"
SAMPLE_EVERY_S = 5.0

middleware = auth.console_auth


async def _history(app: web.Application) -> AsyncIterator[None]:
    """Sample every cached collection's shadow statistics for the console's charts."""
    history = app[CONSOLE_HISTORY] = ShadowHistory()

    async def sample() -> None:
        while True:
            for name in app[COLLECTIONS].cached_versions():
                history.record(name, app[SHADOW].summary(name))
            await asyncio.sleep(SAMPLE_EVERY_S)

    task = asyncio.create_task(sample(), name="console-history")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_history)
    app.add_routes(auth.routes)
    app.add_routes(views.routes)
    app.add_routes(actions.routes)
    app.router.add_static(auth.ROOT + "/static", STATIC, name="console-static")
