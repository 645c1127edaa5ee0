"""The one encoder contract everything above the encoders talks to.

An `Encoder` turns texts of a kind (query or document) into float32 vectors on a lane
(interactive, shadow or bulk), and exposes its model's dim and fingerprint. Two backends
implement it: local ONNX sessions (encoders/local.py) and an OpenAI-compatible provider
(encoders/remote.py). Which one serves a model is decided by its spec, never by a caller:
services/embedding.py makes the encoder for each model and nothing above it branches on
the backend.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from gateway.encoders.catalog import ModelSpec

Kind = Literal["query", "document"]


class Lane(enum.StrEnum):
    """Who is waiting for the vectors, which decides where the work runs."""

    INTERACTIVE = "interactive"  # a request is waiting: micro-batched, all threads
    SHADOW = "shadow"  # a shadow comparison: one thread, never more than one core
    BULK = "bulk"  # backfill, verification, followed changes: low-priority threads


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # (n, dim) float32
    truncated: tuple[bool, ...]
    tokens: tuple[int, ...] = ()  # tokens each text used (after truncation); words for in-graph tokenizers


class Encoder(Protocol):
    """A loaded model, whatever serves it; its spec gives dim, max batch, fingerprint and probe tolerance."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def runs_on(self) -> str | None:
        """Where it runs: "cpu" or "cuda" for a local model's session, "remote" for a provider's
        (None when a test's stand-in session cannot say)."""
        ...

    async def encode(self, texts: list[str], kind: Kind, lane: Lane = Lane.INTERACTIVE) -> Encoded:
        """Vectors of `texts` in order, each prefixed as the model expects for `kind`."""
        ...

    async def close(self) -> None: ...


class SessionEncoder(Protocol):
    """A synchronous encoder of already prefixed texts (an ONNX session, or a test's stand-in)."""

    def encode(self, texts: list[str]) -> Encoded: ...


# (spec, cache_dir, threads) -> a session; tests swap it for one that counts or fails
EncoderLoader = Callable[[ModelSpec, Path, int], SessionEncoder]


def prefixed(spec: ModelSpec, texts: list[str], kind: Kind) -> list[str]:
    """`texts` with the prefix the model expects for `kind` (E5's "query: ", "passage: ")."""
    prefix = spec.query_prefix if kind == "query" else spec.document_prefix
    return [prefix + t for t in texts] if prefix else texts
