"""Keeps a replica's cached collection states in step with PostgreSQL.

State changes NOTIFY on one channel; every replica LISTENs on a dedicated connection and
reloads the named collection at once. A poll every `poll_interval_s` compares state
versions as a fallback (a lost notification, a listener reconnecting after a database
restart) and writes the heartbeat: the state_version this replica has applied, per
collection, which operators see under `replicas` in the status report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from gateway.services.collections import CollectionService
from gateway.store import collections as collections_sql
from gateway.store import registry as registry_sql
from gateway.store import replicas as replicas_sql
from gateway.store.retry import TRANSIENT_ERRORS, with_connection

log = logging.getLogger(__name__)


class StateWatcher:
    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        collections: CollectionService,
        replica_id: str,
        *,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._collections = collections
        self.replica_id = replica_id
        self._poll_interval_s = poll_interval_s
        self._listener: asyncpg.Connection | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listeners: list = []
        self._model_listeners: list = []

    def on_change(self, callback) -> None:
        """Call `callback(collection)` whenever a state change is announced."""
        self._listeners.append(callback)

    def on_models_changed(self, callback) -> None:
        """Call `callback()` whenever another replica announces that the models changed (an import)."""
        self._model_listeners.append(callback)

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._poll_loop(), name="state-poll")

    async def stop(self) -> None:
        """Stop listening and polling, and take this replica off the status report."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()
        try:
            await with_connection(self._pool, lambda conn: replicas_sql.forget(conn, self.replica_id), max_seconds=2)
        except TRANSIENT_ERRORS as exc:
            log.warning("could not remove this replica's heartbeat (%r); it ages out of the status", exc)

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(self._dsn)
            await self._listener.add_listener(collections_sql.STATE_CHANNEL, self._on_notify)
            await self._listener.add_listener(registry_sql.MODELS_CHANNEL, self._on_models_notify)
        except TRANSIENT_ERRORS as exc:
            log.warning("state listener not connected (%r); polling until it is", exc)
            await self._close_listener()

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.close(), timeout=2)
            self._listener = None

    def _on_notify(self, _conn, _pid, _channel, payload: str) -> None:
        name = payload.rsplit(":", 1)[0]
        asyncio.get_running_loop().create_task(self._reload(name))
        for callback in self._listeners:
            callback(name)

    def _on_models_notify(self, _conn, _pid, _channel, sender: str) -> None:
        if sender != self.replica_id:
            for callback in self._model_listeners:
                callback()

    async def _reload(self, name: str) -> None:
        """Apply an announced change and report it at once: operators see the replica converge
        when it has, not a poll interval later."""
        try:
            await self._collections.reload(name)
            await with_connection(self._pool, self._heartbeat, max_seconds=2)
        except TRANSIENT_ERRORS as exc:
            log.warning("could not reload state of %s (%r); the poll will retry", name, exc)

    async def _heartbeat(self, conn: asyncpg.Connection) -> None:
        await replicas_sql.heartbeat(
            conn, self.replica_id, self._collections.cached_versions(), self._collections.read_p99_ms()
        )

    async def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._poll_interval_s)
            if self._stop.is_set():
                return
            try:
                await self.poll_once()
            except TRANSIENT_ERRORS as exc:
                log.warning("state poll failed (%r); retrying in %.1f s", exc, self._poll_interval_s)
            except Exception:
                log.exception("state poll failed")

    async def poll_once(self) -> None:
        if self._listener is None or self._listener.is_closed():
            await self._close_listener()
            await self._listen()
        versions = await with_connection(self._pool, collections_sql.state_versions)
        for name, cached in self._collections.cached_versions().items():
            if versions.get(name) != cached:
                await self._collections.reload(name)
        await with_connection(self._pool, self._heartbeat)
