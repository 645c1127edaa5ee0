"""Offline retrieval quality of models on a BEIR-layout dataset, through the gateway's own
encoders and tables: each model gets a scratch collection, the corpus is written through the
normal write path, and every query is answered by the normal search path."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from gateway.datasets import Dataset
from gateway.domain.ranking import mrr_at_k, ndcg_at_k, overlap_at_k, rbo, recall_at_k
from gateway.domain.storage import stored_model
from gateway.services.adapter import AdapterService
from gateway.services.collections import CollectionService, NewDocument
from gateway.services.migrations import Actor, MigrationService
from gateway.store import collections as collections_sql
from gateway.store import documents as documents_sql
from gateway.store.retry import in_transaction, with_connection

Progress = Callable[[str, int, int], None]  # (label, done, total)


@dataclass(frozen=True)
class ModelResult:
    model: str
    rankings: dict[str, list[str]]  # query id -> ranked doc ids
    metrics: dict[str, float]
    embed_s: float


async def evaluate(
    pool: asyncpg.Pool,
    collections: CollectionService,
    dataset: Dataset,
    models: list[str],
    k: int = 10,
    *,
    batch: int = 256,
    progress: Progress | None = None,
) -> dict:
    """nDCG@k, recall@k and MRR@k per model, and each model's agreement with the first one."""
    progress = progress or (lambda _label, _done, _total: None)
    judged = [(qid, text) for qid, text in dataset.queries if dataset.qrels.get(qid)]
    results = [await _run_model(pool, collections, dataset, judged, model, k, batch, progress) for model in models]
    base = results[0]
    comparisons = []
    for other in results[1:]:
        overlaps = [overlap_at_k(base.rankings[q], other.rankings[q], k) for q, _ in judged]
        rbos = [rbo(base.rankings[q], other.rankings[q]) for q, _ in judged]
        comparisons.append(
            {
                "a": base.model,
                "b": other.model,
                f"overlap@{k}": round(sum(overlaps) / len(overlaps), 4),
                "rbo": round(sum(rbos) / len(rbos), 4),
            }
        )
    return {
        "documents": len(dataset.corpus),
        "queries": len(judged),
        "k": k,
        "models": [
            {
                "model": r.model,
                **r.metrics,
                "embed_s": round(r.embed_s, 2),
                "docs_per_s": round(len(dataset.corpus) / r.embed_s, 1),
            }
            for r in results
        ],
        "comparisons": comparisons,
    }


async def _run_model(pool, collections, dataset, judged, entry, k, batch, progress) -> ModelResult:
    """One model (`KEY`, or `KEY@halfvec` for a table stored as float16) in a scratch collection."""
    model, storage = stored_model(entry)
    name = f"eval_{uuid.uuid4().hex[:12]}"
    await collections.create(name, model, storage)
    try:
        embed_s = await _load_corpus(collections, name, dataset, entry, batch, progress)
        served, exact = {}, {}
        for i, (qid, text) in enumerate(judged):
            result = await collections.query_text(name, text, k, None)
            served[qid] = [hit.id for hit in result.hits]
            exact[qid] = await _ranking(pool, name, model, result.vector, k, exact=True)
            progress(f"querying with {entry}", i + 1, len(judged))
    finally:
        await _drop(pool, collections, name)
    return ModelResult(entry, served, _figures(dataset, judged, served, exact, k), embed_s)


async def _load_corpus(collections, name, dataset, label, batch, progress) -> float:
    """Write the corpus through the normal write path (every model of the write set); seconds taken."""
    started = time.perf_counter()
    for start in range(0, len(dataset.corpus), batch):
        chunk = dataset.corpus[start : start + batch]
        await collections.upsert(name, [NewDocument(doc_id, text, {}) for doc_id, text in chunk])
        progress(f"embedding with {label}", min(start + batch, len(dataset.corpus)), len(dataset.corpus))
    return time.perf_counter() - started


async def _drop(pool, collections, name) -> None:
    await in_transaction(pool, lambda conn: collections_sql.drop_collection(conn, name))
    await collections.reload(name)


async def _ranking(pool, name: str, model: str, vector, k: int, *, exact: bool) -> list[str]:
    """Ids of the k nearest documents in `model`'s table: through the HNSW index, or exact (no index)."""
    hits = await with_connection(pool, lambda conn: documents_sql.search(conn, name, model, vector, k, exact=exact))
    return [hit.id for hit in hits]


def _quality(dataset: Dataset, judged, rankings: dict[str, list[str]], k: int) -> dict[str, float]:
    n = len(judged)
    return {
        f"ndcg@{k}": round(sum(ndcg_at_k(rankings[q], dataset.qrels[q], k) for q, _ in judged) / n, 4),
        f"recall@{k}": round(sum(recall_at_k(rankings[q], dataset.qrels[q], k) for q, _ in judged) / n, 4),
        f"mrr@{k}": round(sum(mrr_at_k(rankings[q], dataset.qrels[q], k) for q, _ in judged) / n, 4),
    }


def _figures(dataset: Dataset, judged, served: dict, exact: dict, k: int) -> dict:
    """Served quality (through the index, as queries are answered) at the top level, the model's own
    quality by exact search under "exact", and the index's recall@k against exact search."""
    index_recall = sum(len(set(served[q][:k]) & set(exact[q][:k])) / max(1, len(exact[q][:k])) for q, _ in judged)
    return {
        **_quality(dataset, judged, served, k),
        "exact": _quality(dataset, judged, exact, k),
        f"index_recall@{k}": round(index_recall / len(judged), 4),
    }


# -- the adapter between two models ----------------------------------------------------------

# (run, model of the index searched, model the query is embedded with, map applied to the query)
ADAPTER_RUNS = (
    ("from native", "from", "from", None),
    ("to native", "to", "to", None),
    ("adapted", "from", "to", "adapt"),  # the `adapted` read mode: new-model queries, old index
    ("translated", "to", "from", "translate"),  # old-model vectors against the new index
)


async def evaluate_adapter(
    pool: asyncpg.Pool,
    collections: CollectionService,
    migrations: MigrationService,
    adapters: AdapterService,
    dataset: Dataset,
    from_model: str,
    to_model: str,
    k: int = 10,
    *,
    max_pairs: int | None = None,
    batch: int = 256,
    progress: Progress | None = None,
) -> dict:
    """nDCG@k (exact and served) of both models natively, of to-model queries adapted into the from-index
    and of from-model vectors translated into the to-index, with the adapter fitted as the gateway fits
    it: a scratch collection migrating from -> to, its corpus dual-written, `AdapterService.fit`."""
    progress = progress or (lambda _label, _done, _total: None)
    judged = [(qid, text) for qid, text in dataset.queries if dataset.qrels.get(qid)]
    name = f"eval_{uuid.uuid4().hex[:12]}"
    actor = Actor(address=None, replica="evaluate")
    models = {"from": from_model, "to": to_model}
    await collections.create(name, from_model)
    try:
        await migrations.start(name, to_model, actor)  # an empty collection: every write goes to both models
        embed_s = await _load_corpus(collections, name, dataset, f"{from_model} + {to_model}", batch, progress)
        await with_connection(pool, lambda conn: collections_sql.build_index(conn, name, to_model))
        fit = await adapters.fit(name, max_pairs, actor)
        adapter = await collections.adapters.get(await collections.state(name))
        assert adapter is not None
        maps = {"adapt": adapter.adapt, "translate": adapter.translate}
        rankings: dict[str, tuple[dict, dict]] = {run[0]: ({}, {}) for run in ADAPTER_RUNS}
        for i, (qid, text) in enumerate(judged):
            vectors = {
                side: (await collections.embeddings.embed(m, [text], "query")).vectors[0] for side, m in models.items()
            }
            for run, index, query, bridge in ADAPTER_RUNS:
                vector = maps[bridge].apply(vectors[query]) if bridge else vectors[query]
                served, exact = rankings[run]
                served[qid] = await _ranking(pool, name, models[index], vector, k, exact=False)
                exact[qid] = await _ranking(pool, name, models[index], vector, k, exact=True)
            progress("querying", i + 1, len(judged))
    finally:
        await _drop(pool, collections, name)
    runs = [
        {
            "run": run,
            "index_model": models[index],
            "query_model": models[query],
            **_figures(dataset, judged, *rankings[run], k),
        }
        for run, index, query, _ in ADAPTER_RUNS
    ]
    return {
        "documents": len(dataset.corpus),
        "queries": len(judged),
        "k": k,
        "from_model": from_model,
        "to_model": to_model,
        "embed_s": round(embed_s, 2),
        "adapter": fit,
        "runs": runs,
        "goals": adapter_goals({r["run"]: r["exact"][f"ndcg@{k}"] for r in runs}),
    }


def adapter_goals(ndcg: dict[str, float]) -> dict:
    """The issue's goals on exact nDCG: while the bridge serves, search is never worse than before the
    migration and close to the new model; old vectors against the new index are no worse than before."""
    base, new = ndcg["from native"], ndcg["to native"]
    return {
        "adapted / from native": round(ndcg["adapted"] / base, 3) if base else None,
        "adapted / to native": round(ndcg["adapted"] / new, 3) if new else None,
        "translated / from native": round(ndcg["translated"] / base, 3) if base else None,
        "adapted >= from native": ndcg["adapted"] >= base,
        "adapted >= 0.8 x to native": ndcg["adapted"] >= 0.8 * new,
        "translated >= from native": ndcg["translated"] >= base,
    }
