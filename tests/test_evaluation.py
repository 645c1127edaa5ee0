"""Offline evaluation on a small, real subset of Vaswani, through the gateway's own tables."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from gateway.api.keys import COLLECTIONS, POOL
from gateway.datasets import Dataset, vaswani
from gateway.domain.ranking import ndcg_at_k
from gateway.services.evaluation import evaluate
from tests.helpers import L3, L6, temp_folders


def subset(queries: int = 15, distractors: int = 150) -> Dataset:
    full = vaswani()
    chosen = [(q, t) for q, t in full.queries if full.qrels.get(q)][:queries]
    relevant = set().union(*(full.qrels[q] for q, _ in chosen))
    rng = random.Random(7)
    others = [doc for doc in full.corpus if doc[0] not in relevant]
    corpus = [doc for doc in full.corpus if doc[0] in relevant] + rng.sample(others, distractors)
    return Dataset(corpus, chosen, {q: full.qrels[q] for q, _ in chosen})


async def test_a_trained_model_ranks_far_above_random_and_every_metric_is_sane(client):
    data = subset()
    report = await evaluate(client.app[POOL], client.app[COLLECTIONS], data, [L3, L6], k=10)
    assert report["queries"] == 15 and report["documents"] == len(data.corpus)
    ids = [doc_id for doc_id, _ in data.corpus]
    rng = random.Random(1)
    random_ndcg = sum(ndcg_at_k(rng.sample(ids, 10), data.qrels[q]) for q, _ in data.queries) / len(data.queries)
    for row in report["models"]:
        assert 0.0 < row["ndcg@10"] <= 1.0 and 0.0 < row["recall@10"] <= 1.0 and 0.0 < row["mrr@10"] <= 1.0
        assert row["ndcg@10"] > 3 * random_ndcg, (row, random_ndcg)
        # exact search (the model's own quality) beside the served one, and the index's recall against it
        assert row["exact"]["ndcg@10"] > 3 * random_ndcg and 0.5 < row["index_recall@10"] <= 1.0, row
    [comparison] = report["comparisons"]
    assert comparison["a"] == L3 and comparison["b"] == L6 and 0.0 < comparison["overlap@10"] < 1.0
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM driftgate.collections") == 0  # scratch ones are gone


def test_the_evaluate_command_writes_a_table_json_and_a_chart(tmp_path):
    before = temp_folders("driftgate-eval-")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "evaluate",
            "--dataset",
            "vaswani",
            "--models",
            L3,
            "--limit",
            "200",
            "--json",
            str(tmp_path / "e.json"),
            "--plot",
            str(tmp_path / "e.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ndcg@10" in result.stdout
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["models"][0]["model"] == L3 and "ndcg@10" in report["models"][0]
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert temp_folders("driftgate-eval-") <= before, "its throwaway database goes with it"


def test_evaluate_on_a_directory_that_is_not_a_beir_dataset_fails_with_a_reason(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "evaluate", "--dataset", str(tmp_path), "--models", L3],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "corpus.jsonl is missing" in result.stderr
