"""`driftgate serve`: the gateway on the configured database, or on the embedded one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

from aiohttp import web

from gateway.api.app import create_app
from gateway.api.transport import GatewayRunner, runner_options
from gateway.commands.runtime import event_loop_factory, freeze_startup_objects
from gateway.config import Settings
from gateway.store.database import EmbeddedPostgres

log = logging.getLogger(__name__)


@contextlib.contextmanager
def database_dsn(settings: Settings) -> Iterator[str]:
    """The configured DSN, or the embedded server's (started here, stopped on exit)."""
    if settings.database.dsn:
        yield settings.database.dsn
        return
    embedded = EmbeddedPostgres(settings.database.data_dir)
    dsn = embedded.start()
    log.info("embedded PostgreSQL ready (data in %s)", embedded.data_dir)
    try:
        yield dsn
    finally:
        embedded.stop()


def run(settings: Settings) -> int:
    with database_dsn(settings) as dsn, asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(create_app(settings, dsn), settings))
    return 0


async def serve(app: web.Application, settings: Settings) -> None:
    """Listen until SIGINT or SIGTERM, then drain in-flight requests and stop every resource."""
    config = settings.server
    runner = GatewayRunner(app, shutdown_timeout=config.request_timeout_s, **runner_options(config))
    await runner.setup()
    try:
        freeze_startup_objects()  # models and libraries are loaded: spare them every full GC
        await web.TCPSite(runner, config.host, config.port).start()
        log.info("driftgate listening on http://%s:%s", config.host, config.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("driftgate stopping: draining in-flight requests")
    finally:
        await runner.cleanup()
