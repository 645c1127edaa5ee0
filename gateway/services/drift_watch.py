"""The drift watch: a remote model is pinned by re-embedding its probe texts on a timer.

A provider's files cannot be hashed, so a hosted model can change under the same name. Every
`drift_check_interval_s` each watched model (one whose spec has that interval: remote ones)
some collection uses is asked for the probe texts again and compared with the vectors stored at registration. Below the model's probe
tolerance the model is drifted: every write that would store its vectors (API writes,
dual-writes, the backfill in the app or in a `backfill-worker`, follow, adopt, /v1/embeddings)
is refused with 409 `model_drift` by the model registry, which holds the one verdict, and so are
reads of collections it serves (query vectors from a moved model would be compared with
vectors of the old one: meaningless similarities are never served). The drift is logged,
shown in the status and exported as `driftgate_model_drift{model}`. When the probes match
again it clears by itself. While a provider is unreachable, the last verdict stands.

Each replica and each backfill-worker process runs its own watch; their verdicts converge
within one interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import numpy as np

from gateway.domain.errors import EncoderBadReply, EncoderUnavailable
from gateway.domain.vectors import min_row_cosine
from gateway.encoders.catalog import ModelSpec
from gateway.services.embedding import EmbeddingService
from gateway.store import registry as registry_sql
from gateway.store.retry import TRANSIENT_ERRORS, with_connection

log = logging.getLogger(__name__)

UNREACHABLE_RETRY_S = 5.0  # re-check sooner while a verdict is missing or the provider is down


def _now() -> str:
    return datetime.now(UTC).isoformat()


class DriftWatch:
    def __init__(
        self,
        pool: asyncpg.Pool,
        embeddings: EmbeddingService,
        *,
        on_verdict: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._pool = pool
        self._embeddings = embeddings
        self._on_verdict = on_verdict or (lambda _key, _drifted: None)
        self.status: dict[str, dict] = {}  # model key -> {"detected", "at", "min_cosine", "checked_at", ...}
        self._due: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def _watched(self) -> dict[str, tuple[ModelSpec, float]]:
        """The models whose probes are re-checked on a timer, with their interval."""
        specs = self._embeddings.specs
        return {k: (s, s.drift_check_interval_s) for k, s in specs.items() if s.drift_check_interval_s is not None}

    async def start(self) -> None:
        """Show the start-up check's verdicts, then watch in the background."""
        watched = self._watched()
        for key in watched:  # a gauge for every watched model from the start: 0 until a check finds drift
            self._on_verdict(key, False)
        for key, reason in self._embeddings.drifted.items():
            if key in watched:
                self.status[key] = {"detected": True, "at": _now(), "min_cosine": None, "reason": reason}
                self._on_verdict(key, True)
        if watched:
            self._task = asyncio.create_task(self._run(), name="drift-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        watched = self._watched()
        tick = min(1.0, *(interval for _, interval in watched.values()))
        while True:
            try:
                in_use = {
                    m.key: m for m in await with_connection(self._pool, registry_sql.models_in_use) if m.key in watched
                }
                for key, registered in in_use.items():
                    if key not in self._due:  # just checked at start-up or registered: due after one interval
                        pending = key in self._embeddings.drifted
                        self._due[key] = loop.time() + (0.0 if pending else watched[key][1])
                    if loop.time() >= self._due[key]:
                        await self.check(key, registered)
            except TRANSIENT_ERRORS as exc:
                log.warning("drift watch: database unavailable (%r); retrying", exc)
            except Exception:  # a bug must not end the watch silently
                log.exception("drift watch: unexpected error; retrying")
            await asyncio.sleep(tick)

    async def check(self, key: str, registered: registry_sql.RegisteredModel | None = None) -> dict:
        """Probe one watched model now; returns (and keeps) its drift status."""
        loop = asyncio.get_running_loop()
        spec, interval = self._watched()[key]
        if registered is None:
            registered = await with_connection(self._pool, lambda conn: registry_sql.get_model(conn, key))
        if registered is None:
            return self.status.get(key, {"detected": False})
        previous = self.status.get(key, {"detected": False})
        if registered.fingerprint != spec.fingerprint:  # the start-up check refuses it; never cleared here
            self._due[key] = loop.time() + interval
            return previous
        try:
            vectors = await self._embeddings.probe_vectors(key, registered.probe_texts)
        except (EncoderUnavailable, EncoderBadReply) as exc:
            self._due[key] = loop.time() + min(interval, UNREACHABLE_RETRY_S)
            self.status[key] = {**previous, "last_error": exc.message, "error_at": _now()}
            log.warning("drift watch: model %s could not be probed: %s", key, exc.message)
            return self.status[key]
        self._due[key] = loop.time() + interval
        cosine = min_row_cosine(vectors, np.asarray(registered.probe_vectors, dtype=np.float32))
        drifted = cosine < spec.probe_tolerance
        if drifted:
            reason = (
                f"probe vectors moved: min cosine {cosine:.6f} < tolerance {spec.probe_tolerance}; "
                "the provider changed the model behind its name"
            )
            at = previous.get("at") if previous.get("detected") and previous.get("min_cosine") is not None else _now()
            self.status[key] = {"detected": True, "at": at, "min_cosine": round(cosine, 6), "checked_at": _now()}
            if key not in self._embeddings.drifted or not previous.get("detected"):
                log.error("model %s drifted: %s; writes of its vectors are refused until the probes match", key, reason)
            self._embeddings.set_verdicts({key: reason}, {key})
        else:
            if previous.get("detected"):
                log.warning("model %s: probes match again (min cosine %.6f); drift cleared", key, cosine)
            self.status[key] = {"detected": False, "at": None, "min_cosine": round(cosine, 6), "checked_at": _now()}
            self._embeddings.set_verdicts({}, {key})
        self._on_verdict(key, drifted)
        return self.status[key]

    def describe(self, key: str) -> dict | None:
        """What the status report shows for a watched model: its drift verdict, tokens and circuit."""
        if key not in self._watched():
            return None
        drift = self.status.get(
            key,
            {"detected": key in self._embeddings.drifted, "at": None, "min_cosine": None, "checked_at": None},
        )
        unused = {"tokens_used": 0, "circuit": {"state": "closed", "open_for_s": None, "last_error": None}}
        usage = self._embeddings.usage(key) or unused  # not asked for anything yet by this process
        return {"drift": drift, **usage}
