"""Tests for lora_theory.limits.polynomial (claim limits.degree_bound)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lora_theory.claims import run_check
from lora_theory.limits.polynomial import DEGREE_BOUND_C, degree_bound, degree_order, exp_polynomial


@given(R=st.floats(0.0, 6.0), eps=st.sampled_from((1e-2, 1e-4, 1e-6, 1e-8)), method=st.sampled_from(("chebyshev", "taylor")))
def test_certified_error_and_minimality(R, eps, method):
    p = exp_polynomial(R, eps, method=method)
    if p.certified:
        assert p.rel_error <= eps
        if p.degree > 0:  # one degree less does not reach eps: the degree is the lowest
            assert exp_polynomial(R, degree=p.degree - 1, method=method).rel_error > eps
        assert p.min_value_ratio > 0  # relative error < 1 keeps P positive on [-R, R]
    s = np.linspace(-R, R, 101)
    assert np.all(np.abs(p(s) - np.exp(s)) / np.exp(s) <= p.rel_error * (1 + 1e-9) + 1e-15)


@given(R1=st.floats(0.01, 6.0), R2=st.floats(0.01, 6.0), e1=st.sampled_from((1e-2, 1e-4, 1e-6, 1e-8)), e2=st.sampled_from((1e-2, 1e-4, 1e-6, 1e-8)))
def test_degree_monotone_in_R_and_inverse_eps(R1, R2, e1, e2):
    (Ra, Rb), (ea, eb) = sorted((R1, R2)), sorted((e1, e2), reverse=True)
    assert exp_polynomial(Ra, ea).degree <= exp_polynomial(Rb, ea).degree  # larger range, higher degree
    assert exp_polynomial(Ra, ea).degree <= exp_polynomial(Ra, eb).degree  # smaller eps, higher degree


def test_chebyshev_beats_taylor():
    for R in (1.0, 2.0, 4.0):
        assert exp_polynomial(R, 1e-6).degree < exp_polynomial(R, 1e-6, method="taylor").degree


def test_uncertified_when_range_too_large():
    p = exp_polynomial(20.0, 1e-10, max_degree=20)
    assert not p.certified and p.rel_error > 1e-10


def test_degree_bound_holds_on_held_out_grid():
    """limits.degree_bound: the constant fitted on one grid bounds a held-out grid."""
    row = run_check("limits.degree_bound")
    assert row["verdict"] == "holds", row["summary"]
    assert row["figures"]["C_fitted"] <= DEGREE_BOUND_C + 1e-12


def test_degree_order_continuous_and_monotone():
    eps = 1e-6
    Rs = np.linspace(0.01, 10, 400)
    orders = [degree_order(R, eps) for R in Rs]
    assert max(abs(a - b) for a, b in zip(orders, orders[1:])) < 1.0
    assert degree_bound(2.0, 1e-6) == math.ceil(DEGREE_BOUND_C * degree_order(2.0, 1e-6))


@pytest.mark.parametrize("kwargs, match", [({"R": -1.0, "eps": 0.1}, "R"), ({"R": 1.0, "eps": 1.5}, "eps"), ({"R": 1.0, "eps": 0.1, "method": "remez"}, "method"),
                                           ({"R": 1.0}, "eps"), ({"R": float("inf"), "eps": 0.1}, "R")])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        exp_polynomial(**kwargs)


@given(R=st.floats(0.01, 12.0), eps=st.sampled_from((1e-1, 1e-3, 1e-6, 1e-10)), rho=st.floats(0.0, 1.0), seed=st.integers(0, 10**6))
def test_error_range_contains_eps_off_grid(R, eps, rho, seed):
    """error_range(rho) bounds eps(t) = P(t) e^{-R t} - 1 at random points |t| <= rho that are NOT on the
    grid (and rel_error bounds it on [-1, 1]): fails if the between-grid pad is dropped or the lookup
    takes intervals short of rho."""
    p = exp_polynomial(R, eps)
    t = np.random.default_rng(seed).uniform(-rho, rho, 4000)
    e = np.polynomial.polynomial.polyval(t, p.coef) * np.exp(-R * t) - 1
    # this test's own float64 evaluation error (Horner), which the true eps is only known to within
    noise = 4 * (p.degree + 3) * 1.2e-16 * np.polynomial.polynomial.polyval(np.abs(t), np.abs(p.coef)) * np.exp(-R * t) + 4e-16
    lo, hi = p.error_range(rho)
    assert np.all(e + noise >= lo) and np.all(e - noise <= hi)
    assert np.all(np.abs(e) - noise <= p.rel_error) and p.rel_error >= max(abs(lo), abs(hi))


def test_error_range_shrinks_with_rho():
    """The per-row refinement is worth having: on |t| <= 0.1 the spread of eps is far below its sup."""
    p = exp_polynomial(2.0, 1e-6)
    lo, hi = p.error_range(np.array([0.1, 1.0]))
    assert hi[0] - lo[0] < 0.3 * (hi[1] - lo[1]) and hi[1] <= p.rel_error


@pytest.mark.parametrize("R", [709.0, 710.0, 1e4, 1e300])
def test_huge_ranges_give_inf_never_nan(R):
    """Issue 11: at R >= ~710 exp overflowed and NaN compared False against eps (valid=True); now inf."""
    p = exp_polynomial(R, 1e-3)
    assert not p.certified and p.rel_error == math.inf or (R < 710 and p.rel_error > 1e-3)
    assert not math.isnan(p.feature_rounding(10, 1e-16))
    lo, hi = p.error_range(0.5)
    assert not (np.isnan(lo) or np.isnan(hi))


@given(R=st.floats(0.01, 10.0), eps=st.sampled_from((1e-2, 1e-4, 1e-8)), rho=st.floats(0.01, 1.0), seed=st.integers(0, 10**6))
def test_slope_bound_is_a_lipschitz_constant_off_grid(R, eps, rho, seed):
    """|eps(s) - eps(t)| <= slope_bound(rho) |s - t| for random pairs in [-rho, rho] (plus evaluation
    noise): fails if the eps'' pad or the lookup is wrong."""
    p = exp_polynomial(R, eps)
    rng = np.random.default_rng(seed)
    s, t = rng.uniform(-rho, rho, 2000), rng.uniform(-rho, rho, 2000)

    def e(x):
        return np.polynomial.polynomial.polyval(x, p.coef) * np.exp(-R * x) - 1

    noise = 8 * (p.degree + 3) * 1.2e-16 * np.polynomial.polynomial.polyval(rho, np.abs(p.coef)) * math.exp(R * rho) + 1e-15
    assert np.all(np.abs(e(s) - e(t)) <= p.slope_bound(rho) * np.abs(s - t) + noise)


def test_toolkit_degree_is_tight():
    """limits.degree_tightness: the degree the toolkit plans with (measured, or degree_bound past float64's reach) is never below the
    minimal degree's lower bound, <= 2x a sufficient degree and <= 2.5x the minimal degree where the Bessel bracket determines it;
    a doubled degree rule breaks both."""
    from lora_theory.claims import limits as cl
    from lora_theory.claims import run_check

    m = cl._degree_tightness(True)
    assert m.holds, m.summary
    row = run_check("limits.degree_tightness", quick=True, control="degree_doubled")
    assert row["verdict"] == "fails"
