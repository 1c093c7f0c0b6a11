"""Tests of lora_theory.limits.asymptotics: the Bessel degree bracket in log space and the rank / threshold evaluation to L = 2^512
(claims limits.thm3.1, limits.thmA.1 part (b), limits.threshold, limits.degree_tightness)."""
from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
from numpy.polynomial import chebyshev
from scipy.special import ive

from lora_theory._validate import InvalidArgumentError
from lora_theory.limits import asymptotics as A
from lora_theory.limits import norm_sweeps


@pytest.mark.parametrize("R", [0.05, 1.0, 7.5, 60.0])
def test_log_bessel_matches_scipy_where_it_is_finite(R):
    li = A.log_bessel_i(R, 40)
    ref = np.log(ive(np.arange(41), R)) + R
    ok = np.isfinite(ref)
    assert np.max(np.abs(li[ok] - ref[ok])) < 1e-10


@pytest.mark.parametrize("R,j", [(3.0, 500), (57.0, 1700), (0.2, 300)])
def test_log_bessel_matches_mpmath_where_float64_underflows(R, j):
    """Orders far past float64's range (I_j(R) ~ 1e-1000 and below): the backward recurrence agrees with mpmath's besseli."""
    mpmath.mp.dps = 30
    ref = float(mpmath.log(mpmath.besseli(j, R)))
    assert A.log_bessel_i(R, j)[j] == pytest.approx(ref, rel=1e-10)


def test_log_bessel_at_zero():
    li = A.log_bessel_i(0.0, 3)
    assert li[0] == 0.0 and np.all(np.isneginf(li[1:]))


def _additive_error(R: float, g: int) -> float:
    c = chebyshev.chebinterpolate(lambda t: np.exp(R * (t + 1)), g)
    t = np.cos(np.linspace(0, math.pi, 4001))
    return float(np.max(np.abs(chebyshev.chebval(t, c) - np.exp(R * (t + 1)))))


@pytest.mark.parametrize("R,eps", list(itertools.product((0.1, 1.0, 4.0), (1e-3, 1e-8))))
def test_additive_bracket_brackets_the_interpolant(R, eps):
    lo, hi = A.degree_bracket(R, eps, "additive")
    assert lo <= hi <= lo + 2
    assert _additive_error(R, hi + 1) <= eps
    if lo >= 1:
        assert _additive_error(R, lo - 1) > eps


def test_relative_bracket_contains_the_toolkits_certified_degree():
    """The toolkit's measured (certified) degree is never below lo: a degree below lo cannot reach eps."""
    from lora_theory.limits import polynomial

    for R, eps in itertools.product((0.1, 0.7, 2.0, 6.0), (1e-2, 1e-5, 1e-9)):
        lo, hi = A.degree_bracket(R, eps)
        p = polynomial.exp_polynomial(R, eps)
        assert p.certified and lo <= p.degree <= hi + 1


def test_bracket_in_log_space_beyond_float64():
    """eps = 2^-1024 (L^-2 at L = 2^512) is only reachable through log_inv_eps; the bracket still orders and grows."""
    q = 1024 * math.log(2)
    lo, hi = A.degree_bracket(20.0, log_inv_eps=q)
    lo2, hi2 = A.degree_bracket(20.0, log_inv_eps=2 * q)
    assert 0 < lo <= hi and lo2 > lo and hi2 > hi
    assert A.degree_bracket(2.0, 1e-6) == A.degree_bracket(2.0, log_inv_eps=-math.log(1e-6))


@pytest.mark.parametrize("bad", [dict(R=1.0), dict(R=1.0, eps=1.5), dict(R=-1.0, eps=0.1), dict(R=1.0, log_inv_eps=-2.0), dict(R=1.0, eps=0.1, kind="abs")])
def test_bracket_rejects_bad_arguments(bad):
    with pytest.raises(InvalidArgumentError):
        A.degree_bracket(**bad)


def test_log_rank_and_budget_against_math_comb():
    for g, d in itertools.product(range(0, 12), range(1, 9)):
        assert A.log_rank(g, d) == pytest.approx(math.log(math.comb(g + d, d)), abs=1e-9)
    for L, d in ((256, 4), (65536, 8), (10**6, 3)):
        g = A.low_rank_budget(math.log(L), d)
        assert math.comb(g + d, d) < L <= math.comb(g + 1 + d, d)


def test_half_log_dimension():
    assert [A.half_log_dimension(x) for x in (2, 8, 9, 16, 512)] == [2, 4, 5, 8, 256]


def test_rank_table_falls_in_thm31s_regime_and_rises_on_the_boundary():
    """limits.thm3.1 (b): log_L k falls at every doubling from 2^64 at Gamma = 1 and (ln L)^{1/4}; at Gamma = 0.5 sqrt(ln L) it rises."""
    df = A.rank_table((64, 128, 256, 512), eps_powers=(1.0,))
    for rule, g in df.groupby("gamma_rule"):
        steps = np.diff(g.sort_values("log2_L").log_L_k_hi.to_numpy())
        if rule == "Gamma=0.5 sqrt(ln L)":
            assert np.all(steps > 0), rule
        else:
            assert np.all(steps < 0), rule
    assert (df.degree_lo <= df.degree_hi).all() and (df.log_L_k_lo <= df.log_L_k_hi).all()


def test_threshold_table_brackets_the_running_method():
    """limits.threshold: at reachable L the toolkit's own Gamma* (its plan, degree measured at eps = 1/L) lies in the bracket's
    [Gamma*_min, Gamma*_max], with the same d rule."""
    log2s = (8, 12)
    ev = A.threshold_table(log2s)
    tk = norm_sweeps.threshold_sweep(tuple(2**j for j in log2s), regime="half_log")
    assert list(ev.d) == list(tk.d)
    assert (ev.Gamma_star_min <= tk.Gamma_star.to_numpy()).all() and (tk.Gamma_star.to_numpy() <= ev.Gamma_star_max).all()


def test_threshold_far_out_settles_near_sqrt_log():
    ev = A.threshold_table((128, 256, 512))
    assert ((ev.x_star > 0.3) & (ev.x_star < 0.5)).all()
    assert 0.4 < A.fit_threshold_power(ev) < 0.6


def test_fit_threshold_power_recovers_a_power():
    lnL = np.log(2.0) * np.array([8.0, 16.0, 32.0])
    import pandas as pd

    df = pd.DataFrame({"log2_L": [8.0, 16.0, 32.0], "ln_L": lnL, "Gamma_star": 0.4 * lnL**0.5})
    assert A.fit_threshold_power(df) == pytest.approx(0.5)
    with pytest.raises(InvalidArgumentError):
        A.fit_threshold_power(df, 100, 200)
