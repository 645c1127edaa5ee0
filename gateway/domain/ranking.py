"""Comparing two ranked lists of ids, and judging a ranking against relevance labels.

Pure functions over plain sequences: the shadow comparison (overlap@k, rank-biased overlap,
Kendall tau, top-1 agreement, score shift) and the offline IR metrics (nDCG, recall, MRR).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def overlap_at_k(a: Sequence[str], b: Sequence[str], k: int) -> float:
    """Jaccard similarity of the two top-k sets; 1.0 when both are empty."""
    sa, sb = set(a[:k]), set(b[:k])
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def rbo(a: Sequence[str], b: Sequence[str], p: float = 0.9) -> float:
    """Rank-biased overlap, extrapolated (Webber, Moffat & Zobel 2010, eq. 32).

    Both lists are cut to the shorter one's depth k. Identical lists give 1, disjoint 0.
    """
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    k = min(len(a), len(b))
    if k == 0:
        return 1.0 if len(a) == len(b) else 0.0
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    overlap = 0
    total = 0.0
    for depth in range(1, k + 1):
        x, y = a[depth - 1], b[depth - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += overlap / depth * p**depth
    value = overlap / k * p**k + (1 - p) / p * total
    return min(1.0, max(0.0, value))


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Kendall's tau-a between the orders two lists give their shared ids; None with < 2 shared."""
    rank_b = {doc: i for i, doc in enumerate(b)}
    shared = [doc for doc in a if doc in rank_b]
    n = len(shared)
    if n < 2:
        return None
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            # shared is in a's order, so the pair is concordant when b agrees
            if rank_b[shared[i]] < rank_b[shared[j]]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (n * (n - 1) / 2)


def top1_agreement(a: Sequence[str], b: Sequence[str]) -> bool:
    return bool(a) and bool(b) and a[0] == b[0]


def score_shift(read_scores: Sequence[float], shadow_scores: Sequence[float]) -> float | None:
    """Mean top-k similarity under the shadow model minus under the read model (None if either is empty)."""
    if not read_scores or not shadow_scores:
        return None
    return sum(shadow_scores) / len(shadow_scores) - sum(read_scores) / len(read_scores)


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """Binary-relevance nDCG@k."""
    dcg = sum(1.0 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
        if doc in relevant:
            return 1.0 / (i + 1)
    return 0.0
