"""Micro-batching with a hand-written fake encoder (pure logic; no model needed)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.encoders.batcher import MicroBatcher
from gateway.encoders.onnx import Encoded


class FakeEncoder:
    """Encodes a text as [len(text), 1.0]; records the size of every call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.lock = threading.Lock()

    def encode(self, texts: list[str]) -> Encoded:
        with self.lock:
            self.calls.append(len(texts))
        if self.fail:
            raise RuntimeError("boom")
        vectors = np.array([[len(t), 1.0] for t in texts], dtype=np.float32).reshape(len(texts), 2)
        return Encoded(vectors, tuple(len(t) > 10 for t in texts))


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


async def test_concurrent_requests_are_encoded_together_and_each_gets_its_own_vectors(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=64, window_s=0.05)
    texts = [["a" * i] for i in range(1, 17)]
    results = await asyncio.gather(*(batcher.encode(t) for t in texts))
    await batcher.close()
    assert [int(r.vectors[0, 0]) for r in results] == list(range(1, 17))
    assert sum(fake.calls) == 16 and len(fake.calls) < 16


async def test_a_batch_never_grows_past_the_models_max_batch_from_separate_requests(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=4, window_s=0.05)
    await asyncio.gather(*(batcher.encode(["x"]) for _ in range(10)))
    await batcher.close()
    assert max(fake.calls) <= 4 and sum(fake.calls) == 10


async def test_an_encoder_failure_reaches_every_caller_of_that_batch(executor):
    batcher = MicroBatcher(FakeEncoder(fail=True).encode, executor, max_batch=8, window_s=0.02)
    results = await asyncio.gather(*(batcher.encode(["x"]) for _ in range(3)), return_exceptions=True)
    await batcher.close()
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_with_batching_off_every_request_is_its_own_call(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=64, enabled=False)
    results = await asyncio.gather(*(batcher.encode(["abc", "defghijklmnop"]) for _ in range(5)))
    assert fake.calls == [2] * 5
    assert results[0].truncated == (False, True)


async def test_an_idle_model_encodes_at_once_and_requests_queued_meanwhile_share_the_next_call(executor):
    release = threading.Event()

    class SlowFirstCall(FakeEncoder):
        def encode(self, texts):
            if not self.calls:
                release.wait(5)
            return super().encode(texts)

    fake = SlowFirstCall()
    batcher = MicroBatcher(fake.encode, executor, max_batch=64, window_s=0.0)
    first = asyncio.ensure_future(batcher.encode(["first"]))
    await asyncio.sleep(0.05)  # the first call is running, with no window to wait out
    queued = [asyncio.ensure_future(batcher.encode([f"q{i}"])) for i in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, *queued)
    await batcher.close()
    assert fake.calls == [1, 5]


async def test_interactive_requests_jump_ahead_of_queued_bulk_pieces(executor):
    release = threading.Event()
    order: list[str] = []

    class Recording(FakeEncoder):
        def encode(self, texts):
            if not order:
                release.wait(5)
            order.append(texts[0][:4])
            return super().encode(texts)

    batcher = MicroBatcher(Recording().encode, executor, max_batch=2)
    bulk = asyncio.ensure_future(batcher.encode([f"bulk{i}" for i in range(6)], bulk=True))
    await asyncio.sleep(0.05)  # the first bulk piece is running; two more are queued
    urgent = asyncio.ensure_future(batcher.encode(["user query"]))
    await asyncio.sleep(0.05)
    release.set()
    result, _ = await asyncio.gather(bulk, urgent)
    await batcher.close()
    assert order == ["bulk", "user", "bulk", "bulk"]
    assert [int(v) for v in result.vectors[:, 0]] == [5] * 6 and len(result.truncated) == 6


async def test_bulk_texts_are_grouped_by_length_and_come_back_in_their_order(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=2)
    texts = ["a" * n for n in (9, 1, 7, 3, 5, 2)]
    result = await batcher.encode(texts, bulk=True)
    await batcher.close()
    assert [int(v) for v in result.vectors[:, 0]] == [9, 1, 7, 3, 5, 2]
    assert result.truncated == (False,) * 6
    assert fake.calls == [2, 2, 2]
