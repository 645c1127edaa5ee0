"""The interactive encode scheduler of one model: fair pieces, and nothing computed for nobody.

One inference call runs at a time per model, on a worker thread. Every request (a query, a
document write, /v1/embeddings) is cut into pieces of at most the model's max batch texts:

- Requests of one piece go first and share calls; requests of several pieces take turns piece
  by piece (round robin), and also get one call after every `fair_share` calls that passed
  them over. So a one-text query waits for at most the piece running now, never for a
  1,000-text request. A request that finds the model idle runs at once.
- A piece whose caller has gone (client disconnected, request deadline passed: the awaiting
  task was cancelled, and with it the piece's future) is dropped, not computed.
- At most `max_queued_texts` interactive texts wait at a time; a request that would exceed
  it is refused at once with `EncoderBusy` (503 + Retry-After) instead of queueing work that
  would time out anyway.

With batching off, every request runs its own call on the thread pool, competing for the cores.
Bulk work (the backfill) does not come here: it runs on low-priority lanes of its own
(see services/embedding.py), so it can never delay a query by more than the OS scheduler allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from gateway.domain.batching import plan_calls
from gateway.domain.errors import EncoderBusy
from gateway.encoders.base import Encoded

EncodeFn = Callable[[list[str]], Encoded]


@dataclass(eq=False)
class Piece:
    texts: list[str]
    future: asyncio.Future
    cost: int = 1  # estimated tokens of its longest text (what each text is padded to)


@dataclass(eq=False)
class Job:
    """One interactive request's pieces still to run."""

    pieces: deque[Piece] = field(default_factory=deque)


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
        max_queued_texts: int = 4096,
        fair_share: int = 4,
        max_batch_tokens: int | None = None,
        cost: Callable[[str], int] | None = None,
    ) -> None:
        self._encode = encode
        self._executor = executor
        self._max_batch = max_batch
        self._window_s = window_s
        self._enabled = enabled
        self._on_batch = on_batch or (lambda _n: None)
        self._max_queued = max_queued_texts
        self._fair_share = fair_share
        self._max_batch_tokens = max_batch_tokens
        self._cost = cost or (lambda _text: 1)
        self._short: deque[Piece] = deque()  # interactive requests of one piece
        self._long: deque[Job] = deque()  # interactive requests of several pieces, round robin
        self._queued_texts = 0  # interactive texts waiting
        self._long_passed = 0  # calls that passed over a waiting long request
        self._work = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.skipped_pieces = 0  # pieces dropped because nobody waited for them any more

    async def encode(self, texts: list[str]) -> Encoded:
        """Embed `texts`; waits for their pieces. Raises what the encoder raised, or EncoderBusy."""
        loop = asyncio.get_running_loop()
        if not self._enabled:
            self._on_batch(len(texts))
            return await loop.run_in_executor(self._executor, self._encode, texts)
        if not texts:
            return Encoded(np.zeros((0, 0), dtype=np.float32), (), ())
        if self._queued_texts + len(texts) > self._max_queued and self._queued_texts > 0:
            raise EncoderBusy(
                f"the encoder has {self._queued_texts} texts waiting (limit {self._max_queued}); retry shortly "
                "or send smaller batches"
            )
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")
        # pieces of similar length pad little: group by (estimated) tokens, and put the results back in order
        costs = [self._cost(t) for t in texts]
        calls = plan_calls(costs, self._max_batch, self._max_batch_tokens)
        order = [i for call in calls for i in call]
        pieces = [Piece([texts[i] for i in call], loop.create_future(), max(costs[i] for i in call)) for call in calls]
        if len(pieces) == 1:
            self._short.append(pieces[0])
            self._queued_texts += len(texts)
        else:
            self._long.append(Job(deque(pieces)))
            self._queued_texts += len(texts)
        self._work.set()
        parts = await asyncio.gather(*(p.future for p in pieces))
        merged = concat(parts)
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        return Encoded(
            merged.vectors[back],
            tuple(merged.truncated[i] for i in back),
            tuple(merged.tokens[i] for i in back) if merged.tokens else (),
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for piece in [*self._short, *(p for job in self._long for p in job.pieces)]:
            _settle(piece.future, RuntimeError("encoder is shutting down"))
        self._short.clear()
        self._long.clear()
        self._queued_texts = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            batch = self._next_batch()
            if not batch:
                self._work.clear()
                continue
            if self._window_s > 0 and _size(batch) < self._max_batch:
                await asyncio.sleep(self._window_s)
                batch += self._take_short(batch)
            await self._run_batch(loop, batch)

    def _next_batch(self) -> list[Piece]:
        """The next call's pieces: short requests first (one piece each; several share a call),
        then pieces of long requests in turn; a long request also gets a piece after every
        `fair_share` calls that passed it over, so it never waits forever."""
        self._drop_abandoned()
        if self._long and (not self._short or self._long_passed >= self._fair_share):
            self._long_passed = 0
            return self._take_long()
        if self._short:
            self._long_passed += bool(self._long)
            return self._take_short([])
        return []

    def _take_short(self, batch: list[Piece]) -> list[Piece]:
        """Waiting one-piece requests, oldest first, added to `batch` while the call stays within
        the max batch and the token budget (at least one)."""
        taken: list[Piece] = []
        while self._short and (not (batch or taken) or self._fits([*batch, *taken, self._short[0]])):
            piece = self._short.popleft()
            self._queued_texts -= len(piece.texts)
            taken.append(piece)
        return taken

    def _fits(self, pieces: list[Piece]) -> bool:
        texts = _size(pieces)
        if texts > self._max_batch:
            return False
        return self._max_batch_tokens is None or texts * max(p.cost for p in pieces) <= self._max_batch_tokens

    def _take_long(self) -> list[Piece]:
        """The next piece of the long request whose turn it is (round robin)."""
        job = self._long.popleft()
        piece = job.pieces.popleft()
        self._queued_texts -= len(piece.texts)
        if job.pieces:
            self._long.append(job)
        return [piece]

    def _drop_abandoned(self) -> None:
        """Forget pieces whose caller has gone (their future was cancelled with the request)."""
        gone = [p for p in self._short if p.future.done()]
        if gone:
            self._skip(gone)
            self._short = deque(p for p in self._short if not p.future.done())
        for job in list(self._long):
            gone = [p for p in job.pieces if p.future.done()]
            if gone:
                self._skip(gone)
                job.pieces = deque(p for p in job.pieces if not p.future.done())
            if not job.pieces:
                self._long.remove(job)

    def _skip(self, pieces: list[Piece]) -> None:
        self.skipped_pieces += len(pieces)
        self._queued_texts -= sum(len(p.texts) for p in pieces)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Piece]) -> None:
        texts = [text for piece in batch for text in piece.texts]
        try:
            self._on_batch(len(texts))
            result = await loop.run_in_executor(self._executor, self._encode, texts)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc)
            else:  # one bad text must not fail its batch-mates: run each piece on its own
                for piece in batch:
                    await self._run_alone(loop, piece)
            return
        except BaseException:  # cancelled while encoding: nobody may wait forever
            for piece in batch:
                _settle(piece.future, RuntimeError("encoder is shutting down"))
            raise
        start = 0
        for piece in batch:
            end = start + len(piece.texts)
            if not piece.future.done():
                piece.future.set_result(
                    Encoded(
                        np.ascontiguousarray(result.vectors[start:end]),
                        result.truncated[start:end],
                        result.tokens[start:end],
                    )
                )
            start = end

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, piece: Piece) -> None:
        if piece.future.done():
            return
        try:
            result = await loop.run_in_executor(self._executor, self._encode, piece.texts)
        except Exception as exc:
            _settle(piece.future, exc)
            return
        if not piece.future.done():
            piece.future.set_result(result)


def _size(batch: list[Piece]) -> int:
    return sum(len(p.texts) for p in batch)


def _settle(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
