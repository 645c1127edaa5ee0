"""The adapter's math (gateway/domain/adapter.py): pure numpy on synthetic pairs and on real encoders."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.datasets import vaswani
from gateway.domain.adapter import AGREEMENT_FLOOR, MapKind, fit_adapter, fit_map, split, top_k
from gateway.encoders.onnx import load_encoder
from tests.helpers import L3, USE


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def spaces(n: int, dim_from: int, dim_to: int, noise: float = 0.05, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Paired vectors: the to-space is a linear image of the from-space, plus noise."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, dim_from)))
    mix = rng.standard_normal((dim_from, dim_to))
    y = unit(x @ mix + noise * rng.standard_normal((n, dim_to)))
    return x.astype(np.float32), y.astype(np.float32)


def test_procrustes_recovers_a_rotation_exactly():
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((300, 16)))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    fitted = fit_map(x, x @ rotation)
    assert fitted.kind is MapKind.PROCRUSTES
    np.testing.assert_allclose(fitted.weights, rotation, atol=1e-5)
    np.testing.assert_allclose(fitted.apply(x), x @ rotation, atol=1e-5)


def test_dimensions_that_differ_get_a_ridge_map_in_both_directions():
    x, y = spaces(600, 24, 48)
    fitted = fit_adapter(x, y)
    assert fitted.adapt.kind is MapKind.RIDGE and (fitted.adapt.dim_in, fitted.adapt.dim_out) == (48, 24)
    assert (fitted.translate.dim_in, fitted.translate.dim_out) == (24, 48)
    assert fitted.adapt_validation.mean_cosine > 0.9 and fitted.adapt_validation.passes()
    assert fitted.translate_validation.passes()
    mapped = fitted.adapt.apply(y[:5])
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-5)
    one = fitted.adapt.apply(y[3])  # one vector (the served path) maps as its row in a batch does
    assert one.dtype == np.float32 and one.shape == (24,)
    np.testing.assert_allclose(one, mapped[3], atol=1e-6)


def test_procrustes_refuses_dimensions_that_differ():
    x, y = spaces(50, 8, 12)
    with pytest.raises(ValueError, match="equal dimensions"):
        fit_map(x, y, MapKind.PROCRUSTES)


def test_a_map_refuses_vectors_of_the_wrong_dimension():
    x, y = spaces(50, 8, 12)
    with pytest.raises(ValueError, match="takes 12-d"):
        fit_adapter(x, y).adapt.apply(x)


def test_the_same_sample_gives_the_same_adapter_and_the_same_split():
    x, y = spaces(400, 16, 16)
    a, b = fit_adapter(x, y), fit_adapter(x, y)
    assert np.array_equal(a.adapt.weights, b.adapt.weights) and a.adapt_validation == b.adapt_validation
    train, held = split(400)
    assert len(held) == 80 and not set(train) & set(held) and len(train) + len(held) == 400


def test_a_mis_paired_fit_falls_below_the_floor_where_the_true_pairing_passes():
    x, y = spaces(800, 32, 32, noise=0.3)
    assert fit_adapter(x, y).adapt_validation.passes()
    shuffled = fit_adapter(x, y[np.random.default_rng(2).permutation(len(y))])
    assert not shuffled.adapt_validation.passes()
    assert shuffled.adapt_validation.agreement < AGREEMENT_FLOOR / 2


def test_top_k_leaves_out_the_excluded_row_and_ranks_best_first():
    corpus = unit(np.eye(4, dtype=np.float32) + 0.1)
    best = top_k(corpus[:2], corpus, 2, exclude=np.array([0, 1]))
    assert 0 not in best[0] and 1 not in best[1] and best.shape == (2, 2)


def test_a_cross_dimension_adapter_fitted_on_real_models_passes_and_a_mis_paired_one_fails():
    settings = load_settings(None)
    texts = [text for _, text in vaswani(300).corpus]
    encode = {key: load_encoder(settings.model_specs()[key], settings.model_cache_dir()) for key in (L3, USE)}
    x, y = encode[L3].encode(texts).vectors, encode[USE].encode(texts).vectors
    fitted = fit_adapter(x, y)
    assert fitted.adapt.kind is MapKind.RIDGE and (fitted.adapt.dim_in, fitted.adapt.dim_out) == (512, 384)
    assert fitted.adapt_validation.passes(), fitted.adapt_validation
    shuffled = fit_adapter(x, y[np.random.default_rng(3).permutation(len(y))])
    assert not shuffled.adapt_validation.passes(), shuffled.adapt_validation
