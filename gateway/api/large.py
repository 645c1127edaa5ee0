"""A bound on large query answers held in memory at once.

An answer with k = 1,000 hits and their texts is tens of megabytes as Python objects and
again as JSON; eight at once raised a gateway's RSS by ~280 MB and the allocator kept most
of it. Queries with k above `LARGE_K` therefore take a slot (at most `server.max_large_responses`
at a time; the rest wait their turn within the request deadline) and their body is written
in pieces, so only one copy of the hits is encoded at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

LARGE_K = 100


class LargeResponses:
    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self.limit = limit
        self.in_flight = 0
        self.high_water = 0  # the most large answers ever built at the same time
        self.waited = 0  # large queries that had to wait for a slot

    @contextlib.asynccontextmanager
    async def slot(self, k: int) -> AsyncIterator[None]:
        """Hold a slot while a query with `k` hits is answered (no-op for small k)."""
        if k <= LARGE_K:
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
