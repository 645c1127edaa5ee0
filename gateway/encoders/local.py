"""A local model as an `Encoder`: ONNX sessions on three lanes of threads.

- interactive: one session with the configured threads behind a `MicroBatcher` (queries,
  document writes, /v1/embeddings);
- shadow: a one-threaded session on a thread of its own, so a shadow inference takes at
  most one core from the read path;
- bulk: one-threaded sessions on low-priority threads (backfill, verification, followed
  changes, bulk loads), so the OS gives the cores to interactive work first; a large encode is
  cut into one piece per lane (of at least a model batch), so it uses them all.

`load()` makes the interactive session; the shadow and bulk sessions of a loaded model are
made on their lanes the first time they are needed (sessions are shared per process, see
`onnx.load_encoder`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.domain.batching import estimate_tokens
from gateway.encoders.base import Encoded, EncoderLoader, Kind, Lane, SessionEncoder, prefixed
from gateway.encoders.batcher import MicroBatcher
from gateway.encoders.catalog import ModelSpec

log = logging.getLogger(__name__)

BULK_NICE = 5  # how much lower bulk encoder threads run than the rest of the process (Linux): ~3x less weight


def lower_thread_priority() -> None:
    """Raise the calling thread's nice value (Linux sets it per thread); anyone may lower their priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)
    except (AttributeError, OSError) as exc:  # not Linux: bulk still runs, only not deprioritised
        log.debug("could not lower the bulk encoder thread's priority: %r", exc)


@dataclass(frozen=True)
class BatchOptions:
    """How interactive work is micro-batched (the `[models]` config)."""

    window_s: float = 0.0
    enabled: bool = True
    max_queued_texts: int = 4096


def bulk_pieces(count: int, lanes: int, at_least: int) -> list[tuple[int, int]]:
    """[start, end) ranges that cut `count` bulk texts into one piece per lane, each of at least
    `at_least` texts (the model's batch), so one large encode (the last chunk of a bulk load)
    keeps every lane busy, while a small one stays whole."""
    pieces = max(1, min(lanes, count // max(1, at_least)))
    size = max(1, -(-count // pieces))
    return [(a, min(a + size, count)) for a in range(0, count, size)] or [(0, 0)]


def join_encoded(parts: list[Encoded]) -> Encoded:
    """One `Encoded` of consecutive pieces, in order."""
    if len(parts) == 1:
        return parts[0]
    return Encoded(
        np.concatenate([p.vectors for p in parts]),
        tuple(t for p in parts for t in p.truncated),
        tuple(t for p in parts for t in p.tokens),
    )


class Lanes:
    """The thread pools of one app, shared by all its local models; closed with the app."""

    def __init__(self, bulk_lanes: int = 2) -> None:
        self.bulk_lanes = bulk_lanes
        self.interactive = ThreadPoolExecutor(max_workers=4, thread_name_prefix="encode")
        self.shadow = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow-encode")
        self.bulk = ThreadPoolExecutor(
            max_workers=bulk_lanes, thread_name_prefix="bulk-encode", initializer=lower_thread_priority
        )

    def close(self) -> None:
        for executor in (self.interactive, self.shadow, self.bulk):
            executor.shutdown(wait=False, cancel_futures=True)


class LocalEncoder:
    """One local model on the app's lanes. Build it with `load`, which makes its interactive session."""

    def __init__(
        self,
        spec: ModelSpec,
        session: SessionEncoder,
        *,
        loader: EncoderLoader,
        cache_dir: Path,
        lanes: Lanes,
        options: BatchOptions,
        on_batch: Callable[[int], None],
    ) -> None:
        self.spec = spec
        # "cpu" or "cuda" as the interactive session runs (None for a test's stand-in session)
        self.runs_on: str | None = getattr(session, "provider", None)
        self._loader = loader
        self._cache_dir = cache_dir
        self._lanes = lanes
        self._on_batch = on_batch
        self.batcher = MicroBatcher(
            session.encode,
            lanes.interactive,
            max_batch=spec.max_batch,
            window_s=options.window_s,
            enabled=options.enabled,
            max_queued_texts=options.max_queued_texts,
            max_batch_tokens=spec.max_batch_tokens,
            cost=lambda text: estimate_tokens(text, spec.max_tokens),
            on_batch=on_batch,
        )
        self._shadow: MicroBatcher | None = None
        self._bulk: SessionEncoder | None = None

    @classmethod
    async def load(
        cls,
        spec: ModelSpec,
        *,
        loader: EncoderLoader,
        cache_dir: Path,
        threads: int,
        lanes: Lanes,
        options: BatchOptions,
        on_batch: Callable[[int], None],
    ) -> LocalEncoder:
        """Load the model's interactive session off the event loop (fetching its files on first use)."""
        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(lanes.interactive, loader, spec, cache_dir, threads)
        return cls(spec, session, loader=loader, cache_dir=cache_dir, lanes=lanes, options=options, on_batch=on_batch)

    async def encode(self, texts: list[str], kind: Kind, lane: Lane = Lane.INTERACTIVE) -> Encoded:
        texts = prefixed(self.spec, texts, kind)
        if lane is Lane.SHADOW:
            return await (await self._shadow_batcher()).encode(texts)
        if lane is Lane.BULK:
            session = await self._bulk_session()
            self._on_batch(len(texts))
            loop = asyncio.get_running_loop()
            pieces = bulk_pieces(len(texts), self._lanes.bulk_lanes, self.spec.max_batch)
            parts = await asyncio.gather(
                *(loop.run_in_executor(self._lanes.bulk, session.encode, texts[a:b]) for a, b in pieces)
            )
            return join_encoded(parts)
        return await self.batcher.encode(texts)

    async def _shadow_batcher(self) -> MicroBatcher:
        if self._shadow is None:
            loop = asyncio.get_running_loop()
            session = await loop.run_in_executor(self._lanes.shadow, self._loader, self.spec, self._cache_dir, 1)
            if self._shadow is None:  # another shadow request may have made it meanwhile
                self._shadow = MicroBatcher(session.encode, self._lanes.shadow, max_batch=self.spec.max_batch)
        return self._shadow

    async def _bulk_session(self) -> SessionEncoder:
        if self._bulk is None:
            loop = asyncio.get_running_loop()
            self._bulk = await loop.run_in_executor(self._lanes.bulk, self._loader, self.spec, self._cache_dir, 1)
        return self._bulk

    async def close(self) -> None:
        await self.batcher.close()
        if self._shadow is not None:
            await self._shadow.close()
        self._shadow = None
        self._bulk = None
