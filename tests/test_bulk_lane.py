"""Bulk work (backfill, verification) runs on low-priority lanes of its own, beside the
interactive scheduler: a hand-written fake encoder records where each call ran."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gateway.encoders.catalog import CATALOG
from gateway.encoders.local import BULK_NICE
from gateway.encoders.onnx import Encoded
from gateway.services.embedding import EmbeddingService
from tests.helpers import L3


class Recorder:
    """Encodes a text as [len, 1]; remembers each call's thread, its nice value and its size."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.gate = gate

    def encode(self, texts: list[str]) -> Encoded:
        if self.gate is not None and texts[0].startswith("bulk"):
            self.gate.wait(30)
        tid = threading.get_native_id()
        self.calls.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid), len(texts)))
        vectors = np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
        return Encoded(vectors, (False,) * len(texts), (1,) * len(texts))


def service(recorder: Recorder) -> EmbeddingService:
    return EmbeddingService({L3: CATALOG[L3]}, Path("/nonexistent"), loader=lambda spec, cache, threads: recorder)


@pytest.mark.skipif(sys.platform != "linux", reason="thread nice values are a Linux feature")
async def test_bulk_encodes_run_on_their_own_threads_at_a_lower_priority():
    recorder = Recorder()
    embeddings = service(recorder)
    try:
        await embeddings.embed(L3, ["a query"], "query")
        await embeddings.embed(L3, [f"doc {i}" for i in range(20)], "document", bulk=True)
    finally:
        await embeddings.close()
    (query_thread, query_nice, _), (bulk_thread, bulk_nice, bulk_size) = recorder.calls
    assert query_thread.startswith("encode") and bulk_thread.startswith("bulk-encode")
    assert bulk_nice == min(19, query_nice + BULK_NICE) and bulk_size == 20


async def test_a_query_is_answered_while_a_bulk_encode_is_still_running():
    gate = threading.Event()
    recorder = Recorder(gate)
    embeddings = service(recorder)
    try:
        bulk = asyncio.ensure_future(embeddings.embed(L3, ["bulk text"] * 50, "document", bulk=True))
        query = await embeddings.embed(L3, ["a query"], "query")  # would hang if it queued behind bulk
        assert query.vectors.shape == (1, 2) and not bulk.done()
        gate.set()
        assert len((await bulk).truncated) == 50
    finally:
        gate.set()
        await embeddings.close()


async def test_a_large_bulk_encode_is_cut_into_one_piece_per_lane_and_joined_in_order():
    recorder = Recorder()
    embeddings = service(recorder)  # 2 bulk lanes; L3's batch is 256 texts
    texts = ["x" * (i % 7 + 1) for i in range(600)]
    try:
        encoded = await embeddings.embed(L3, texts, "document", bulk=True)
        small = await embeddings.embed(L3, texts[:300], "document", bulk=True)  # under 2 batches: whole
    finally:
        await embeddings.close()
    assert sorted(size for _, _, size in recorder.calls) == [300, 300, 300]
    assert all(thread.startswith("bulk-encode") for thread, _, _ in recorder.calls)
    assert encoded.vectors[:, 0].tolist() == [len(t) for t in texts] and len(encoded.truncated) == 600
    assert len(small.tokens) == 300
