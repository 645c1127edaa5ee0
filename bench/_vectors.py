"""Vectors of a BEIR-layout dataset per model, cached as .npy files so that the adapter study
embeds each corpus once (11k Vaswani abstracts with all-mpnet-base-v2 take a long time on a CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gateway.config import load_settings
from gateway.datasets import Dataset
from gateway.encoders.onnx import load_encoder

DEFAULT_CACHE = Path(os.environ.get("DRIFTGATE_BENCH_VECTORS", Path.home() / ".cache" / "driftgate" / "bench-vectors"))


def dataset_vectors(
    data: Dataset, name: str, model: str, *, cache: Path = DEFAULT_CACHE, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(corpus vectors, query vectors) of `data` with `model`, embedded once and then read from `cache`."""
    settings = load_settings()
    spec = settings.model_specs()[model]
    folder = cache / name / model
    folder.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(spec, settings.model_cache_dir())
    out = []
    for kind, rows, prefix in (
        ("corpus", data.corpus, spec.document_prefix),
        ("queries", data.queries, spec.query_prefix),
    ):
        path = folder / f"{kind}-{len(rows)}.npy"
        if not path.exists():
            parts = []
            for start in range(0, len(rows), chunk):
                part = folder / f"{kind}-{len(rows)}.part{start}.npy"
                if not part.exists():
                    texts = [prefix + text for _, text in rows[start : start + chunk]]
                    np.save(part, encoder.encode(texts).vectors)
                parts.append(part)
            np.save(path, np.concatenate([np.load(p) for p in parts]))
            for p in parts:
                p.unlink()
        out.append(np.load(path))
    return out[0], out[1]


def judged_subset(data: Dataset, size: int, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Every judged-relevant document plus seeded random others, up to `size` documents in corpus
    order: a corpus a slow model can embed on a small machine. Returns it and its rows in `data`."""
    relevant = set().union(*data.qrels.values())
    rows = [i for i, (doc_id, _) in enumerate(data.corpus) if doc_id in relevant]
    others = [i for i, (doc_id, _) in enumerate(data.corpus) if doc_id not in relevant]
    fill = np.random.default_rng(seed).permutation(len(others))[: max(0, size - len(rows))]
    keep = np.array(sorted(rows + [others[i] for i in fill]))
    return Dataset([data.corpus[i] for i in keep], data.queries, data.qrels), keep


def subset_vectors(data: Dataset, name: str, model: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`dataset_vectors` of `judged_subset`, sliced from the whole corpus's vectors when those are cached."""
    subset, rows = judged_subset(data, size)
    whole = DEFAULT_CACHE / name / model / f"corpus-{len(data.corpus)}.npy"
    if whole.exists():
        _, queries = dataset_vectors(data, name, model)
        return np.load(whole)[rows], queries
    return dataset_vectors(subset, f"{name}-{size}", model)


if __name__ == "__main__":
    import sys

    from gateway.datasets import vaswani

    data = vaswani()
    for arg in sys.argv[1:]:
        key, _, size = arg.partition(":")
        corpus, queries = (
            subset_vectors(data, "vaswani", key, int(size)) if size else dataset_vectors(data, "vaswani", key)
        )
        print(arg, corpus.shape, queries.shape, flush=True)
