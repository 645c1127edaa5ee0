"""Shadow metrics over time for the console's charts: a bounded series per collection.

The shadow runner keeps rolling statistics (a window of recent comparisons); this samples
them every few seconds while a shadow has samples, so the collection page can draw overlap@k,
RBO and the latency ratio over time, with the A/A noise floor beside them. Per process, like
the runner's own statistics; Prometheus (see docker/grafana/) keeps the long history.
"""

from __future__ import annotations

import time
from collections import deque

POINTS = 720  # one hour at the default 5 s interval


def _mean(summary: dict, key: str) -> float | None:
    value = summary.get(key)
    return value.get("mean") if isinstance(value, dict) else None


def point(at: float, summary: dict) -> dict | None:
    """One chart point from a shadow summary (services/shadow.py), or None when it has no samples."""
    if not summary.get("samples"):
        return None
    latency = summary.get("latency_ms") or {}
    read, shadow = _mean(latency, "read"), _mean(latency, "shadow")
    floor = summary.get("noise_floor") or {}
    return {
        "t": round(at, 3),
        "samples": summary["samples"],
        "overlap": _mean(summary, "overlap_at_k"),
        "rbo": _mean(summary, "rbo"),
        "latency_ratio": round(shadow / read, 4) if read and shadow is not None else None,
        "floor_overlap": _mean(floor, "overlap_at_k") if floor.get("samples") else None,
        "floor_rbo": _mean(floor, "rbo") if floor.get("samples") else None,
    }


class ShadowHistory:
    def __init__(self, points: int = POINTS) -> None:
        self._series: dict[str, deque[dict]] = {}
        self._points = points

    def record(self, collection: str, summary: dict, at: float | None = None) -> None:
        """Add a point when the shadow has new samples since the last one."""
        new = point(time.time() if at is None else at, summary)
        if new is None:
            return
        series = self._series.setdefault(collection, deque(maxlen=self._points))
        if series and series[-1]["samples"] == new["samples"]:
            return
        series.append(new)

    def series(self, collection: str) -> list[dict]:
        return list(self._series.get(collection, ()))
