"""`driftgate serve`: the gateway on the configured database, or on the embedded one."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from aiohttp import web

from gateway.api.app import create_app
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
    with database_dsn(settings) as dsn:
        app = create_app(settings, dsn)
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            shutdown_timeout=settings.server.request_timeout_s,
            print=lambda _msg: log.info(
                "driftgate listening on http://%s:%s", settings.server.host, settings.server.port
            ),
            access_log=None,
        )
    return 0
