"""The model registry: the one gate between every caller and the encoders.

One `EmbeddingService` per app (and per `backfill-worker` process). It owns

- the model specs (the catalog, the config and the models imported into the cache; `rescan`
  picks up models imported while the gateway runs);
- loading: one `Encoder` per model (encoders/base.py), local or remote as its spec says.
  Models load at start (those a collection uses, and `models.serve`) or when a collection,
  migration or adoption comes to use them; never because a data-plane request named one
  (`served_spec`);
- the drift verdict of every model (start-up check, drift watch) and the rule that goes with
  it: no vector of a drifted model is stored, whoever asks (writes, backfill in the app or in
  a worker process, follow, adopt, /v1/embeddings).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import asyncpg
import numpy as np

from gateway.config import Settings
from gateway.domain.errors import (
    ConfigError,
    EncoderBadReply,
    EncoderFailed,
    EncoderUnavailable,
    GatewayError,
    InvalidRequest,
    ModelDrift,
    ModelFilesUnavailable,
)
from gateway.domain.fingerprint import PROBE_TEXTS
from gateway.domain.providers import Provider, Setting
from gateway.domain.vectors import min_row_cosine
from gateway.encoders.base import Encoded, Encoder, EncoderLoader, Kind, Lane
from gateway.encoders.catalog import FORMER_MEANINGS, ModelSpec
from gateway.encoders.local import BatchOptions, Lanes, LocalEncoder
from gateway.encoders.onnx import ModelFileMismatch, load_encoder, resolve_execution_provider
from gateway.encoders.remote import RemoteModelSpec
from gateway.services.remote_models import RemoteModels
from gateway.store import registry as registry_sql
from gateway.store.registry import RegisteredModel
from gateway.store.retry import with_connection

log = logging.getLogger(__name__)


class EmbeddingService:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        cache_dir: Path,
        *,
        intra_op_threads: int = 0,
        execution_provider: Setting = "cpu",
        batch_window_s: float = 0.0,
        micro_batching: bool = True,
        max_queued_texts: int = 4096,
        bulk_lanes: int = 2,
        allow_download: bool = True,
        serve: tuple[str, ...] = (),
        loader: EncoderLoader | None = None,
        rescan: Callable[[], dict[str, ModelSpec]] | None = None,
        on_batch: Callable[[str, int], None] | None = None,
        on_tokens: Callable[[str, int], None] | None = None,
    ) -> None:
        self.specs = specs
        self._cache_dir = cache_dir
        self._threads = intra_op_threads
        self._setting: Setting = execution_provider
        # where local models will run; ConfigError here (at start) for `cuda` where onnxruntime has none
        self._provider: Provider = resolve_execution_provider(execution_provider)
        self._options = BatchOptions(batch_window_s, micro_batching, max_queued_texts)
        self._allow_download = allow_download
        self._serve = serve
        self._loader: EncoderLoader = loader or self._default_loader
        self._rescan = rescan
        self._on_batch = on_batch or (lambda _key, _n: None)
        self._lanes = Lanes(bulk_lanes)
        self._remote = RemoteModels(on_tokens)
        self._encoders: dict[str, Encoder] = {}
        self._load_lock = asyncio.Lock()
        self._admitted: set[str] = set()  # models loaded or being loaded: a collection, migration or start asked
        self._warming: set[asyncio.Task] = set()
        # model key -> why its vectors must not be stored or served now: the start-up check and the
        # drift watch write it, every caller is refused through `refuse_drifted`
        self.drifted: dict[str, str] = {}
        self._checked: set[str] = set()  # models this process has compared with their registration

    @classmethod
    def from_settings(cls, settings: Settings, **extra) -> EmbeddingService:
        """The registry as the config describes it; `extra` adds the loader or a batch callback.

        Raises ConfigError when `models.execution_provider` asks for CUDA and onnxruntime has none."""
        models = settings.models
        return cls(
            settings.model_specs(),
            settings.model_cache_dir(),
            intra_op_threads=models.intra_op_threads,
            execution_provider=models.execution_provider,
            batch_window_s=models.batch_window_ms / 1000,
            micro_batching=models.micro_batching,
            max_queued_texts=models.max_queued_texts,
            bulk_lanes=models.bulk_lanes,
            allow_download=models.allow_download,
            serve=models.serve,
            rescan=settings.model_specs,
            **extra,
        )

    def _default_loader(self, spec: ModelSpec, cache_dir: Path, threads: int):
        def progress(message: str) -> None:  # a first start may spend minutes fetching a model: say so
            log.info("model %s: %s", spec.key, message)

        return load_encoder(
            spec, cache_dir, threads, allow_download=self._allow_download, progress=progress, provider=self._setting
        )

    # -- which models there are ---------------------------------------------------------------

    def spec(self, key: str) -> ModelSpec:
        try:
            return self.specs[key]
        except KeyError:
            known = ", ".join(sorted(self.specs))
            raise InvalidRequest(
                f"unknown model {key!r}; known models: {known}. A model imported since the gateway started "
                "appears after POST /admin/v1/models/rescan",
                code="unknown_model",
            ) from None

    def served_spec(self, key: str) -> ModelSpec:
        """The spec of a model that a data-plane request may name directly (/v1/embeddings).

        Served are the models loaded (or loading) because a collection uses them, and those in `models.serve`;
        naming any other model never loads it (a request must not grow the gateway by a model)."""
        spec = self.spec(key)
        if key not in self._admitted and key not in self._serve:
            raise InvalidRequest(
                f"model {key!r} is not served here: no collection uses it and it is not in the config's "
                "[models] serve list. Create a collection with it, add it to `serve`, or name "
                "collection:<name> to embed with a collection's read model",
                code="model_not_served",
            )
        return spec

    def rescan(self) -> list[str]:
        """Pick up models imported into the cache (or declared) since start; returns the new keys.

        Keys already known keep their specs: a loaded model never changes under its key."""
        if self._rescan is None:
            return []
        fresh = self._rescan()
        added = sorted(set(fresh) - set(self.specs))
        if added:
            self.specs = {**self.specs, **{key: fresh[key] for key in added}}
            log.info("models found by a rescan: %s", ", ".join(added))
        return added

    async def rescan_everywhere(self, pool: asyncpg.Pool, replica: str) -> list[str]:
        """Rescan here, then have every other replica rescan (NOTIFY); returns the keys new here."""
        added = self.rescan()
        await with_connection(pool, lambda conn: registry_sql.announce_models_changed(conn, replica))
        return added

    def recognise(self, registered: list[RegisteredModel]) -> dict[str, str]:
        """Serve a catalog key registered with the files it named in an earlier release with those files.

        The key all-MiniLM-L6-v2 named the int8 export before it named the exact fp32 model;
        a database whose collections were built with the int8 files keeps them: the stored
        fingerprint decides, not today's meaning of the key. Returns {key: catalog key used}.
        """
        adopted: dict[str, str] = {}
        for model in registered:
            spec = self.specs.get(model.key)
            twin = self.specs.get(FORMER_MEANINGS.get(model.key, ""))
            if (
                spec is None
                or twin is None
                or spec.fingerprint == model.fingerprint
                or twin.fingerprint != model.fingerprint
            ):
                continue
            self.specs = {**self.specs, model.key: dataclasses.replace(twin, key=model.key)}
            adopted[model.key] = twin.key
            log.warning(
                "model %s in this database was registered with the files of %s (fingerprint %s); serving it "
                "with those files, for existing and new collections. To move to what %s names today, import "
                "that model under another key (`driftgate models import PATH --key KEY`) and migrate to it",
                model.key,
                twin.key,
                model.fingerprint[:12],
                model.key,
            )
        return adopted

    # -- loading ------------------------------------------------------------------------------

    def loaded(self) -> list[str]:
        return sorted(self._encoders)

    def is_loaded(self, key: str) -> bool:
        """Whether `key` needs no loading before its next encode."""
        return key in self._encoders

    @property
    def provider(self) -> Provider:
        """Where this process's local models run: `models.execution_provider` resolved at start."""
        return self._provider

    def execution_provider(self, key: str) -> str:
        """Where `key` runs: "remote" for a provider's model; for a local one "cpu" or "cuda", as its
        loaded session reports it, or as `models.execution_provider` resolved here before it loads."""
        encoder = self._encoders.get(key)
        if encoder is not None and encoder.runs_on:
            return encoder.runs_on
        return "remote" if isinstance(self.specs.get(key), RemoteModelSpec) else self._provider

    async def load(self, key: str) -> Encoder:
        """The model's encoder, loading it (fetching its files on first use) off the event loop.

        Any load-time failure is a 503 that names the model and says what to do."""
        spec = self.spec(key)
        encoder = self._encoders.get(key)
        if encoder is not None:
            return encoder
        self._admitted.add(key)
        async with self._load_lock:
            if key not in self._encoders:
                self._encoders[key] = await self._make(spec)
                log.info("model %s loaded (fingerprint %s)", key, spec.fingerprint[:12])
            return self._encoders[key]

    def warm(self, keys: Iterable[str]) -> None:
        """Load these models (a collection uses them) in the background, so that a first request on
        this replica does not pay for loading one (a second or more on a small machine)."""
        for key in keys:
            if key in self._admitted or key not in self.specs:
                continue
            self._admitted.add(key)
            task = asyncio.get_running_loop().create_task(self.load(key), name=f"warm-{key}")
            self._warming.add(task)
            task.add_done_callback(functools.partial(self._warmed, key))

    def _warmed(self, key: str, task: asyncio.Task) -> None:
        self._warming.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not load model %s ahead of its first request: %r", key, task.exception())

    async def load_served(self) -> None:
        """Load the models of `models.serve` (at start)."""
        for key in self._serve:
            await self.load(key)

    async def _make(self, spec: ModelSpec) -> Encoder:
        """The one place a backend is chosen: by the model's spec."""
        if isinstance(spec, RemoteModelSpec):
            return self._remote.encoder(spec)  # nothing is sent until the first encode
        try:
            return await LocalEncoder.load(
                spec,
                loader=self._loader,
                cache_dir=self._cache_dir,
                threads=self._threads,
                lanes=self._lanes,
                options=self._options,
                on_batch=lambda n: self._on_batch(spec.key, n),
            )
        # their messages name the model and the fix
        except (ModelFilesUnavailable, ModelFileMismatch, ConfigError) as exc:
            log.error("model %s cannot be loaded: %s", spec.key, exc)
            raise EncoderFailed(f"model {spec.key!r} cannot be loaded: {exc}") from exc
        except Exception as exc:
            log.exception("model %s cannot be loaded", spec.key)
            raise EncoderFailed(
                f"model {spec.key!r} cannot be loaded (see the gateway log); check its files with "
                "`driftgate models fetch` and try again"
            ) from exc

    # -- encoding -----------------------------------------------------------------------------

    def refuse_drifted(self, key: str) -> None:
        """Refuse (409 model_drift) anything that would store or serve vectors of a drifted model."""
        if key in self.drifted:
            raise ModelDrift(
                f"model {key!r} has drifted ({self.drifted[key]}); no vectors of it are stored or served until "
                "its probes match again. Roll reads back or migrate to another model; see docs/remote-models.md"
            )

    async def embed(self, key: str, texts: list[str], kind: Kind, *, bulk: bool = False) -> Encoded:
        """Vectors for `texts` with model `key`, prefixed as the model expects for `kind`.

        Document vectors (the ones that get stored) of a drifted model are refused, checked again
        after the encode in case drift was found meanwhile. `bulk` work (backfill, verification,
        followed changes) yields the model to interactive requests."""
        storing = kind == "document"
        if storing:
            self.refuse_drifted(key)
        encoded = await self._encode(key, texts, kind, Lane.BULK if bulk else Lane.INTERACTIVE)
        if storing:
            self.refuse_drifted(key)
        return encoded

    async def embed_to_compare(self, key: str, texts: list[str]) -> Encoded:
        """Document vectors that are compared, never stored (verify): given even while the model is
        drifted, on the bulk lane, so a verification shows how far it moved."""
        return await self._encode(key, texts, "document", Lane.BULK)

    async def embed_for_shadow(self, key: str, text: str) -> Encoded:
        """A query vector for a shadow comparison, on the shadow lane."""
        return await self._encode(key, [text], "query", Lane.SHADOW)

    async def _encode(self, key: str, texts: list[str], kind: Kind, lane: Lane) -> Encoded:
        encoder = await self.load(key)
        try:
            return await encoder.encode(texts, kind, lane)
        except GatewayError:  # busy, an outage, a bad reply: they already say what to do
            raise
        except Exception as exc:
            log.exception("encoding with %s failed", key)
            raise EncoderFailed(f"encoding with model {key!r} failed; try again") from exc

    def tokens_used(self) -> dict[str, int]:
        """Tokens this process spent per remote model."""
        return self._remote.tokens_used()

    def usage(self, key: str) -> dict | None:
        """Tokens and circuit state of a model served by a provider, None for a local one."""
        return self._remote.usage(key)

    # -- pinning: registration, the drift verdict ---------------------------------------------

    async def registration(self, key: str) -> RegisteredModel:
        """What the registry records for a model: its fingerprint and its probe vectors."""
        spec = self.spec(key)
        probes = await self.probe_vectors(key)
        return RegisteredModel(
            key=key,
            name=spec.name,
            revision=spec.revision,
            dim=spec.dim,
            fingerprint=spec.fingerprint,
            probe_texts=PROBE_TEXTS,
            probe_vectors=tuple(tuple(float(x) for x in v) for v in probes),
        )

    async def probe_vectors(self, key: str, texts: tuple[str, ...] = PROBE_TEXTS) -> np.ndarray:
        """The probe texts' vectors as the model produces them now (past the drift refusal: the
        drift watch must probe a drifted model to see it match again)."""
        return (await self._encode(key, list(texts), "document", Lane.INTERACTIVE)).vectors

    async def drift(self, registered: RegisteredModel) -> str | None:
        """Why the configured model no longer matches its registration, or None when it does.

        A provider that cannot be asked for the probes leaves the model unverified: refused too."""
        try:
            return await self._mismatch(registered)
        except (EncoderUnavailable, EncoderBadReply) as exc:
            return f"model {registered.key!r} probes could not be checked ({exc.message}); the drift watch retries"

    async def _mismatch(self, registered: RegisteredModel) -> str | None:
        key = registered.key
        if key not in self.specs:
            return f"model {key!r} is registered but not in this gateway's catalog or config"
        spec = self.specs[key]
        if spec.fingerprint != registered.fingerprint:
            return (
                f"model {key!r} fingerprint changed (registered {registered.fingerprint[:12]}, "
                f"configured {spec.fingerprint[:12]}): its files or encoding parameters differ"
            )
        vectors = await self.probe_vectors(key, registered.probe_texts)
        cosine = min_row_cosine(vectors, np.asarray(registered.probe_vectors, dtype=np.float32))
        if cosine < spec.probe_tolerance:
            return (
                f"model {key!r} probe vectors moved (min cosine {cosine:.6f} < "
                f"{spec.probe_tolerance}): the runtime or files changed its outputs"
            )
        return None

    async def check_database(self, pool: asyncpg.Pool) -> dict[str, str]:
        """At start: serve keys registered with earlier files with those files, then load and check
        every model some collection uses. Returns the drifted ones with their reason."""
        self.recognise(await with_connection(pool, registry_sql.all_models))
        registered = await with_connection(pool, registry_sql.models_in_use)
        return await self.check(registered)

    async def check_once(self, pool: asyncpg.Pool, key: str) -> None:
        """Check a model against its registration unless this process already has (the backfill
        asks before storing its first vector; the drift watch keeps remote verdicts current)."""
        if key in self._checked:
            return
        registered = await with_connection(pool, lambda conn: registry_sql.get_model(conn, key))
        if registered is None:
            return
        try:
            reason = await self._mismatch(registered)
        except (EncoderUnavailable, EncoderBadReply, EncoderFailed):
            return  # it cannot be loaded or asked now: nor can the caller embed with it; asked again next time
        if reason:
            log.error("refusing to store vectors of model %s: %s", key, reason)
        self.set_verdicts({key: reason} if reason else {}, {key})

    async def check(self, registered: list[RegisteredModel]) -> dict[str, str]:
        """Load every model of `registered` and set its drift verdict; returns the drifted ones.

        A model that cannot be loaded is not given a verdict: its requests answer 503 naming it
        (and what to do) until its files are fixed."""
        verdicts: dict[str, str] = {}
        checked: set[str] = set()
        for model in registered:
            try:
                reason = await self.drift(model)
            except EncoderFailed as exc:
                log.error("model %s is unavailable: %s", model.key, exc.message)
                continue
            checked.add(model.key)
            if reason:
                log.error("refusing to serve model %s: %s; re-index required", model.key, reason)
                verdicts[model.key] = reason
        self.set_verdicts(verdicts, checked)
        return verdicts

    def set_verdicts(self, drifted: Mapping[str, str], checked: set[str]) -> None:
        """Record the verdicts of the models in `checked`: drifted ones with their reason."""
        self._checked |= checked
        for key in checked:
            if key in drifted:
                self.drifted[key] = drifted[key]
            else:
                self.drifted.pop(key, None)

    async def close(self) -> None:
        for task in self._warming:
            task.cancel()
        for encoder in self._encoders.values():
            await encoder.close()
        self._encoders.clear()
        await self._remote.close()
        self._lanes.close()
