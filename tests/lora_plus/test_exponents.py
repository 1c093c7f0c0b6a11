"""Tests for lora_theory.lora_plus.exponents: the exponent recursions by hand (lora_plus.prop1, prop2, thm1)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_theory.lora_plus import predict_exponents

HALVES = st.integers(-6, 2).map(lambda k: Fraction(k, 2))


def _g(df, step, term):
    return df[(df.step == step) & (df.term == term)].gamma.iloc[0]


def test_prop2_lora_plus_rates_are_efficient_for_t_gt_1():
    """eta_A = Theta(1/n), eta_B = Theta(1), GD: delta1 = delta2 = delta3 = Theta(1) for t > 1, both inits."""
    for init in (1, 2):
        df = predict_exponents("gd", init, -1, 0, 6)
        for t in range(2, 7):
            assert [_g(df, t, k) for k in ("delta1", "delta2", "delta3")] == [0, 0, 0]
    d1 = predict_exponents("gd", 1, -1, 0, 1)
    assert _g(d1, 1, "delta1") is None and _g(d1, 1, "delta2") == 0  # Init[1]: b = 0, only b moves at t = 1


def test_prop1_equal_rates_by_hand():
    """c = -1/2: Init[1] f_t = Theta(n^{-1/2}) (vanishing), Init[2] gamma[f_1] = 1/2 (exploding)."""
    df1 = predict_exponents("gd", 1, "-1/2", "-1/2", 5)
    assert all(_g(df1, t, "f") == Fraction(-1, 2) for t in range(1, 6))
    assert _g(df1, 2, "delta1") == Fraction(-1, 2)  # a + 2 gamma[b] + 1 = -1/2 - 1 + 1
    df2 = predict_exponents("gd", 2, "-1/2", "-1/2", 2)
    assert _g(df2, 1, "delta1") == Fraction(1, 2) and _g(df2, 1, "f") == Fraction(1, 2)
    # step 2 feeds U = Theta(n^{1/2}) back: Delta s = a + gamma[b] + gamma[U] + 1 = 1, Delta b = b + 1/2 + 1/2 = 1/2
    assert _g(df2, 2, "delta1") == 1 and _g(df2, 2, "delta2") == 1 and _g(df2, 2, "delta3") == Fraction(3, 2)


def test_thm1_adam_type_recursion():
    """Adam / SignSGD: gamma[Delta s] = a + 1, gamma[Delta B] = b; equal rates c: delta1 = 2c + 1... never both Theta(1)."""
    for opt in ("signsgd", "adam"):
        lp = predict_exponents(opt, 1, -1, 0, 4)
        assert all(_g(lp, t, k) == 0 for t in (2, 3, 4) for k in ("delta1", "delta2", "delta3"))
        for c in (Fraction(-1), Fraction(-1, 2), Fraction(0)):
            eq = predict_exponents(opt, 1, c, c, 3)
            assert not all(_g(eq, t, k) == 0 for t in (2, 3) for k in ("delta1", "delta2"))


@settings(max_examples=25)
@given(opt=st.sampled_from(("gd", "signsgd", "adam")), init=st.sampled_from((1, 2)), a=HALVES, b=HALVES)
def test_structural_identities(opt, init, a, b):
    """gamma[delta1] + gamma[delta2] = gamma[delta3] + gamma[b_{t-1}] + gamma[s_{t-1}]; gamma[Delta f] = max gamma[delta_i]; two deltas vanish at t = 1."""
    df = predict_exponents(opt, init, a, b, 3)
    for t in (1, 2, 3):
        d = [_g(df, t, k) for k in ("delta1", "delta2", "delta3")]
        finite = [x for x in d if x is not None]
        assert _g(df, t, "df") == (max(finite) if finite else None)
        if t > 1 and all(x is not None for x in d):
            assert d[0] + d[1] == d[2] + _g(df, t - 1, "b_t") + _g(df, t - 1, "aTx")  # (b Ds)(Db s) = (Db Ds) b s
    first = [_g(df, 1, k) for k in ("delta1", "delta2", "delta3")]
    assert sum(x is None for x in first) == 2  # t = 1: one factor has not moved yet, delta3 needs both


def test_bad_input():
    with pytest.raises(ValueError, match="optimizer"):
        predict_exponents("sgdm", 1, -1, 0, 2)
    with pytest.raises(ValueError, match="init"):
        predict_exponents("gd", 3, -1, 0, 2)
    with pytest.raises(ValueError, match="steps"):
        predict_exponents("gd", 1, -1, 0, 0)


def test_table_shape_and_float_column():
    """One row per (step, term) for exactly ``steps`` steps, gamma_float = float(gamma) or -inf for an exactly-zero term.

    Mutation testing (benchmarks/mutation.py) found these unchecked: an extra step, and a gamma_float column
    (what width_sweep.compare reads) that was -inf everywhere or missing, went unnoticed.
    """
    import math

    df = predict_exponents("gd", 1, -1, 0, 3)
    assert list(df.columns) == ["step", "term", "gamma", "gamma_float"]
    assert len(df) == 3 * 7 and sorted(set(df.step)) == [1, 2, 3]
    for g, gf in zip(df.gamma, df.gamma_float, strict=True):
        assert (gf == -math.inf) if g is None else (gf == float(g) and math.isfinite(gf))
    assert (df.gamma_float > -math.inf).sum() > 10  # most terms are finite here


def test_bad_steps_named():
    with pytest.raises(ValueError, match="steps"):
        predict_exponents("gd", 1, -1, 0, 0)
