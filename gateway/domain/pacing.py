"""Rate pacing for requests/minute and tokens/minute limits: a GCRA scheduler, pure logic.

`reserve(now, cost)` books `cost` units (1 request, or a request's tokens) and returns how
long the caller must wait before sending. Up to `burst_s` seconds of unused rate may be
spent at once, so a limit is used fully without bursts that the provider would refuse.
A limit of 0 means unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Pacer:
    per_minute: float
    burst_s: float = 1.0
    _tat: float = 0.0  # theoretical arrival time of the next unit

    def reserve(self, now: float, cost: float = 1.0) -> float:
        if self.per_minute <= 0:
            return 0.0
        interval = cost * 60.0 / self.per_minute
        start = max(now, self._tat - self.burst_s)
        self._tat = max(self._tat, start) + interval
        return start - now

    def refund(self, cost: float) -> None:
        """Give back units booked for a request that was never sent."""
        if self.per_minute > 0:
            self._tat -= cost * 60.0 / self.per_minute
