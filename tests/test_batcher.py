"""Micro-batching with a hand-written fake encoder (pure logic; no model needed)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.domain.errors import EncoderBusy
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
    fake = Gated()
    batcher = MicroBatcher(fake.encode, executor, max_batch=64, window_s=0.0)
    first = await submitted(batcher, ["first"])
    await until(fake.entered.is_set)  # the first call is running, with no window to wait out
    queued = [await submitted(batcher, [f"q{i}"]) for i in range(5)]
    fake.release.set()
    await asyncio.gather(first, *queued)
    await batcher.close()
    assert fake.calls == [1, 5]


async def test_a_long_requests_texts_are_grouped_by_length_and_come_back_in_their_order(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=2)
    texts = ["a" * n for n in (9, 1, 7, 3, 5, 2)]
    result = await batcher.encode(texts)
    await batcher.close()
    assert [int(v) for v in result.vectors[:, 0]] == [9, 1, 7, 3, 5, 2]
    assert result.truncated == (False,) * 6
    assert fake.calls == [2, 2, 2]


class Gated(FakeEncoder):
    """Records each call's first text; the first call blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.order: list[str] = []

    def encode(self, texts):
        if not self.order:
            self.entered.set()
            self.release.wait(30)
        self.order.append(texts[0])
        return super().encode(texts)


async def submitted(batcher: MicroBatcher, texts: list[str]) -> asyncio.Task:
    """`batcher.encode(texts)` as a task, returned once the request is queued: `encode` queues it
    before its first await, and one turn of the loop runs the new task up to there."""
    task = asyncio.ensure_future(batcher.encode(texts))
    await asyncio.sleep(0)  # a turn of the loop, not a wait: the task was scheduled before this coroutine resumes
    assert not task.done(), task  # queued and waiting for its pieces (a refusal would have ended it)
    return task


async def until(predicate) -> None:
    """Yield to the loop until `predicate()` holds (the fake encoder makes progress instantly)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the batcher made no progress")


async def test_a_one_text_query_waits_for_at_most_the_piece_running_not_for_a_large_request(executor):
    fake = Gated()
    batcher = MicroBatcher(fake.encode, executor, max_batch=8)
    large = [asyncio.ensure_future(batcher.encode([f"big{j}-{i:02d}" for i in range(80)])) for j in range(3)]
    await until(fake.entered.is_set)  # the first piece of the first large request is running
    query = await submitted(batcher, ["query"])
    fake.release.set()
    await asyncio.gather(query, *large)
    await batcher.close()
    assert fake.order.index("query") == 1  # right after the piece that was already running
    assert sum(fake.calls) == 241


async def test_pieces_of_large_requests_take_turns(executor):
    fake = Gated()
    batcher = MicroBatcher(fake.encode, executor, max_batch=4)
    first = asyncio.ensure_future(batcher.encode([f"a{i}" for i in range(12)]))
    await until(fake.entered.is_set)
    second = await submitted(batcher, [f"b{i}" for i in range(12)])
    fake.release.set()
    await asyncio.gather(first, second)
    await batcher.close()
    # a's first piece was running (and a queued its next turn) when b arrived; then they alternate
    assert [text[0] for text in fake.order] == ["a", "a", "b", "a", "b", "b"]


async def test_work_of_a_caller_that_has_gone_is_skipped_not_computed(executor):
    fake = Gated()
    batcher = MicroBatcher(fake.encode, executor, max_batch=8)
    abandoned = [asyncio.ensure_future(batcher.encode([f"x{j}-{i}" for i in range(300)])) for j in range(4)]
    await until(fake.entered.is_set)
    for task in abandoned:
        task.cancel()  # the client disconnected, or the request deadline passed
    query = await submitted(batcher, ["query"])
    fake.release.set()
    await query
    await asyncio.gather(*abandoned, return_exceptions=True)
    await batcher.close()
    assert fake.order == [fake.order[0], "query"]  # only the piece already running, then the query
    assert batcher.skipped_pieces == 4 * 38 - 1


async def test_a_steady_stream_of_small_requests_slows_a_long_one_but_never_stops_it(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=4, fair_share=3)
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        while not stop.is_set():
            await batcher.encode([f"w{n}"])

    writers = [asyncio.ensure_future(writer(n)) for n in range(6)]
    long = await batcher.encode([f"long{i}" for i in range(40)])
    stop.set()
    await asyncio.gather(*writers)
    await batcher.close()
    assert len(long.truncated) == 40


async def test_too_much_queued_interactive_work_is_refused_at_once_and_nothing_is_lost(executor):
    fake = Gated()
    batcher = MicroBatcher(fake.encode, executor, max_batch=8, max_queued_texts=100)
    first = asyncio.ensure_future(batcher.encode([f"a{i}" for i in range(90)]))
    await until(fake.entered.is_set)
    with pytest.raises(EncoderBusy) as refused:
        await batcher.encode([f"b{i}" for i in range(50)])
    assert refused.value.status == 503 and refused.value.code == "encoder_busy"
    small = asyncio.ensure_future(batcher.encode(["fits"]))
    fake.release.set()
    result, fitted = await asyncio.gather(first, small)
    await batcher.close()
    assert len(result.truncated) == 90 and len(fitted.truncated) == 1


async def test_with_a_token_budget_short_texts_share_calls_and_long_ones_go_a_few_at_a_time(executor):
    fake = FakeEncoder()
    batcher = MicroBatcher(fake.encode, executor, max_batch=256, max_batch_tokens=2048, cost=len)
    await batcher.encode(["abcdef"] * 1000)  # cost 6: 256 per call
    await batcher.encode(["x" * 256] * 20)  # cost 256: 8 per call
    await batcher.close()
    assert fake.calls == [256, 256, 256, 232, 8, 8, 4]
