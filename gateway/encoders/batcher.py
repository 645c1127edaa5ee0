"""Micro-batching of concurrent encode requests for one model, with interactive work first.

One inference call runs at a time per model, on a worker thread. A request that finds the
model idle is encoded at once (no added latency); requests that arrive while a call is
running queue up and all go together in the next call, up to the model's max batch. An
optional window (`window_s`) makes a batch wait a little longer for company.

Bulk work (the backfill, verification) is cut into pieces of at most max batch texts and
queued behind interactive requests (queries, document writes), so an application waits for
at most one bulk piece, never for a whole backfill chunk. With batching off, every request
runs its own call on the thread pool, competing for the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from gateway.encoders.onnx import Encoded

EncodeFn = Callable[[list[str]], Encoded]
Item = tuple[list[str], asyncio.Future]


def concat(parts: list[Encoded]) -> Encoded:
    return Encoded(
        np.vstack([p.vectors for p in parts]),
        tuple(t for p in parts for t in p.truncated),
        tuple(t for p in parts for t in p.tokens),
    )


class MicroBatcher:
    def __init__(
        self,
        encode: EncodeFn,
        executor: Executor,
        *,
        max_batch: int,
        window_s: float = 0.0,
        enabled: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._encode = encode
        self._executor = executor
        self._max_batch = max_batch
        self._window_s = window_s
        self._enabled = enabled
        self._on_batch = on_batch or (lambda _n: None)
        self._urgent: deque[Item] = deque()
        self._bulk: deque[Item] = deque()
        self._work = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def encode(self, texts: list[str], *, bulk: bool = False) -> Encoded:
        """Embed `texts`; waits for the batch they join. Raises what the encoder raised."""
        loop = asyncio.get_running_loop()
        if not self._enabled:
            self._on_batch(len(texts))
            return await loop.run_in_executor(self._executor, self._encode, texts)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")
        if not bulk:
            future: asyncio.Future = loop.create_future()
            self._urgent.append((texts, future))
            self._work.set()
            return await future
        # pieces of similar length pad little: sort, split, and put the results back in order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        futures = []
        for start in range(0, len(order), self._max_batch):
            future = loop.create_future()
            self._bulk.append(([texts[i] for i in order[start : start + self._max_batch]], future))
            futures.append(future)
        self._work.set()
        parts = await asyncio.gather(*futures)
        if not parts:
            return Encoded(np.zeros((0, 0), dtype=np.float32), (), ())
        merged = concat(parts)
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        return Encoded(merged.vectors[back], tuple(merged.truncated[i] for i in back),
                       tuple(merged.tokens[i] for i in back) if merged.tokens else ())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for queue in (self._urgent, self._bulk):
            while queue:
                self._settle(queue.popleft()[1], RuntimeError("encoder is shutting down"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            if self._urgent:
                batch = self._take_urgent()
                if self._window_s > 0 and sum(len(t) for t, _ in batch) < self._max_batch:
                    await asyncio.sleep(self._window_s)
                    batch += self._take_urgent(sum(len(t) for t, _ in batch))
            elif self._bulk:
                batch = [self._bulk.popleft()]
            else:
                self._work.clear()
                continue
            await self._run_batch(loop, batch)

    def _take_urgent(self, size: int = 0) -> list[Item]:
        """Interactive requests queued so far, up to the max batch (at least one)."""
        batch: list[Item] = []
        while self._urgent and (not batch and size == 0 or size + len(self._urgent[0][0]) <= self._max_batch):
            item = self._urgent.popleft()
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, texts: list[str], future: asyncio.Future) -> None:
        try:
            result = await loop.run_in_executor(self._executor, self._encode, texts)
        except Exception as exc:
            self._settle(future, exc)
            return
        if not future.done():
            future.set_result(result)

    @staticmethod
    def _settle(future: asyncio.Future, exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        texts = [text for item_texts, _ in batch for text in item_texts]
        try:
            self._on_batch(len(texts))
            result = await loop.run_in_executor(self._executor, self._encode, texts)
        except Exception as exc:
            if len(batch) == 1:
                self._settle(batch[0][1], exc)
            else:  # one bad text must not fail its batch-mates: run each request on its own
                for item_texts, future in batch:
                    await self._run_alone(loop, item_texts, future)
            return
        except BaseException:  # cancelled while encoding: nobody may wait forever
            for _, future in batch:
                self._settle(future, RuntimeError("encoder is shutting down"))
            raise
        start = 0
        for item_texts, future in batch:
            end = start + len(item_texts)
            if not future.done():
                future.set_result(Encoded(
                    np.ascontiguousarray(result.vectors[start:end]), result.truncated[start:end],
                    result.tokens[start:end],
                ))
            start = end
