"""A bound on large query answers held in memory at once.

An answer with k = 1,000 hits and their texts is tens of megabytes as Python objects and
again as JSON; eight at once raised a gateway's RSS by ~280 MB and the allocator kept most
of it. So did 96 answers of k = 100 with 100 kB texts (10 MB each). A query whose answer
*can* be large therefore takes a slot before it runs (at most `server.max_large_responses` at
a time; the rest wait their turn within the request deadline) and its body is written in
pieces, so only one copy of the hits is encoded at a time. "Can be large": k above
`LARGE_K`, or k x (limits.max_text_chars + limits.max_metadata_bytes) above
`server.large_response_bytes` (with the defaults, k of 51 or more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

LARGE_K = 100


class LargeResponses:
    def __init__(self, limit: int, *, max_bytes: int | None = None, hit_bytes: int = 0) -> None:
        self._slots = asyncio.Semaphore(limit)
        self.limit = limit
        self._max_bytes = max_bytes
        self._hit_bytes = hit_bytes  # the most one hit can weigh: its text and its metadata
        self.in_flight = 0
        self.high_water = 0  # the most large answers ever built at the same time
        self.waited = 0  # large queries that had to wait for a slot

    def is_large(self, k: int) -> bool:
        """Whether an answer of `k` hits can be large enough to need a slot (and be streamed)."""
        return k > LARGE_K or (self._max_bytes is not None and k * self._hit_bytes > self._max_bytes)

    @contextlib.asynccontextmanager
    async def slot(self, k: int) -> AsyncIterator[None]:
        """Hold a slot while a query with `k` hits is answered (no-op when it cannot be large)."""
        if not self.is_large(k):
            yield
            return
        if self._slots.locked():
            self.waited += 1
        async with self._slots:
            self.in_flight += 1
            self.high_water = max(self.high_water, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1
