"""The upstream reference of the encoder benchmark: sentence-transformers (on torch) running the
same checkpoint as driftgate's ONNX graph, on the same device, over the same texts and calls.

Optional: torch is no dependency of driftgate, so nothing here is imported unless the benchmark
finds sentence-transformers installed (`pip install sentence-transformers`). Only catalog models
converted from a checkpoint (spec.sources) have an upstream model to compare with.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from _common import log

from gateway.encoders.cache import source_spec
from gateway.encoders.catalog import ModelSpec
from gateway.encoders.convert.archive import opened
from gateway.encoders.convert.fetched import joined_source
from gateway.encoders.fetch import default_cache_dir, ensure_files

INSTALL = "pip install sentence-transformers"


def missing() -> str | None:
    """Why the upstream figures cannot be measured here, or None when they can."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return f"sentence-transformers is not installed (optional, brings torch): {INSTALL}"
    return None


def versions() -> dict:
    import sentence_transformers
    import torch

    return {
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "torch_cuda_available": torch.cuda.is_available(),
    }


@contextlib.contextmanager
def upstream_model(spec: ModelSpec, provider: str, threads: int) -> Iterator:
    """A SentenceTransformer of `spec`'s pinned checkpoint on the device `provider` names
    (cuda or cpu), or None for a model that was not converted from a checkpoint."""
    if not spec.sources:
        yield None
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing may come from a hub
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)  # as onnxruntime's intra_op_num_threads; 0 leaves torch's default
    cache = default_cache_dir()
    ensure_files([source_spec(spec)], cache, progress=log)
    with tempfile.TemporaryDirectory(prefix="driftgate-bench-upstream-") as tmp:
        with opened(joined_source(spec, cache, Path(tmp))) as root:
            device = "cuda" if provider == "cuda" else "cpu"
            log(f"[{spec.key}] upstream sentence-transformers from {root.name} on {device} ...")
            yield SentenceTransformer(str(root), device=device)


def encode(model, texts: list[str]) -> np.ndarray:
    """One call, as driftgate's encoder gets it: the whole list as one batch, vectors back on the host."""
    return model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def time_pass(model, calls: list[list[str]]) -> float:
    """Seconds to encode every list in `calls` (one encode() each); numpy results mean the device is done."""
    started = time.perf_counter()
    for texts in calls:
        encode(model, texts)
    return time.perf_counter() - started


def min_cosine(model, encoder, texts: list[str]) -> float:
    """The lowest cosine between upstream's and driftgate's vector of the same text (same model: ~1)."""
    ours = encoder.encode(texts).vectors
    theirs = encode(model, texts)
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    return round(float((ours * theirs).sum(axis=1).min()), 6)
