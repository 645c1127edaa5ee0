"""Embedding with pinned models: lazy loading, micro-batching, fingerprints and probe checks.

One `EmbeddingService` per app. Encoders (ONNX sessions) are shared per process; the
batchers and the thread pool belong to the app's event loop and close with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from gateway.config import Settings
from gateway.domain.batching import estimate_tokens
from gateway.domain.errors import EncoderBadReply, EncoderBusy, EncoderFailed, EncoderUnavailable, InvalidRequest
from gateway.domain.fingerprint import PROBE_TEXTS
from gateway.domain.vectors import row_cosines
from gateway.encoders.batcher import MicroBatcher
from gateway.encoders.catalog import FORMER_MEANINGS, ModelSpec
from gateway.encoders.fetch import ModelFilesUnavailable
from gateway.encoders.onnx import Encoded, load_encoder
from gateway.encoders.remote import is_remote
from gateway.services.remote_models import RemoteModels
from gateway.store.registry import RegisteredModel

log = logging.getLogger(__name__)

BULK_NICE = 5  # how much lower bulk encoder threads run than the rest of the process (Linux): ~3x less weight


def lower_thread_priority() -> None:
    """Raise the calling thread's nice value (Linux sets it per thread); anyone may lower their priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)
    except (AttributeError, OSError) as exc:  # not Linux: bulk still runs, only not deprioritised
        log.debug("could not lower the bulk encoder thread's priority: %r", exc)


Kind = Literal["query", "document"]
# (spec, cache_dir, threads) -> object with .encode(list[str]) -> Encoded; tests swap it
EncoderLoader = Callable[[ModelSpec, Path, int], object]


class EmbeddingService:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        cache_dir: Path,
        *,
        intra_op_threads: int = 0,
        batch_window_s: float = 0.0,
        micro_batching: bool = True,
        max_queued_texts: int = 4096,
        bulk_lanes: int = 2,
        allow_download: bool = True,
        loader: EncoderLoader | None = None,
        on_batch: Callable[[str, int], None] | None = None,
        on_tokens: Callable[[str, int], None] | None = None,
    ) -> None:
        self.specs = specs
        self._cache_dir = cache_dir
        self._threads = intra_op_threads
        self._window_s = batch_window_s
        self._micro_batching = micro_batching
        self._max_queued_texts = max_queued_texts
        self._allow_download = allow_download
        self._loader = loader or self._default_loader
        self._on_batch = on_batch or (lambda _key, _n: None)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="encode")
        self._batchers: dict[str, MicroBatcher] = {}
        # shadow work gets its own single-threaded sessions and thread, so a shadow inference
        # takes at most one core from the read path
        self._shadow_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow-encode")
        self._shadow_batchers: dict[str, MicroBatcher] = {}
        # bulk work (backfill, verification, followed changes) runs on lanes of its own: threads
        # with a raised nice value and one-threaded sessions, so the OS gives the cores to
        # interactive work first and a query never queues behind a backfill chunk
        self._bulk_executor = ThreadPoolExecutor(
            max_workers=bulk_lanes, thread_name_prefix="bulk-encode", initializer=lower_thread_priority
        )
        self._bulk_encoders: dict[str, object] = {}
        self._load_lock = asyncio.Lock()
        # models served by an OpenAI-compatible provider: async, no batcher, no thread (remote_models.py)
        self.remote = RemoteModels(on_tokens)

    @classmethod
    def from_settings(cls, settings: Settings, **extra) -> EmbeddingService:
        """The service as the config describes it; `extra` adds the loader or a batch callback."""
        models = settings.models
        return cls(
            settings.model_specs(),
            settings.model_cache_dir(),
            intra_op_threads=models.intra_op_threads,
            batch_window_s=models.batch_window_ms / 1000,
            micro_batching=models.micro_batching,
            max_queued_texts=models.max_queued_texts,
            bulk_lanes=models.bulk_lanes,
            allow_download=models.allow_download,
            **extra,
        )

    def _default_loader(self, spec: ModelSpec, cache_dir: Path, threads: int):
        def progress(message: str) -> None:  # a first start may spend minutes fetching a model: say so
            log.info("model %s: %s", spec.key, message)

        return load_encoder(spec, cache_dir, threads, allow_download=self._allow_download, progress=progress)

    def spec(self, key: str) -> ModelSpec:
        try:
            return self.specs[key]
        except KeyError:
            known = ", ".join(sorted(self.specs))
            raise InvalidRequest(f"unknown model {key!r}; known models: {known}", code="unknown_model") from None

    def loaded(self) -> list[str]:
        return sorted(self._batchers)

    def is_loaded(self, key: str) -> bool:
        """Whether `key` needs no loading before its next encode (remote models never do)."""
        return key in self._batchers or (key in self.specs and is_remote(self.specs[key]))

    async def load(self, key: str) -> None:
        """Load a model's encoder (fetching its files on first use) off the event loop."""
        spec = self.spec(key)
        if is_remote(spec):
            return  # nothing to load: its client is made on first use
        async with self._load_lock:
            if key in self._batchers:
                return
            loop = asyncio.get_running_loop()
            try:
                encoder = await loop.run_in_executor(self._executor, self._loader, spec, self._cache_dir, self._threads)
            except ModelFilesUnavailable as exc:
                raise EncoderFailed(str(exc)) from exc
            self._batchers[key] = MicroBatcher(
                encoder.encode,
                self._executor,
                max_batch=spec.max_batch,
                window_s=self._window_s,
                enabled=self._micro_batching,
                max_queued_texts=self._max_queued_texts,
                max_batch_tokens=spec.max_batch_tokens,
                cost=lambda text: estimate_tokens(text, spec.max_tokens),
                on_batch=lambda n: self._on_batch(key, n),
            )
            log.info("model %s loaded (fingerprint %s)", key, spec.fingerprint[:12])

    async def embed_for_shadow(self, key: str, text: str) -> Encoded:
        """A query vector for a shadow comparison, on the single-threaded shadow lane."""
        spec = self.spec(key)
        if is_remote(spec):
            return await self.remote.embed(spec, [spec.query_prefix + text], "query", bulk=True)
        if key not in self._shadow_batchers:
            loop = asyncio.get_running_loop()
            try:
                encoder = await loop.run_in_executor(self._shadow_executor, self._loader, spec, self._cache_dir, 1)
            except ModelFilesUnavailable as exc:
                raise EncoderFailed(str(exc)) from exc
            self._shadow_batchers.setdefault(
                key, MicroBatcher(encoder.encode, self._shadow_executor, max_batch=spec.max_batch)
            )
        try:
            return await self._shadow_batchers[key].encode([spec.query_prefix + text])
        except Exception as exc:
            raise EncoderFailed(f"shadow encoding with model {key!r} failed ({type(exc).__name__})") from exc

    async def embed(self, key: str, texts: list[str], kind: Kind, *, bulk: bool = False) -> Encoded:
        """Vectors for `texts` with model `key`, prefixed as the model expects for `kind`.

        `bulk` work (backfill, verification) yields the model to interactive requests."""
        spec = self.spec(key)
        if key not in self._batchers and not is_remote(spec):
            await self.load(key)
        prefix = spec.query_prefix if kind == "query" else spec.document_prefix
        if prefix:
            texts = [prefix + t for t in texts]
        if is_remote(spec):  # its own errors already say what to do (503 + Retry-After, 502, 409)
            return await self.remote.embed(spec, texts, kind, bulk=bulk)
        try:
            if bulk:
                return await self._embed_bulk(key, spec, texts)
            return await self._batchers[key].encode(texts)
        except EncoderBusy:
            raise
        except Exception as exc:
            log.exception("encoding with %s failed", key)
            raise EncoderFailed(f"encoding with model {key!r} failed ({type(exc).__name__}); try again") from exc

    async def _embed_bulk(self, key: str, spec: ModelSpec, texts: list[str]) -> Encoded:
        """Bulk texts on a low-priority lane, with a one-threaded session loaded on that lane."""
        loop = asyncio.get_running_loop()
        encoder = self._bulk_encoders.get(key)
        if encoder is None:
            try:
                encoder = await loop.run_in_executor(self._bulk_executor, self._loader, spec, self._cache_dir, 1)
            except ModelFilesUnavailable as exc:
                raise EncoderFailed(str(exc)) from exc
            encoder = self._bulk_encoders.setdefault(key, encoder)
        self._on_batch(key, len(texts))
        return await loop.run_in_executor(self._bulk_executor, encoder.encode, texts)  # type: ignore[attr-defined]

    async def registration(self, key: str) -> RegisteredModel:
        """What the registry records for a model: its fingerprint and its probe vectors."""
        spec = self.spec(key)
        probes = await self._probe_vectors(key)
        return RegisteredModel(
            key=key,
            name=spec.name,
            revision=spec.revision,
            dim=spec.dim,
            fingerprint=spec.fingerprint,
            probe_texts=PROBE_TEXTS,
            probe_vectors=tuple(tuple(float(x) for x in v) for v in probes),
        )

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

    async def drift(self, registered: RegisteredModel) -> str | None:
        """Why the configured model no longer matches its registration, or None when it does."""
        key = registered.key
        if key not in self.specs:
            return f"model {key!r} is registered but not in this gateway's catalog or config"
        spec = self.specs[key]
        if spec.fingerprint != registered.fingerprint:
            return (
                f"model {key!r} fingerprint changed (registered {registered.fingerprint[:12]}, "
                f"configured {spec.fingerprint[:12]}): its files or encoding parameters differ"
            )
        try:
            vectors = await self._probe_vectors(key, registered.probe_texts)
        except (EncoderUnavailable, EncoderBadReply) as exc:  # remote only: unverified is refused too
            return f"model {key!r} probes could not be checked ({exc.message}); the drift watch retries"
        stored = np.asarray(registered.probe_vectors, dtype=np.float32)
        if stored.shape != vectors.shape:
            return f"model {key!r} probe vectors have shape {vectors.shape}, registered {stored.shape}"
        cosines = row_cosines(vectors, stored)
        if float(cosines.min()) < spec.probe_tolerance:
            return (
                f"model {key!r} probe vectors moved (min cosine {cosines.min():.6f} < "
                f"{spec.probe_tolerance}): the runtime or files changed its outputs"
            )
        return None

    async def _probe_vectors(self, key: str, texts: tuple[str, ...] = PROBE_TEXTS) -> np.ndarray:
        spec = self.spec(key)
        if is_remote(spec):  # the drift watch probes a drifted model too: past the write refusal
            prefixed = [spec.document_prefix + t for t in texts]
            return (await self.remote.embed(spec, prefixed, "document", probe=True)).vectors
        encoded = await self.embed(key, list(texts), "document")
        return encoded.vectors

    async def probe_vectors(self, key: str, texts: tuple[str, ...] = PROBE_TEXTS) -> np.ndarray:
        """The probe texts' vectors as the model produces them now (for the drift watch)."""
        return await self._probe_vectors(key, texts)

    async def close(self) -> None:
        for batcher in (*self._batchers.values(), *self._shadow_batchers.values()):
            await batcher.close()
        self._batchers.clear()
        self._shadow_batchers.clear()
        self._bulk_encoders.clear()
        await self.remote.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._shadow_executor.shutdown(wait=False, cancel_futures=True)
        self._bulk_executor.shutdown(wait=False, cancel_futures=True)
