"""`driftgate serve`: the gateway on the configured database, or on the embedded one."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Iterator

from aiohttp import web

from gateway.api.app import create_app
from gateway.api.keys import API_KEYS
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


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: whatever it resolves to, assume the network can reach it
        return False


def open_data_plane_warning(host: str, has_api_keys: bool) -> str | None:
    """The start-up warning for a data plane anyone on the network can use, or None."""
    if has_api_keys or is_loopback(host):
        return None
    return (
        f"the data plane (/v1/) is open to anyone who can reach {host}: no API keys are configured. "
        "Set server.api_keys (or DRIFTGATE_API_KEYS), or listen on 127.0.0.1 behind a proxy that "
        "authenticates; see docs/security.md"
    )


async def serve(app: web.Application, settings: Settings) -> None:
    """Listen until SIGINT or SIGTERM, then drain in-flight requests and stop every resource."""
    config = settings.server
    warning = open_data_plane_warning(config.host, bool(app[API_KEYS]))
    if warning:
        log.warning(warning)
    runner = GatewayRunner(app, shutdown_timeout=config.request_timeout_s, **runner_options(config))
    await runner.setup()
    try:
        freeze_startup_objects()  # models and libraries are loaded: spare them every full GC
        # handlers first: a SIGINT sent as soon as "listening" is logged must find them (before
        # they are installed, the loop has no wake-up fd for the signal and it would be lost)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await web.TCPSite(runner, config.host, config.port).start()
        log.info("driftgate listening on http://%s:%s", config.host, config.port)
        await stop.wait()
        log.info("driftgate stopping: draining in-flight requests")
    finally:
        await runner.cleanup()
