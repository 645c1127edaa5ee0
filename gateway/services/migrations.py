"""Operator actions on a collection's migration: start, read model, shadow, retire, abort.

Each action is one transaction: lock the state row FOR UPDATE (which waits for in-flight
writes holding it FOR SHARE), check the move against the pure transition table, change
tables and state together, write the audit row and NOTIFY every replica.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.domain.audit import AuditAction
from gateway.domain.backfill import BackfillAction, BackfillState, plan_chunks
from gateway.domain.errors import Conflict, IndexIncomplete, InvalidRequest, ModelDrift, NotFound
from gateway.domain.phases import Action, Phase, next_phase
from gateway.domain.state import CollectionState, ReadMode
from gateway.domain.storage import Storage
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.store import adoption as adoption_sql
from gateway.store import backfill as backfill_sql
from gateway.store import collections as collections_sql
from gateway.store import registry as registry_sql
from gateway.store.retry import in_transaction

log = logging.getLogger(__name__)

# what a collection's state keeps of a migration once it is retired or aborted: nothing, not
# even its rate cap (a cap belongs to one migration; the next one starts unthrottled)
MIGRATION_ENDED: dict[str, Any] = {
    "from_model": None,
    "to_model": None,
    "shadow_model": None,
    "shadow_sample_rate": 0.0,
    "backfill_state": BackfillState.IDLE,
    "backfill_max_rate": None,
    "read_mode": ReadMode.NATIVE,
    "translate_vectors": False,
    "adapter_version": None,
}


@dataclass(frozen=True)
class Actor:
    """Who asked: the remote address of the admin request, and the replica that served it."""

    address: str | None
    replica: str


class MigrationService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        collections: CollectionService,
        embeddings: EmbeddingService,
        *,
        chunk_size: int = 256,
    ) -> None:
        self._pool = pool
        self._collections = collections
        self._embeddings = embeddings
        self._chunk_size = chunk_size

    async def _changed(self, name: str) -> CollectionState:
        state = await self._collections.reload(name)
        assert state is not None
        return state

    async def start(self, name: str, to_model: str, actor: Actor, storage: Storage = Storage.VECTOR) -> CollectionState:
        """Begin dual-writing to `to_model` (its table of `storage`) and plan its backfill, in one transaction."""
        current = await self._collections.state(name)
        spec = self._embeddings.spec(to_model)
        _refuse_same_model(name, to_model, current)
        next_phase(current.phase, Action.START)  # refuse early, before loading a model
        registration = await self._embeddings.registration(to_model)

        async def start(conn: asyncpg.Connection) -> None:
            state = await _locked(conn, name)
            phase = next_phase(state.phase, Action.START)
            await _refuse_during_adoption(conn, name)
            _refuse_same_model(name, to_model, state)
            stored = await registry_sql.register_model(conn, registration)
            if stored.fingerprint != spec.fingerprint:
                raise ModelDrift(
                    f"model {to_model!r} is registered with another fingerprint "
                    f"({stored.fingerprint[:12]}); register the changed model under a new key"
                )
            # a previous abort or retire dropped any old table; the new one indexes after the bulk load
            await collections_sql.drop_model_table(conn, name, to_model)
            await collections_sql.create_model_table(conn, name, to_model, spec.dim, with_index=False, storage=storage)
            ids = await backfill_sql.document_ids(conn, name)
            await backfill_sql.plan_round(conn, name, to_model, plan_chunks(ids, self._chunk_size), 1)
            await backfill_sql.clear_errors(conn, name, to_model)
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.START,
                actor=actor.address,
                replica=actor.replica,
                detail={"to_model": to_model, "documents": len(ids), "storage": storage.value},
                phase=phase,
                write_models=[state.read_model, to_model],
                from_model=state.read_model,
                to_model=to_model,
                backfill_state=BackfillState.RUNNING,
                backfill_started_at=datetime.now(UTC),
                backfill_max_rate=None,
                shadow_model=None,
                shadow_sample_rate=0.0,
            )

        await in_transaction(self._pool, start)
        log.info("migration of %s to %s started by %s", name, to_model, actor.address)
        return await self._changed(name)

    async def set_read_model(self, name: str, model: str, force: bool, actor: Actor) -> CollectionState:
        """Switch reads to `model`: cutover onto the new model, or rollback onto the old one."""
        self._embeddings.spec(model)

        async def switch(conn: asyncpg.Connection) -> Action | None:
            state = await _locked(conn, name)
            if model == state.read_model:
                return None
            if model not in state.write_models:
                raise Conflict(
                    f"model {model!r} is not written for collection {name!r} "
                    f"(write set: {', '.join(state.write_models)}); start a migration to it first",
                    code="not_in_write_set",
                )
            cover = await collections_sql.coverage(conn, name, model)
            tables = await collections_sql.model_tables(conn, name)
            verified = bool(tables[model]["verified_ok"])
            rollback = model == state.from_model
            complete = cover["coverage"] >= 1.0 and (rollback or verified)
            if not complete and not force:
                raise IndexIncomplete(
                    f"model {model!r} is not ready to serve reads: coverage {cover['coverage']:.2%} "
                    f"({cover['missing']} missing, {cover['stale']} stale), verification "
                    f"{'passed' if verified else 'not passed'}; wait for the backfill, run "
                    "`driftgate migrate verify`, or switch anyway with `driftgate migrate cutover --force` "
                    '(API: "force": true)'
                )
            if rollback:
                action = Action.ROLLBACK
            else:
                action = Action.CUTOVER if complete else Action.FORCED_CUTOVER
            phase = next_phase(state.phase, action)
            forced = force and not complete
            if forced:
                log.warning(
                    "FORCED read-model switch of %s to %s at coverage %.4f (verified=%s) by %s",
                    name,
                    model,
                    cover["coverage"],
                    verified,
                    actor.address,
                )
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.of_switch(action),
                actor=actor.address,
                replica=actor.replica,
                forced=forced,
                detail={"coverage": cover, "verified": verified},
                phase=phase,
                read_model=model,
                # the shadow never shadows the read model against itself here
                shadow_model=None if state.shadow_model == model else state.shadow_model,
            )
            return action

        action = await in_transaction(self._pool, switch)
        if action is not None:
            log.info("collection %s now reads %s (%s)", name, model, action.value)
        return await self._changed(name)

    async def set_shadow(
        self, name: str, model: str | None, sample_rate: float, noise_floor_rate: float | None, actor: Actor
    ) -> CollectionState:
        """A/B shadow on another written model (a migration step), and/or the A/A noise floor
        (the read model against exact search), which is allowed in any phase."""
        if model is not None:
            self._embeddings.spec(model)

        async def shadow(conn: asyncpg.Connection) -> None:
            state = await _locked(conn, name)
            changes: dict = {}
            if model is not None:
                if model not in state.write_models or model == state.read_model:
                    raise Conflict(
                        f"model {model!r} cannot shadow collection {name!r}: the shadow must be a "
                        f"written model other than the read model ({state.read_model!r}); for the "
                        "A/A noise floor use noise_floor_rate",
                        code="invalid_shadow",
                    )
                cover = await collections_sql.coverage(conn, name, model)
                if cover["coverage"] < 1.0:
                    raise IndexIncomplete(f"model {model!r} cannot shadow yet: coverage {cover['coverage']:.2%}")
                changes.update(
                    phase=next_phase(state.phase, Action.SHADOW), shadow_model=model, shadow_sample_rate=sample_rate
                )
            elif state.shadow_model is not None:
                changes.update(
                    phase=next_phase(state.phase, Action.UNSHADOW), shadow_model=None, shadow_sample_rate=0.0
                )
            if noise_floor_rate is not None:
                changes["noise_floor_rate"] = noise_floor_rate
            if changes:
                await collections_sql.change_state(
                    conn,
                    state,
                    action=AuditAction.SHADOW,
                    actor=actor.address,
                    replica=actor.replica,
                    detail={"model": model, "sample_rate": sample_rate, "noise_floor_rate": noise_floor_rate},
                    **changes,
                )

        await in_transaction(self._pool, shadow)
        log.info(
            "collection %s shadow set by %s: model %s at %s, noise floor %s",
            name,
            actor.address,
            model or "off",
            sample_rate,
            noise_floor_rate if noise_floor_rate is not None else "unchanged",
        )
        return await self._changed(name)

    async def retire(self, name: str, model: str, actor: Actor) -> tuple[CollectionState, bool]:
        """Stop writing the old model and drop its table; (state, whether anything changed).

        Refused while the model that remains lacks any document: after a forced cutover the
        old model's table may be the only place some documents are embedded, and dropping it
        would lose them from every table.
        """

        async def retire(conn: asyncpg.Connection) -> bool:
            state = await _locked(conn, name)
            if model == state.read_model:
                raise Conflict(
                    f"model {model!r} is the read model of {name!r}; switch reads to another model before retiring it",
                    code="retire_read_model",
                )
            tables = await collections_sql.model_tables(conn, name)
            if model not in state.write_models and model not in tables:
                return False  # already retired
            if model != state.from_model:
                raise Conflict(
                    f"only the old model of a cut-over migration can be retired; {model!r} is not it",
                    code="illegal_transition",
                )
            phase = next_phase(state.phase, Action.RETIRE)
            remaining = await collections_sql.coverage(conn, name, state.read_model)
            if remaining["coverage"] < 1.0:
                raise IndexIncomplete(
                    f"retiring {model!r} now would lose documents: the read model {state.read_model!r} "
                    f"covers {remaining['coverage']:.2%} ({remaining['missing']} missing, {remaining['stale']} "
                    "stale); wait until the backfill has finished (`driftgate migrate status`), then retire"
                )
            await collections_sql.drop_model_table(conn, name, model)
            await backfill_sql.clear_chunks(conn, name, state.read_model)
            await backfill_sql.clear_errors(conn, name, state.read_model)
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.RETIRE,
                actor=actor.address,
                replica=actor.replica,
                detail={"model": model},
                phase=phase,
                write_models=[state.read_model],
                **MIGRATION_ENDED,
            )
            return True

        changed = await in_transaction(self._pool, retire)
        if changed:
            log.info("collection %s retired model %s", name, model)
        return await self._changed(name), changed

    async def abort(self, name: str, actor: Actor) -> tuple[CollectionState, bool]:
        """Drop the new model's table and go back to steady on the old model; idempotent."""

        async def abort(conn: asyncpg.Connection) -> bool:
            state = await _locked(conn, name)
            if state.phase == Phase.STEADY:
                return False
            phase = next_phase(state.phase, Action.ABORT)
            # a state that lost its target (an adoption's import used to overwrite it) still aborts
            old = state.from_model or state.read_model
            target = state.to_model or next((m for m in state.write_models if m != old), None)
            if target is not None and target != old:
                await collections_sql.drop_model_table(conn, name, target)
                await backfill_sql.clear_errors(conn, name, target)
            await collections_sql.change_state(
                conn,
                state,
                action=AuditAction.ABORT,
                actor=actor.address,
                replica=actor.replica,
                detail={"dropped": target},
                phase=phase,
                read_model=old,
                write_models=[old],
                **MIGRATION_ENDED,
            )
            return True

        changed = await in_transaction(self._pool, abort)
        if changed:
            log.info("migration of %s aborted", name)
        return await self._changed(name), changed


async def _locked(conn: asyncpg.Connection, name: str) -> CollectionState:
    """The collection's state row, locked FOR UPDATE: waits for in-flight writes holding it FOR SHARE."""
    state = await collections_sql.get_state(conn, name, lock="UPDATE")
    if state is None:
        raise NotFound(f"collection {name!r} does not exist", code="collection_not_found")
    return state


async def _refuse_during_adoption(conn: asyncpg.Connection, name: str) -> None:
    """Until an adoption is indexed, the collection's backfill is the adoption's own (rows without a
    stored vector, then the index): a migration would take it over and leave the model incomplete.
    The adoption changes step under the same state-row lock, so this check cannot race it."""
    step = await adoption_sql.busy_adoption(conn, name)
    if step is not None:
        raise Conflict(
            f"collection {name!r} is still being adopted ({step.value}); start the migration once its adoption "
            "reads following or done (`driftgate migrate status`)",
            code="adoption_in_progress",
        )


def _refuse_same_model(name: str, to_model: str, state: CollectionState) -> None:
    if to_model == state.read_model:
        raise Conflict(f"collection {name!r} is already served by {to_model!r}", code="same_model")


class BackfillControl:
    """Operator control of a running backfill: pause, resume (retrying failed documents), rate."""

    def __init__(self, pool: asyncpg.Pool, collections: CollectionService) -> None:
        self._pool = pool
        self._collections = collections

    async def apply(
        self, name: str, action: BackfillAction | None, max_rate: float | None, set_rate: bool, actor: Actor
    ) -> dict:
        if max_rate is not None and max_rate <= 0:
            raise InvalidRequest(
                "max_rate must be a positive number of documents per second, or null", code="invalid_request"
            )

        async def apply(conn: asyncpg.Connection) -> backfill_sql.BackfillSettings:
            state = await _locked(conn, name)
            settings = await backfill_sql.backfill_settings(conn, name)
            assert settings is not None
            if state.to_model is None:
                raise Conflict(
                    f"collection {name!r} has no migration in flight; nothing to backfill", code="no_backfill"
                )
            changes: dict = {}
            retried = 0
            if action == BackfillAction.PAUSE and settings.state == BackfillState.RUNNING:
                changes["backfill_state"] = BackfillState.PAUSED
            elif action == BackfillAction.RESUME and settings.state in (BackfillState.PAUSED, BackfillState.FAILED):
                retried = await backfill_sql.clear_errors(conn, name, state.to_model)
                changes["backfill_state"] = BackfillState.RUNNING
            if set_rate:
                changes["backfill_max_rate"] = max_rate
            if changes:
                await collections_sql.change_state(
                    conn,
                    state,
                    action=AuditAction.of_backfill_control(action),
                    actor=actor.address,
                    replica=actor.replica,
                    detail={"max_rate": max_rate, "retried_errors": retried},
                    **changes,
                )
            settings = await backfill_sql.backfill_settings(conn, name)
            assert settings is not None
            return settings

        settings = await in_transaction(self._pool, apply)
        await self._collections.reload(name)
        return {"state": settings.state, "max_rate": settings.max_rate}
