#!/usr/bin/env python
"""Benchmark: the learned adapter between two models' spaces (docs/adapter.md).

Not a test. Prints one JSON object to stdout; progress goes to stderr.

For each pair FROM->TO it embeds the Vaswani corpus and queries once per model (cached under
~/.cache/driftgate/bench-vectors, see bench/_vectors.py; --subset N keeps every judged document
plus random others up to N, for a model too slow to embed 11k abstracts here), then with exact
search (numpy, no index) reports nDCG@10 of:
  - from native, to native;
  - adapted: to-model queries mapped into the from-model corpus (the `adapted` read mode);
  - translated: from-model queries mapped into the to-model corpus (raw vectors after cutover);
for maps fitted on --pairs random document pairs (both models' vectors of the same document:
what a backfill gives), with the held-out validation the gateway gates on (mean cosine and
agreement@10), the same figures for a mis-paired fit and a random rotation (the floor must
refuse those), the fit's time and the map's added latency per query (one vector, as served).

    python bench/adapter.py                                   # the three pairs of docs/adapter.md
    python bench/adapter.py --pairs paraphrase-MiniLM-L3-v2:all-MiniLM-L6-v2 --fit-pairs 2000,5000
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import emit, log, machine_info
from _vectors import dataset_vectors, subset_vectors

from gateway.datasets import Dataset, vaswani
from gateway.domain.adapter import DEFAULT_RIDGE, MapKind, fit_adapter, fit_map, split, top_k, validate
from gateway.domain.ranking import ndcg_at_k

PAIRS = (
    "paraphrase-MiniLM-L3-v2:all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2:all-mpnet-base-v2",
    "all-MiniLM-L6-v2:sre-embedding-model",
)


def ndcg(data: Dataset, queries: np.ndarray, corpus: np.ndarray, k: int = 10) -> float:
    """Mean nDCG@k of exact cosine search over the judged queries."""
    ids = [doc_id for doc_id, _ in data.corpus]
    judged = [i for i, (qid, _) in enumerate(data.queries) if data.qrels.get(qid)]
    ranked = top_k(queries[judged], corpus, k)
    scores = [
        ndcg_at_k([ids[j] for j in row], data.qrels[data.queries[i][0]], k)
        for i, row in zip(judged, ranked, strict=True)
    ]
    return round(float(np.mean(scores)), 4)


def per_query_us(apply, vector: np.ndarray, repeat: int = 300, runs_n: int = 40) -> float:
    """Microseconds one map application takes on one query vector (the served path): the fastest of 40 runs,
    since on a shared machine the slower runs measure other processes, not the map."""
    runs = []
    for _ in range(runs_n):
        started = time.perf_counter()
        for _ in range(repeat):
            apply(vector)
        runs.append((time.perf_counter() - started) / repeat * 1e6)
    return round(float(min(runs)), 2)


def study(data: Dataset, pair: str, fit_pairs: list[int], subset: int | None, ridges: list[float]) -> dict:
    from_model, to_model = pair.split(":")
    vectors = {}
    for model in (from_model, to_model):
        log(f"vectors of {model} ...")
        vectors[model] = (
            subset_vectors(vaswani(), "vaswani", model, subset) if subset else dataset_vectors(data, "vaswani", model)
        )
    (x_docs, x_queries), (y_docs, y_queries) = vectors[from_model], vectors[to_model]
    row: dict = {
        "from_model": from_model,
        "to_model": to_model,
        "dims": [x_docs.shape[1], y_docs.shape[1]],
        "documents": len(x_docs),
        f"{from_model} native": ndcg(data, x_queries, x_docs),
        f"{to_model} native": ndcg(data, y_queries, y_docs),
        "fits": [],
    }
    rng = np.random.default_rng(0)
    for n in fit_pairs:
        sample = np.sort(rng.permutation(len(x_docs))[: min(n, len(x_docs))])
        kinds: list[tuple[MapKind | None, float]] = [(None, DEFAULT_RIDGE)]  # what the gateway fits by default
        if x_docs.shape[1] == y_docs.shape[1]:
            kinds += [(MapKind.RIDGE, r) for r in ridges]
        else:
            kinds += [(MapKind.RIDGE, r) for r in ridges if r != DEFAULT_RIDGE]
        for kind, ridge in kinds:
            started = time.perf_counter()
            fitted = fit_adapter(x_docs[sample], y_docs[sample], kind=kind, ridge=ridge)
            fit_s = time.perf_counter() - started
            adapted = ndcg(data, fitted.adapt.apply(y_queries), x_docs)
            translated = ndcg(data, fitted.translate.apply(x_queries), y_docs)
            fit = {
                "pairs": len(sample),
                "kind": fitted.adapt.kind.value,
                "ridge": ridge if fitted.adapt.kind is MapKind.RIDGE else None,
                "fit_s": round(fit_s, 2),
                "adapt_validation": fitted.adapt_validation.as_dict(),
                "translate_validation": fitted.translate_validation.as_dict(),
                "adapted ndcg@10": adapted,
                "adapted / from native": round(adapted / row[f"{from_model} native"], 3),
                "adapted / to native": round(adapted / row[f"{to_model} native"], 3),
                "translated ndcg@10": translated,
                "translated / from native": round(translated / row[f"{from_model} native"], 3),
                "adapt_us_per_query": per_query_us(fitted.adapt.apply, y_queries[0]),
            }
            log(pair, fit)
            row["fits"].append(fit)
    row["controls"] = controls(x_docs, y_docs, rng)
    log(pair, "controls", row["controls"])
    return row


def controls(x_docs: np.ndarray, y_docs: np.ndarray, rng: np.random.Generator, n: int = 4000) -> dict:
    """Held-out figures of maps that must not serve: fitted on mis-paired vectors, and a random rotation."""
    sample = rng.permutation(len(x_docs))[:n]
    x, y = x_docs[sample], y_docs[sample]
    shuffled = fit_adapter(x, y[rng.permutation(len(y))])
    train, held = split(len(x))
    dim_in, dim_out = y.shape[1], x.shape[1]
    q, _ = np.linalg.qr(rng.standard_normal((max(dim_in, dim_out), max(dim_in, dim_out))))
    random_map = fit_map(y[:2], x[:2], MapKind.RIDGE)  # only for its shape; weights replaced below
    random_map = type(random_map)(MapKind.RIDGE, q[:dim_in, :dim_out].astype(np.float32), np.zeros(dim_out, np.float32))
    return {
        "mis-paired fit": shuffled.adapt_validation.as_dict(),
        "random rotation": validate(random_map, y, x, held, len(train)).as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pairs", default=",".join(PAIRS), help="FROM:TO model pairs, comma-separated")
    parser.add_argument("--fit-pairs", default="2000,5000", help="document pairs to fit on, comma-separated")
    parser.add_argument("--ridges", default="0.1,1.0,10.0", help="ridge strengths of the affine maps tried")
    parser.add_argument("--subset", type=int, default=None, help="judged documents plus random others up to N")
    args = parser.parse_args()
    data = vaswani()
    if args.subset:
        from _vectors import judged_subset

        data, _ = judged_subset(data, args.subset)
    fit_pairs = [int(n) for n in args.fit_pairs.split(",")]
    ridges = [float(r) for r in args.ridges.split(",")]
    results = [study(data, pair, fit_pairs, args.subset, ridges) for pair in args.pairs.split(",")]
    emit(
        {
            "benchmark": "adapter",
            "dataset": "vaswani",
            "subset": args.subset,
            "machine": machine_info(),
            "pairs": results,
        }
    )


if __name__ == "__main__":
    main()
