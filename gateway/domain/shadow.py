"""The shadow comparison as small frozen values (in the manner of github/scientist).

An `Observation` is what one side answered; a `Comparison` is the read model's answer against
the shadow's, with its metrics; `ShadowStats` aggregates a rolling window of comparisons. The
read model's answer is always what the caller got: nothing here feeds back into it.
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.domain.latency import percentile
from gateway.domain.ranking import kendall_tau, overlap_at_k, rbo, score_shift, top1_agreement


class Pairing(enum.StrEnum):
    """What a shadow query is compared with (the `pairing` metric label)."""

    AB = "ab"  # the shadow model's answer against the read model's: how much a cutover changes
    AA = "aa"  # the read model's index against its exact search: the noise floor of the index


@dataclass(frozen=True)
class Observation:
    model: str
    ids: tuple[str, ...]
    scores: tuple[float, ...]
    latency_ms: float


@dataclass(frozen=True)
class Comparison:
    pairing: Pairing
    read: Observation
    shadow: Observation
    k: int
    overlap: float
    rbo: float
    tau: float | None
    top1: bool
    score_shift: float | None


def compare(pairing: Pairing, read: Observation, shadow: Observation, k: int) -> Comparison:
    return Comparison(
        pairing=pairing,
        read=read,
        shadow=shadow,
        k=k,
        overlap=overlap_at_k(read.ids, shadow.ids, k),
        rbo=rbo(read.ids[:k], shadow.ids[:k]),
        tau=kendall_tau(read.ids[:k], shadow.ids[:k]),
        top1=top1_agreement(read.ids, shadow.ids),
        score_shift=score_shift(read.scores[:k], shadow.scores[:k]),
    )


def sampled(rate: float, request_id: str | None, draw: float) -> bool:
    """Whether to shadow a request: deterministic per request id (a replay samples the same
    queries), otherwise by the random `draw` in [0, 1)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    if request_id:
        bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64
        return bucket < rate
    return draw < rate


def _summary(values: Iterable[float]) -> dict | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return {
        "mean": round(sum(ordered) / len(ordered), 4),
        "p10": round(percentile(ordered, 0.10), 4),
        "p50": round(percentile(ordered, 0.50), 4),
        "p99": round(percentile(ordered, 0.99), 4),
    }


class ShadowStats:
    """A rolling window of comparisons of one pairing, summarised as mean/p10/p50."""

    def __init__(self, window: int = 1000) -> None:
        self._comparisons: deque[Comparison] = deque(maxlen=window)
        self.total = 0

    def add(self, comparison: Comparison) -> None:
        self._comparisons.append(comparison)
        self.total += 1

    def summary(self) -> dict:
        window = list(self._comparisons)
        taus = [c.tau for c in window if c.tau is not None]
        shifts = [c.score_shift for c in window if c.score_shift is not None]
        return {
            "samples": self.total,
            "window": len(window),
            "overlap_at_k": _summary(c.overlap for c in window),
            "rbo": _summary(c.rbo for c in window),
            "kendall_tau": _summary(taus),
            "top1_agreement": round(sum(c.top1 for c in window) / len(window), 4) if window else None,
            "score_shift": _summary(shifts),
            "latency_ms": {
                "read": _summary(c.read.latency_ms for c in window),
                "shadow": _summary(c.shadow.latency_ms for c in window),
            },
        }


def recommendation(ab: dict, aa: dict | None, *, min_samples: int = 200) -> str:
    """A plain-language reading of the numbers for the operator deciding on a cutover."""
    if not ab or not ab.get("samples"):
        return "no shadow samples yet: enable shadow reads (driftgate migrate shadow) and send traffic"
    overlap, rank = ab["overlap_at_k"]["mean"], ab["rbo"]["mean"]
    parts = [
        f"new model agrees {overlap:.0%} @k with the current one (RBO {rank:.2f}, "
        f"top-1 {ab['top1_agreement']:.0%}), {ab['samples']} samples"
    ]
    if aa and aa.get("samples"):
        parts.append(f"index recall (A/A noise floor) {aa['overlap_at_k']['mean']:.2f} over {aa['samples']} samples")
    if ab["score_shift"]:
        parts.append(f"mean similarity shifts by {ab['score_shift']['mean']:+.3f}: recheck absolute score thresholds")
    if ab["samples"] < min_samples:
        verdict = f"keep sampling: fewer than {min_samples} samples"
    elif overlap < 0.3:
        verdict = "the models rank very differently: check quality offline (driftgate evaluate) before cutting over"
    else:
        verdict = "rankings are broadly consistent: a cutover is reasonable if offline quality agrees"
    return "; ".join(parts) + ". " + verdict
