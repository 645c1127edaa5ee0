"""Vector arithmetic the gateway needs in several places, written once."""

from __future__ import annotations

import numpy as np


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (0.0 where either row is zero).

    Computed in float64 so that the comparison of two float32 vectors is not itself noisy at the
    1e-6 level where probe and verification thresholds live.
    """
    a64 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b64 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a64.shape != b64.shape:
        raise ValueError(f"cannot compare vectors of shapes {a64.shape} and {b64.shape}")
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    dots = (a64 * b64).sum(axis=1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def min_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest `row_cosines` of `a` and `b` (-1..1): how far the farthest pair moved.

    Another shape (another dimension, another number of rows) or no rows at all is total
    drift: -1.0. The one comparison behind the start-up probe check, the drift watch and verify.
    """
    a = np.atleast_2d(np.asarray(a))
    b = np.atleast_2d(np.asarray(b))
    if a.shape != b.shape or a.size == 0:
        return -1.0
    return float(row_cosines(a, b).min())
