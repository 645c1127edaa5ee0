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
from gateway.services.collections import CollectionService, NewDocument
from gateway.store import collections as collections_sql

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


async def _run_model(pool, collections, dataset, judged, model, k, batch, progress) -> ModelResult:
    name = f"eval_{uuid.uuid4().hex[:12]}"
    await collections.create(name, model)
    try:
        started = time.perf_counter()
        for start in range(0, len(dataset.corpus), batch):
            chunk = dataset.corpus[start : start + batch]
            await collections.upsert(name, [NewDocument(doc_id, text, {}) for doc_id, text in chunk])
            progress(f"embedding with {model}", min(start + batch, len(dataset.corpus)), len(dataset.corpus))
        embed_s = time.perf_counter() - started
        rankings = {}
        for i, (qid, text) in enumerate(judged):
            result = await collections.query_text(name, text, k, None)
            rankings[qid] = [hit.id for hit in result.hits]
            progress(f"querying with {model}", i + 1, len(judged))
    finally:
        async with pool.acquire() as conn, conn.transaction():
            await collections_sql.drop_collection(conn, name)
        await collections.reload(name)
    n = len(judged)
    metrics = {
        f"ndcg@{k}": round(sum(ndcg_at_k(rankings[q], dataset.qrels[q], k) for q, _ in judged) / n, 4),
        f"recall@{k}": round(sum(recall_at_k(rankings[q], dataset.qrels[q], k) for q, _ in judged) / n, 4),
        f"mrr@{k}": round(sum(mrr_at_k(rankings[q], dataset.qrels[q], k) for q, _ in judged) / n, 4),
    }
    return ModelResult(model, rankings, metrics, embed_s)
