"""Tests for lora_theory.lora_plus.width_sweep: slope fits, and measured slopes vs the recursions (lora_plus.prop1, prop2, thm1)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from lora_theory.lora_plus import fit_exponents, predict_exponents, width_sweep
from lora_theory.lora_plus.width_sweep import SLOPE_TOL, TERMS, compare


def test_fit_recovers_exact_power_laws():
    """|term| = C_seed n^p exactly: the fitted slope is p, the seed spread 0, and a zero term is -inf."""
    rows = []
    for n in (64, 128, 256, 512):
        for seed in (0, 1, 2):
            rows.append({"n": n, "seed": seed, "step": 1, "delta1": -(1 + seed) * n**0.5, "delta2": 3.0 * n**-1.0, "delta3": 0.0})
    fit = fit_exponents(pd.DataFrame(rows), terms=("delta1", "delta2", "delta3")).set_index("term")
    assert fit.loc["delta1", "slope"] == pytest.approx(0.5, abs=1e-12) and fit.loc["delta1", "slope_sd"] == pytest.approx(0, abs=1e-12)
    assert fit.loc["delta2", "slope"] == pytest.approx(-1.0, abs=1e-12)
    assert fit.loc["delta3", "slope"] == float("-inf")


def test_fit_uses_the_median_over_seeds():
    """One wild seed out of three does not move the fitted slope (median), but shows in slope_sd."""
    rows = [{"n": n, "seed": s, "step": 1, "delta1": n ** (2.0 if s == 2 else 0.0)} for n in (64, 256, 1024) for s in (0, 1, 2)]
    fit = fit_exponents(pd.DataFrame(rows), terms=("delta1",))
    assert fit.slope.iloc[0] == pytest.approx(0.0, abs=1e-12) and fit.slope_sd.iloc[0] > 0.5


def test_compare_zero_pattern_must_match():
    fitted = pd.DataFrame({"term": ["delta1", "delta2"], "step": [1, 1], "slope": [float("-inf"), 0.01]})
    right = pd.DataFrame({"term": ["delta1", "delta2"], "step": [1, 1], "gamma": [None, Fraction(0)], "gamma_float": [float("-inf"), 0.0]})
    wrong = pd.DataFrame({"term": ["delta1", "delta2"], "step": [1, 1], "gamma": [Fraction(0), None], "gamma_float": [0.0, float("-inf")]})
    assert compare(fitted, right, terms=("delta1", "delta2")).ok.all()
    assert not compare(fitted, wrong, terms=("delta1", "delta2")).ok.any()


# Bounded dynamics (no explosion within 4 steps): eta_A = Theta(n^a) with a <= -1, eta_B = Theta(n^b) with b <= 0,
# every optimizer and init; plus GD's equal rates c <= -1/2 from Init[1] (Prop. 1's vanishing case).
# Offline: all 54 (optimizer, init, a, b) x 3 width ranges x 2 seed pairs agree within 0.034.
LORA_PLUS_LIKE = st.tuples(st.sampled_from(("gd", "signsgd", "adam")), st.sampled_from((1, 2)),
                           st.sampled_from(("-1", "-3/2", "-2")), st.sampled_from(("0", "-1/2", "-1")))
GD_EQUAL = st.sampled_from(("-1/2", "-1", "-3/2")).map(lambda c: ("gd", 1, c, c))


@settings(max_examples=10, deadline=None)
@given(cfg=st.one_of(LORA_PLUS_LIKE, GD_EQUAL), k0=st.integers(5, 7), seed=st.integers(0, 10_000))
def test_measured_slopes_within_tolerance_over_widths_seeds_and_exponents(cfg, k0, seed):
    """lora_plus.prop1 / prop2 / thm1: 5 widths 2^k0 .. 2^(k0+4), 2 seeds, 4 steps: every delta slope within SLOPE_TOL."""
    opt, init, a, b = cfg
    widths = tuple(2**k for k in range(k0, k0 + 5))
    df = width_sweep(widths, 4, seeds=(seed, seed + 1), optimizer=opt, init=init, a=float(Fraction(a)), b=float(Fraction(b)))
    cmp = compare(fit_exponents(df), predict_exponents(opt, init, a, b, 4), tol=SLOPE_TOL)
    note(cmp[["term", "step", "slope", "gamma_float"]].to_string())
    assert cmp.ok.all()


def test_sweep_is_tidy_and_complete():
    df = width_sweep((16, 32), 3, seeds=(0, 1), optimizer="adam", init=2, a=-1.0, b=0.0)
    assert len(df) == 2 * 2 * 3 and set(TERMS) <= set(df.columns) and {"Z_A", "Z_B", "loss"} <= set(df.columns)
    assert np.allclose(df.df, df.delta1 + df.delta2 + df.delta3, rtol=1e-12, atol=0)


def test_bad_input():
    for widths in ((0, 64), (-8,), (), (64.5,)):
        with pytest.raises(ValueError, match="widths"):
            width_sweep(widths, 2)
    with pytest.raises(ValueError, match="seeds"):
        width_sweep((8, 16), 2, seeds=())
    with pytest.raises(ValueError, match="df: expected a width_sweep table"):
        fit_exponents(pd.DataFrame({"n": [1], "step": [1]}))
