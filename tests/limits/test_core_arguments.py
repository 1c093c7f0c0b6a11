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

from lora_theory.limits.polynomial import DEGREE_BOUND_C, degree_bound, degree_order, exp_polynomial


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
    assert degree_bound(10.0, 1e-6) == math.ceil(DEGREE_BOUND_C * 20) and degree_bound(10.0, 1e-6, C=1.0) == 20


# -- exact.py and approx.py ------------------------------------------------------------------------

from lora_theory.limits import approx, exact
from lora_theory.limits.instance import make_instance


def test_exact_arguments():
    inst = make_instance(16, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"^inst: expected an AttentionLoRAInstance \(see make_instance\), got str"):
        exact.exact_gradients("x")
    with pytest.raises(ValueError, match=r"^block_size: expected an integer >= 1, got 0"):
        exact.exact_gradients(inst, block_size=0)
    with pytest.raises(ValueError, match=r"^L: expected an integer >= 1, got 0"):
        exact.default_block_size(0)
    with pytest.raises(ValueError, match=r"^names: expected one of 'q', 'k', 'v', got 'x'"):
        exact.weight_gradients(inst, names=("x",))
    with pytest.raises(ValueError, match=r"^method: expected one of 'sdpa', 'dense'"):
        exact.autograd_gradients(inst, method="numeric")
    with pytest.raises(ValueError, match=r"^inst: dense_terms forms L x L matrices; expected L <= 4096, got L = 4097"):
        exact.dense_terms(make_instance(4097, 2, 1, seed=0))


def test_default_block_size_values():
    """min(L, max(16, 2^18 // L)): about 2^18 entries per (block, L) piece, at least 16 rows, never more than L."""
    assert exact.default_block_size(1) == 1 and exact.default_block_size(10) == 10
    assert exact.default_block_size(1024) == 256 and exact.default_block_size(1 << 14) == 16 and exact.default_block_size(1 << 16) == 16
    assert exact.default_block_size(100) == 100


def test_weight_gradients_names_and_values():
    """names selects which weight gradients come back (not only the adapted ones), each (d, d); they chain to exact_gradients."""
    inst = make_instance(32, 4, 2, adapt="qv", seed=1)
    G = exact.weight_gradients(inst, names=("k",))
    assert set(G) == {"k"} and G["k"].shape == (4, 4)
    full = exact.weight_gradients(inst)
    assert set(full) == {"q", "v"}
    chained, direct = exact.lora_chain(inst, full), exact.exact_gradients(inst)
    assert all(torch.equal(chained[k], direct[k]) for k in direct)
    assert float(exact.loss(inst)) == pytest.approx(float(0.5 * ((torch.softmax(inst.beta * (inst.Xq @ inst.weight("q")) @ (inst.Xk @ inst.weight("k")).T, 1)
                                                                   @ (inst.Xv @ inst.weight("v")) - inst.Y) ** 2).sum()), rel=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "pade"}, r"^method: expected one of 'chebyshev', 'taylor'"),
    ({"on_invalid": "warn"}, r"^on_invalid: expected one of 'raise', 'flag'"),
    ({"eps": 0.0}, r"^eps: expected a finite number > 0"),
    ({"eps": 1.0}, r"^eps: expected a number in \(0, 1\), got 1.0"),
    ({"degree": -1}, r"^degree: expected an integer >= 0"),
    ({"degree": 61}, r"^degree: expected an integer <= 60"),
    ({"R": -1.0}, r"^R: expected a finite number >= 0"),
])
def test_approx_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        approx.approx_gradients(make_instance(16, 4, 2, seed=0), **kwargs)


def test_approx_info_fields():
    """ApproxInfo reports what ran: degree, rank C(g + d, d), the R covered, times, method, and delta >= the fit's own error."""
    inst = make_instance(64, 4, 2, bound=1.0, beta=0.25, seed=2)
    g, info = approx.approx_gradients(inst, eps=1e-4, method="taylor")
    assert info.valid and info.reason == "" and info.method == "taylor" and info.rank == math.comb(info.degree + 4, 4)
    assert info.R == pytest.approx(approx.score_range_bound(inst)) and set(info.times) == {"keys", "queries", "total"}
    assert 0 < info.poly_rel_error <= 1e-4 and info.min_normalizer > 0 and set(info.error_bound) == set(g)
    _, forced = approx.approx_gradients(inst, degree=3, R=5.0, on_invalid="flag")
    assert forced.degree == 3 and forced.R == 5.0 and not forced.valid and "degree 3" in forced.reason
    zero = make_instance(8, 2, 1, seed=0).replace(Xq=torch.zeros(8, 2, dtype=torch.float64), attention="general")
    _, zinfo = approx.approx_gradients(zero)  # all scores 0: any positive half-width works
    assert zinfo.valid and zinfo.R > 0
