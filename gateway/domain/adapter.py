"""A learned map between two models' embedding spaces (Drift-Adapter, Vejendla, EMNLP 2025).

A migration's backfill produces (from-model, to-model) vector pairs for free. A map fitted on
a sample of them turns a to-model query into a from-model one, so the complete from-model
index keeps answering while the new index is built (and the old model may already be gone);
the map the other way translates old-model vectors into the new index after cutover.

Pure numpy, deterministic for a given sample: orthogonal Procrustes where the dimensions
match, a ridge-regularised affine map where they differ (or where asked). Validation is on a
held-out part of the sample: mean cosine of mapped vs true vectors, and retrieval agreement
(overlap of the top-k neighbours of the mapped vector with those of the true vector, among
the sample's target vectors, the pair itself left out). Cosine alone is the wrong gate:
Procrustes from all-MiniLM-L6-v2 into paraphrase-MiniLM-L3-v2 reaches only ~0.8 yet beats
L3's own search, while agreement separates a useful map from a mis-paired one (docs/adapter.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

DEFAULT_RIDGE = 0.1  # on unit vectors: the best of 0.1, 1 and 10 on all three Vaswani pairs (docs/adapter.md)
DEFAULT_HELD_OUT = 0.2
DEFAULT_K = 10
AGREEMENT_FLOOR = 0.25  # held-out agreement@10 below which a map may not serve (chosen in docs/adapter.md)


class MapKind(StrEnum):
    PROCRUSTES = "procrustes"  # an orthogonal rotation: same dimensions only
    RIDGE = "ridge"  # an affine map fitted by ridge regression: any dimensions


@dataclass(frozen=True, eq=False)
class LinearMap:
    """x -> normalise(x @ weights + bias): a to-space vector (unit length) for each from-space row."""

    kind: MapKind
    weights: np.ndarray  # (dim_in, dim_out) float32
    bias: np.ndarray  # (dim_out,) float32; zero for a rotation

    @property
    def dim_in(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.weights.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Map rows (or one vector) to unit-length float32 vectors of the other space."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.shape[-1] != self.dim_in:
            raise ValueError(f"the map takes {self.dim_in}-d vectors, got {x.shape[-1]}-d")
        if x.ndim == 1:  # one query, the served path: fewer numpy calls (~10 instead of ~14 us for 384-d)
            one = x @ self.weights
            one += self.bias
            one /= max(math.sqrt(float(one.dot(one))), 1e-12)
            return one
        mapped = x @ self.weights + self.bias
        norms = np.linalg.norm(mapped, axis=-1, keepdims=True)
        return (mapped / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Validation:
    """How well a map did on the held-out pairs."""

    kind: MapKind
    train_pairs: int
    held_out_pairs: int
    mean_cosine: float  # mapped vs true vector
    agreement: float  # overlap@k of the mapped vector's neighbours with the true vector's
    k: int

    def passes(self, floor: float = AGREEMENT_FLOOR) -> bool:
        return self.agreement >= floor

    def as_dict(self) -> dict:
        return {
            "kind": self.kind.value,
            "train_pairs": self.train_pairs,
            "held_out_pairs": self.held_out_pairs,
            "mean_cosine": round(self.mean_cosine, 4),
            f"agreement@{self.k}": round(self.agreement, 4),
        }


@dataclass(frozen=True)
class FittedAdapter:
    """Both directions of a migration's bridge, each with its held-out validation.

    `adapt` maps to-model vectors into the from-model space (queries against the old index);
    `translate` maps from-model vectors into the to-model space (old vectors against the new index).
    """

    adapt: LinearMap
    translate: LinearMap
    adapt_validation: Validation
    translate_validation: Validation


def fit_map(
    source: np.ndarray, target: np.ndarray, kind: MapKind | None = None, ridge: float = DEFAULT_RIDGE
) -> LinearMap:
    """Fit a map from `source` rows to the paired `target` rows.

    Procrustes (the orthogonal W minimising |XW - Y|: W = U V^T of svd(X^T Y)) needs equal
    dimensions; ridge solves (X^T X + ridge I) W = X^T Y on centred data plus a bias.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"pairs must be two matrices with the same number of rows, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("a map needs at least two pairs")
    if kind is None:
        kind = MapKind.PROCRUSTES if x.shape[1] == y.shape[1] else MapKind.RIDGE
    if kind is MapKind.PROCRUSTES:
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"Procrustes needs equal dimensions, got {x.shape[1]} -> {y.shape[1]}; use ridge")
        u, _, vt = np.linalg.svd(x.T @ y)
        weights, bias = u @ vt, np.zeros(y.shape[1])
    else:
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc + ridge * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, xc.T @ yc)
        bias = y_mean - x_mean @ weights
    return LinearMap(kind, weights.astype(np.float32), bias.astype(np.float32))


def split(n: int, held_out: float = DEFAULT_HELD_OUT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of n pairs: a seeded permutation, so a given sample always splits alike."""
    if not 0.0 < held_out < 1.0:
        raise ValueError("held_out must be between 0 and 1")
    order = np.random.default_rng(seed).permutation(n)
    cut = min(n - 2, max(1, round(n * held_out)))
    return np.sort(order[cut:]), np.sort(order[:cut])


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Row indexes of each query's k nearest corpus rows by cosine (unit vectors), best first;
    `exclude[i]` is a corpus row query i may not return (itself)."""
    scores = queries @ corpus.T
    if exclude is not None:
        scores[np.arange(len(queries)), exclude] = -np.inf
    k = min(k, corpus.shape[0])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def agreement(mapped: np.ndarray, true: np.ndarray, corpus: np.ndarray, k: int, exclude: np.ndarray) -> float:
    """Mean overlap@k (shared ids / k) of the neighbours of mapped and of true vectors in `corpus`."""
    a, b = top_k(mapped, corpus, k, exclude), top_k(true, corpus, k, exclude)
    return float(np.mean([len(set(ra) & set(rb)) / a.shape[1] for ra, rb in zip(a, b, strict=True)]))


def validate(
    fitted: LinearMap,
    source: np.ndarray,
    target: np.ndarray,
    held: np.ndarray,
    train_pairs: int,
    k: int = DEFAULT_K,
) -> Validation:
    """A map's figures on the rows `held` (not used to fit it); neighbours come from all of `target`."""
    corpus = _unit(target)
    mapped = fitted.apply(source[held])
    true = corpus[held]
    cosine = float(np.mean(np.sum(mapped * true, axis=1)))
    return Validation(fitted.kind, train_pairs, len(held), cosine, agreement(mapped, true, corpus, k, held), k)


def fit_adapter(
    from_vectors: np.ndarray,
    to_vectors: np.ndarray,
    *,
    held_out: float = DEFAULT_HELD_OUT,
    seed: int = 0,
    k: int = DEFAULT_K,
    ridge: float = DEFAULT_RIDGE,
    kind: MapKind | None = None,
) -> FittedAdapter:
    """Fit both directions on the training part of the pairs and validate each on the held-out part."""
    x = _unit(from_vectors)
    y = _unit(to_vectors)
    train, held = split(len(x), held_out, seed)
    adapt = fit_map(y[train], x[train], kind, ridge)
    translate = fit_map(x[train], y[train], kind, ridge)
    return FittedAdapter(
        adapt,
        translate,
        validate(adapt, y, x, held, len(train), k),
        validate(translate, x, y, held, len(train), k),
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
