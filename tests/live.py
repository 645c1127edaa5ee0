"""The real gateway on a loopback port, for tests that need a URL (schemathesis, the sync client).

It runs `create_app` in its own event loop in a thread, against a database of its own that a
module-scoped fixture creates (`module_database`), so one gateway serves a whole test module.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
from aiohttp import web

from gateway.api.app import create_app
from gateway.api.transport import GatewayRunner, runner_options
from gateway.config import Settings, load_settings
from tests.helpers import free_port

T = TypeVar("T")


class ServerThread:
    """The real gateway on a loopback port, served from its own event loop in a thread."""

    def __init__(self, dsn: str, config: Settings | None = None, *, admin_token: str | None = None, **settings) -> None:
        """`config` as it is, or settings built from the `settings` sections (a small pool by default)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dsn = self._dsn = dsn
        self._admin_token = admin_token
        self._config = config
        self._settings = {"database": {"pool_min": 1, "pool_max": 4}, **settings}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        config = self._config or load_settings(None, **self._settings)
        app = create_app(config, self._dsn, admin_token=self._admin_token)
        self._runner = GatewayRunner(app, **runner_options(config.server))  # as `driftgate serve` runs it
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(120), "the gateway did not start"
        return self

    @property
    def app(self) -> web.Application:
        assert self._runner is not None
        return self._runner.app

    def call(self, coro: Awaitable[T], timeout: float = 600) -> T:
        """Run a coroutine on the gateway's loop (its encoder, say) from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def module_database(server_dsn: str, name: str) -> str:
    """A fresh database `name` on the test server (dropped first if a previous run left it)."""

    async def create() -> None:
        conn = await asyncpg.connect(server_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return re.sub(r"/postgres(\?|$)", rf"/{name}\1", server_dsn)
