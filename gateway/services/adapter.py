"""The bridge between a migration's two models: fit it on backfilled pairs, serve it, gate it.

`AdapterService.fit` samples documents both models have embedded (at the same version), fits
both maps (to -> from for `adapted` reads, from -> to for translated vectors) off the event
loop, validates them on a held-out part and stores them with both models' fingerprints; the
same transaction points the collection's state at the new version, so every replica hears of
it (NOTIFY) and loads it on its next adapted query (`AdapterCache`). A map below the floor of
held-out agreement cannot be enabled, and a failing re-fit never replaces one that serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from gateway.config import AdapterConfig
from gateway.domain.adapter import DEFAULT_K, FittedAdapter, LinearMap, MapKind, fit_adapter
from gateway.domain.audit import AuditAction
from gateway.domain.errors import Conflict
from gateway.domain.state import CollectionState, ReadMode
from gateway.store import adapters as adapters_sql
from gateway.store import collections as collections_sql
from gateway.store import registry as registry_sql
from gateway.store.adapters import StoredAdapter
from gateway.store.retry import in_transaction, with_connection

if TYPE_CHECKING:
    from gateway.services.collections import CollectionService
    from gateway.services.migrations import Actor

log = logging.getLogger(__name__)

MIN_PAIRS = 20  # fewer cannot leave a held-out part worth the name


class AdapterCache:
    """Each replica's copy of the adapters its collections serve, reloaded when the state's version moves."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._loaded: dict[str, StoredAdapter] = {}
        self.on_load: Callable[[StoredAdapter], None] = lambda _adapter: None  # metrics

    async def get(self, state: CollectionState) -> StoredAdapter | None:
        """The adapter between the state's migration models, or None when there is none to serve."""
        if state.adapter_version is None or state.from_model is None or state.to_model is None:
            return None
        cached = self._loaded.get(state.name)
        if (
            cached is not None
            and (cached.from_model, cached.to_model) == (state.from_model, state.to_model)
            and cached.version >= state.adapter_version
        ):
            return cached
        from_model, to_model = state.from_model, state.to_model
        stored = await with_connection(
            self._pool, lambda conn: _load_for_models(conn, state.name, from_model, to_model)
        )
        if stored is None:
            log.warning("collection %s names adapter version %s but none is stored", state.name, state.adapter_version)
            return None
        self._loaded[state.name] = stored
        self.on_load(stored)
        return stored

    def map_for(self, adapter: StoredAdapter, vector_model: str, index_model: str) -> LinearMap | None:
        """The map that takes `vector_model` vectors into `index_model`'s space, if it passed its floor."""
        if (vector_model, index_model) == (adapter.to_model, adapter.from_model):
            return adapter.adapt if adapter.validation["adapt"]["passes"] else None
        if (vector_model, index_model) == (adapter.from_model, adapter.to_model):
            return adapter.translate if adapter.validation["translate"]["passes"] else None
        return None


async def _load_for_models(conn: asyncpg.Connection, collection: str, from_model: str, to_model: str):
    fingerprints = await _fingerprints(conn, from_model, to_model)
    return await adapters_sql.load_adapter(conn, collection, fingerprints)


async def _fingerprints(conn: asyncpg.Connection, from_model: str, to_model: str) -> tuple[str, str]:
    registered = [await registry_sql.get_model(conn, key) for key in (from_model, to_model)]
    if registered[0] is None or registered[1] is None:
        raise Conflict(f"model {from_model!r} or {to_model!r} is not registered", code="model_not_registered")
    return registered[0].fingerprint, registered[1].fingerprint


class AdapterService:
    def __init__(
        self, pool: asyncpg.Pool, collections: CollectionService, cache: AdapterCache, config: AdapterConfig
    ) -> None:
        self._pool = pool
        self._collections = collections
        self._cache = cache
        self._config = config

    async def fit(self, name: str, max_pairs: int | None, actor: Actor) -> dict:
        """Fit both maps on up to `max_pairs` backfilled pairs; store them and point the state at them."""
        state = await self._collections.state(name)
        from_model, to_model = _migration(state)
        limit = max_pairs or self._config.max_pairs

        async def sample(conn: asyncpg.Connection):
            return await _fingerprints(conn, from_model, to_model), await adapters_sql.sample_pairs(
                conn, name, from_model, to_model, limit
            )

        fingerprints, (ids, from_vectors, to_vectors) = await with_connection(self._pool, sample)
        if len(ids) < MIN_PAIRS:
            raise Conflict(
                f"only {len(ids)} documents of {name!r} are embedded by both {from_model!r} and {to_model!r}; "
                f"an adapter needs at least {MIN_PAIRS}: let the backfill run further and fit again",
                code="too_few_pairs",
            )
        config = self._config
        kind = None if config.kind == "auto" else MapKind(config.kind)
        fitted = await asyncio.to_thread(
            fit_adapter, from_vectors, to_vectors, held_out=config.held_out, ridge=config.ridge, kind=kind
        )
        validation = self._validation(fitted, len(ids))

        async def save(conn: asyncpg.Connection) -> CollectionState:
            current = await collections_sql.get_state(conn, name, lock="UPDATE")
            if current is None or (current.from_model, current.to_model) != (from_model, to_model):
                raise Conflict(f"the migration of {name!r} changed during the fit; fit again", code="state_changing")
            if current.read_mode is ReadMode.ADAPTED and not validation["adapt"]["passes"]:
                raise Conflict(
                    f"the new fit's held-out agreement ({validation['adapt'][f'agreement@{DEFAULT_K}']}) is below "
                    f"the floor {self._config.floor}; the adapter that serves (version {current.adapter_version}) "
                    "is kept: fit again after more backfill",
                    code="adapter_below_floor",
                )
            version = await adapters_sql.save_adapter(
                conn, name, from_model, to_model, fingerprints, fitted, validation
            )
            return await _change(
                conn,
                current,
                AuditAction.ADAPTER_FIT,
                actor,
                {"version": version, **validation},
                adapter_version=version,
            )

        state = await in_transaction(self._pool, save)
        await self._collections.reload(name)
        log.info(
            "adapter %s -> %s of %s fitted: version %s, %s",
            to_model,
            from_model,
            name,
            state.adapter_version,
            validation,
        )
        return {"collection": name, "version": state.adapter_version, **validation}

    def _validation(self, fitted: FittedAdapter, pairs: int) -> dict:
        floor = self._config.floor
        return {
            "pairs": pairs,
            "floor": floor,
            "adapt": {**fitted.adapt_validation.as_dict(), "passes": fitted.adapt_validation.passes(floor)},
            "translate": {**fitted.translate_validation.as_dict(), "passes": fitted.translate_validation.passes(floor)},
        }

    async def describe(self, name: str) -> dict | None:
        """The figures of the adapter the collection's state points at (status), or None."""
        state = await self._collections.state(name)
        adapter = await self._cache.get(state)
        if adapter is None:
            return None
        return {
            "version": adapter.version,
            "from_model": adapter.from_model,
            "to_model": adapter.to_model,
            "fitted_at": adapter.fitted_at,
            "read_mode": state.read_mode.value,
            "translate_vectors": state.translate_vectors,
            **adapter.validation,
        }

    async def set_read_mode(
        self, name: str, mode: ReadMode, translate_vectors: bool | None, actor: Actor
    ) -> CollectionState:
        """Serve text queries `adapted` (or `native` again); allow raw vectors of the other model to be translated."""

        async def switch(conn: asyncpg.Connection) -> CollectionState:
            state = await collections_sql.get_state(conn, name, lock="UPDATE")
            if state is None:
                raise Conflict(f"collection {name!r} does not exist", code="collection_not_found")
            translate = state.translate_vectors if translate_vectors is None else translate_vectors
            if mode is ReadMode.ADAPTED or translate:
                validation = await self._require_adapter(conn, state)
                if mode is ReadMode.ADAPTED:
                    if state.read_model != state.from_model:
                        raise Conflict(
                            f"collection {name!r} reads {state.read_model!r}, the migration's new model: adapted "
                            "reads serve the old model's index; there is nothing to adapt after cutover",
                            code="illegal_transition",
                        )
                    _require_floor(validation["adapt"], "adapted reads", validation["floor"])
                if translate and not (validation["adapt"]["passes"] or validation["translate"]["passes"]):
                    _require_floor(validation["adapt"], "translated vectors", validation["floor"])
            detail = {"read_mode": mode.value, "translate_vectors": translate}
            return await _change(
                conn, state, AuditAction.READ_MODE, actor, detail, read_mode=mode, translate_vectors=translate
            )

        await in_transaction(self._pool, switch)
        state = await self._collections.reload(name)
        assert state is not None
        return state

    async def _require_adapter(self, conn: asyncpg.Connection, state: CollectionState) -> dict:
        from_model, to_model = _migration(state)
        stored = await _load_for_models(conn, state.name, from_model, to_model)
        if stored is None or state.adapter_version is None:
            raise Conflict(
                f"collection {state.name!r} has no adapter between {from_model!r} and {to_model!r}; "
                f"fit one first: driftgate migrate adapter fit {state.name}",
                code="adapter_missing",
            )
        return stored.validation


async def _change(
    conn: asyncpg.Connection, state: CollectionState, action: AuditAction, actor: Actor, detail: dict, **changes: Any
) -> CollectionState:
    return await collections_sql.change_state(
        conn, state, action=action, actor=actor.address, replica=actor.replica, detail=detail, **changes
    )


def _migration(state: CollectionState) -> tuple[str, str]:
    if state.from_model is None or state.to_model is None:
        raise Conflict(
            f"collection {state.name!r} has no migration in flight: an adapter bridges a migration's two models; "
            "start one first (driftgate migrate start)",
            code="no_migration",
        )
    return state.from_model, state.to_model


def _require_floor(figures: dict, what: str, floor: float) -> None:
    if not figures["passes"]:
        raise Conflict(
            f"the adapter's held-out agreement@{DEFAULT_K} is {figures[f'agreement@{DEFAULT_K}']}, below the floor "
            f"{floor}, so it cannot serve {what}: let the backfill run further and fit again on more pairs",
            code="adapter_below_floor",
        )
