"""Micro-batching of concurrent encode requests for one model.

One inference call runs at a time per model, on a worker thread. A request that finds the
model idle is encoded at once (no added latency); requests that arrive while a call is
running queue up and all go together in the next call, up to the model's max batch. An
optional window (`window_s`) makes a batch wait a little longer for company. With batching
off, every request runs its own call on the thread pool, competing for the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from gateway.encoders.onnx import Encoded

EncodeFn = Callable[[list[str]], Encoded]


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
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def encode(self, texts: list[str]) -> Encoded:
        """Embed `texts`; waits for the batch they join. Raises what the encoder raised."""
        loop = asyncio.get_running_loop()
        if not self._enabled:
            self._on_batch(len(texts))
            return await loop.run_in_executor(self._executor, self._encode, texts)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")
        future: asyncio.Future = loop.create_future()
        await self._queue.put((texts, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _texts, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("encoder is shutting down"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self._window_s
            while size < self._max_batch:
                if not self._queue.empty():  # whatever queued during the last call joins now
                    item = self._queue.get_nowait()
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                size += len(item[0])
            await self._run_batch(loop, batch)

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
