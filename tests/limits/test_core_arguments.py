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


# -- polynomial.py -------------------------------------------------------------------------------

from lora_theory.limits.polynomial import degree_bound, degree_order, exp_polynomial  # noqa: E402


@pytest.mark.parametrize("kwargs,match", [
    ({"R": -1.0, "eps": 1e-3}, r"^R: expected a finite number >= 0"),
    ({"R": 1.0, "eps": 1e-3, "method": "pade"}, r"^method: expected one of"),
    ({"R": 1.0, "eps": 1e-3, "max_degree": -1}, r"^max_degree: expected an integer >= 0"),
    ({"R": 1.0, "eps": 1e-3, "max_degree": 61}, r"^max_degree: expected an integer <= 60"),
    ({"R": 1.0, "degree": -1}, r"^degree: expected an integer >= 0"),
    ({"R": 1.0, "degree": 61}, r"^degree: expected an integer <= 60"),
    ({"R": 1.0}, r"^eps: expected a number in \(0, 1\) when degree is not given"),
    ({"R": 1.0, "eps": 1.0}, r"^eps: expected a number in \(0, 1\), got 1"),
])
def test_exp_polynomial_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        exp_polynomial(**kwargs)


def test_exp_polynomial_edges():
    """max_degree 0 and 60 are allowed; the uncertified search stops at max_degree (default 40); R = 0 is the constant 1."""
    assert exp_polynomial(1.0, 0.9, max_degree=0).degree == 0
    assert exp_polynomial(0.5, 1e-3, max_degree=60).certified
    assert exp_polynomial(1.0, degree=0).degree == 0 and exp_polynomial(1.0, degree=60).degree == 60
    far = exp_polynomial(40.0, 1e-12)
    assert not far.certified and far.degree <= 40
    p0 = exp_polynomial(0.0, 1e-3)
    assert p0.degree == 0 and float(p0(0.0)) == 1.0 and np.allclose(p0(np.array([0.0, 0.0])), 1.0)
    p = exp_polynomial(2.0, 1e-6)
    assert abs(float(p(1.5)) / math.exp(1.5) - 1) <= 1e-6 and p([0.5, -0.5]).shape == (2,)


def test_feature_rounding_formula():
    """n u sum_j |coef_j| e^R, and inf (no warning) once e^R overflows."""
    import warnings

    p = exp_polynomial(2.0, 1e-6)
    assert p.feature_rounding(10, 1e-16) == pytest.approx(10 * 1e-16 * float(np.abs(p.coef).sum()) * math.exp(2.0), rel=1e-12)
    big = exp_polynomial(800.0, degree=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow of e^R is expected and silenced: it must not warn
        assert big.feature_rounding(10, 1e-16) == math.inf


@pytest.mark.parametrize("R,eps,match", [(-0.1, 1e-3, r"^R: expected a finite number >= 0"), (1.0, 0.0, r"^eps: expected a finite number > 0"),
                                         (1.0, 1.0, r"^eps: expected a number in \(0, 1\), got 1"), (1.0, 1.5, r"^eps: expected a number in \(0, 1\)")])
def test_degree_order_arguments(R, eps, match):
    with pytest.raises(ValueError, match=match):
        degree_order(R, eps)


def test_degree_order_values():
    """The formula max{2R, q / max(1, log(q / 2R)), 1}, q = log(1/eps), at points where each branch decides."""
    q = math.log(1e6)
    assert degree_order(0.0, 1e-6) == pytest.approx(q)  # R = 0: log(1/eps)
    assert degree_order(0.5, 1e-6) == pytest.approx(q / math.log(q / 1.0))
    assert degree_order(10.0, 1e-6) == pytest.approx(20.0)  # 2R dominates
    assert degree_order(0.0, 0.9) == 1.0 and degree_order(0.01, 0.5) == 1.0  # the floor of 1
    assert degree_bound(10.0, 1e-6) == 30 and degree_bound(10.0, 1e-6, C=1.0) == 20
