"""Argument contracts and side conventions of the mathematical core that mutation testing found unpinned
(benchmarks/mutation.py): each error names its argument (``"<name>: expected ..."``), bounds are enforced,
and the feature map's weights sit on the query side. Claims ``limits.rank_count``, ``limits.degree_bound``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lora_theory.limits.features import feature_rank, polynomial_features


@pytest.mark.parametrize("g,d,match", [(-1, 2, r"^g: expected an integer >= 0"), (2, 0, r"^d: expected an integer >= 1"),
                                       (2.5, 2, r"^g: expected an integer"), (2, "3", r"^d: expected an integer")])
def test_feature_rank_arguments(g, d, match):
    with pytest.raises(ValueError, match=match):
        feature_rank(g, d)


def test_feature_rank_values():
    assert [feature_rank(g, 3) for g in range(4)] == [1, 4, 10, 20] and feature_rank(0, 1) == 1


def test_polynomial_features_arguments():
    with pytest.raises(ValueError, match=r"^Z: expected a torch.Tensor"):
        polynomial_features(np.ones((3, 2)), np.array([1.0]))
    with pytest.raises(ValueError, match=r"^Z: expected shape"):
        polynomial_features(torch.ones(3), np.array([1.0]))
    with pytest.raises(ValueError, match=r"^Z: expected finite entries, got 1 non-finite"):
        polynomial_features(torch.tensor([[1.0, float("nan")]]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"^side: expected one of 'query', 'key', got 'value'"):
        polynomial_features(torch.ones(3, 2), np.array([1.0]), side="value")
    with pytest.raises(ValueError, match=r"^poly: expected a 1-D array"):
        polynomial_features(torch.ones(3, 2), np.ones((2, 2)))


def test_weights_sit_on_the_query_side():
    """psi(k) are the plain monomials k^alpha; phi(q) carries a_|alpha| |alpha|!/alpha! (the docstring's convention,
    which approx_gradients' rounding analysis assumes). The product alone cannot tell the two sides apart."""
    Z = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    coef = np.array([0.5, 1.0, 0.25])  # P(x) = 0.5 + x + 0.25 x^2
    psi = polynomial_features(Z, coef, "key")[0].tolist()
    phi = polynomial_features(Z, coef, "query")[0].tolist()
    # graded order: 1; z0, z1; z0^2, z0 z1, z1^2
    assert psi == [1.0, 2.0, 3.0, 4.0, 6.0, 9.0]
    assert phi == [0.5, 2.0, 3.0, 0.25 * 4.0, 0.25 * 2 * 6.0, 0.25 * 9.0]
    ones = polynomial_features(torch.ones(4, 3, dtype=torch.float64), np.ones(4), "key")
    assert ones.shape == (4, math.comb(3 + 3, 3)) and bool((ones == 1).all())


def test_float32_features_stay_float32():
    Z = torch.randn(5, 3, dtype=torch.float32)
    assert polynomial_features(Z, np.array([1.0, 0.5, 0.1]), "query").dtype == torch.float32
