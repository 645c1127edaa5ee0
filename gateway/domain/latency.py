"""A rolling window of latencies and its percentiles (pure; the clock is passed in)."""

from __future__ import annotations

from collections import deque


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list; q in [0, 1]."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(0, min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[rank]


class LatencyWindow:
    def __init__(self, window_s: float = 10.0, max_samples: int = 10_000) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, now: float, seconds: float) -> None:
        self._samples.append((now, seconds))

    def p99_ms(self, now: float) -> float | None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        if len(self._samples) < 20:  # too few to call a p99
            return None
        return percentile(sorted(s for _, s in self._samples), 0.99) * 1000
