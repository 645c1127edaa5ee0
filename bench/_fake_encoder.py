"""A trivial, deterministic stand-in encoder for benchmarks of the backfill engine (not a model).

`fake_loader` has the signature of `EmbeddingService(loader=...)`: (spec, cache_dir, threads)
-> an object with `.encode(list[str]) -> Encoded`. A text's vector is a fixed mix of three
rows of a seeded random table picked by a 64-bit BLAKE2b hash of the text, L2-normalised:
the same text always gets the same vector (in every process), different texts almost always
get different ones, and the cost is a hash per text plus one vectorised numpy gather (a few
microseconds per text), so a benchmark using it measures everything but the model.

Module level on purpose: processes started with the 'spawn' method import it by name.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np

from gateway.encoders.catalog import ModelSpec
from gateway.encoders.onnx import Encoded, load_encoder

TABLE_ROWS = 4096  # 12 bits of the hash pick each row
_SEED = 20240611


@cache
def _table(dim: int) -> np.ndarray:
    return np.random.default_rng(_SEED + dim).standard_normal((TABLE_ROWS, dim)).astype(np.float32)


class HashEncoder:
    """Vectors from a hash of the text; `dim` as the model spec says. Thread-safe (no state)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._table = _table(dim)

    def encode(self, texts: list[str]) -> Encoded:
        n = len(texts)
        if n == 0:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), ())
        hashes = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
                for t in texts
            ),
            dtype=np.uint64,
            count=n,
        )
        mask = np.uint64(TABLE_ROWS - 1)
        i1 = (hashes & mask).astype(np.intp)
        i2 = ((hashes >> np.uint64(12)) & mask).astype(np.intp)
        i3 = ((hashes >> np.uint64(24)) & mask).astype(np.intp)
        vectors = self._table[i1] + np.float32(0.5) * self._table[i2] + np.float32(0.25) * self._table[i3]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Encoded(np.ascontiguousarray(vectors, dtype=np.float32), (False,) * n)


def fake_loader(spec: ModelSpec, cache_dir: Path, threads: int) -> HashEncoder:
    """Every model is the hash encoder at the spec's dimension."""
    return HashEncoder(spec.dim)


class RecordingEncoder:
    """Passes `encode` through to a real encoder and records, per call, the texts, the tokens the
    texts used, and the token positions the model ran on (the encoder sorts a call's texts by
    length and runs pieces of the spec's max_batch, each padded to its longest text)."""

    def __init__(self, encoder, max_batch: int) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.calls: list[tuple[int, int, int]] = []  # (texts, tokens, token positions run)

    def encode(self, texts: list[str]) -> Encoded:
        result = self.encoder.encode(texts)
        tokens = list(result.tokens) if result.tokens else []
        if len(tokens) == len(texts):
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # as OnnxEncoder.encode does
            run = sum(
                max(tokens[i] for i in order[s : s + self.max_batch]) * len(order[s : s + self.max_batch])
                for s in range(0, len(order), self.max_batch)
            )
            self.calls.append((len(texts), sum(tokens), run))
        else:
            self.calls.append((len(texts), 0, 0))
        return result

    def summary(self) -> dict:
        texts = sum(c[0] for c in self.calls)
        tokens = sum(c[1] for c in self.calls)
        run = sum(c[2] for c in self.calls)
        return {
            "encode_calls": len(self.calls),
            "texts_per_call": round(texts / len(self.calls), 1) if self.calls else None,
            "tokens": tokens,
            "token_positions_run": run,
            "padding_factor": round(run / tokens, 3) if tokens else None,  # 1.0 = no padding
        }


RECORDERS: dict[str, RecordingEncoder] = {}  # model key -> the recorder partly_fake_loader made


def partly_fake_loader(real_keys: frozenset[str], spec: ModelSpec, cache_dir: Path, threads: int):
    """The real ONNX encoder for the models in `real_keys` (wrapped in a RecordingEncoder, kept in
    RECORDERS), the hash encoder for the others.

    Bind `real_keys` with functools.partial. The real encoder comes from `load_encoder`, which
    caches sessions per process, so a benchmark timing `load_encoder(...).encode` directly
    uses the very session the gateway uses.
    """
    if spec.key in real_keys:
        recorder = RecordingEncoder(load_encoder(spec, cache_dir, threads), spec.max_batch)
        RECORDERS[spec.key] = recorder
        return recorder
    return HashEncoder(spec.dim)
