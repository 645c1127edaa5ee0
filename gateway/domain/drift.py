"""Comparing re-embedded probe vectors with the registered ones: pure logic."""

from __future__ import annotations

import numpy as np


def min_probe_cosine(vectors: np.ndarray, registered: np.ndarray) -> float:
    """The smallest cosine between each probe's new vector and its registered vector (-1..1).

    A shape mismatch (another dimension, another number of probes) is total drift: -1."""
    if vectors.shape != registered.shape or vectors.size == 0:
        return -1.0
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(registered, axis=1)
    cosines = (vectors * registered).sum(axis=1) / np.clip(norms, 1e-12, None)
    return float(cosines.min())
