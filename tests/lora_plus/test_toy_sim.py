"""Tests for lora_theory.lora_plus toy model, recursions and slope fits (lora_plus.prop1, prop2, thm1)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_theory.lora_plus import fit_exponents, predict_exponents, simulate_toy, width_sweep
from lora_theory.lora_plus.width_sweep import compare
from lora_theory.tolerances import tolerance

RTOL = tolerance(torch.float64)

WIDTHS = tuple(2**k for k in range(6, 12))
BOUNDED = [("gd", 1, -1, 0), ("gd", 2, -1, 0), ("gd", 1, "-1/2", "-1/2"), ("signsgd", 1, -1, 0), ("signsgd", 2, -1, 0),
           ("adam", 1, -1, 0), ("adam", 2, -1, 0), ("signsgd", 1, -1, -1), ("signsgd", 2, "-3/2", -1)]


@settings(max_examples=12)
@given(cfg=st.sampled_from(BOUNDED), seed=st.integers(0, 1000))
def test_measured_slopes_match_predictions(cfg, seed):
    """Every delta's fitted slope is within 0.15 of the recursion's exponent (bounded dynamics, 4 steps)."""
    opt, init, a, b = cfg
    from fractions import Fraction

    df = width_sweep(WIDTHS, 4, seeds=(seed, seed + 1), optimizer=opt, init=init, a=float(Fraction(str(a))), b=float(Fraction(str(b))))
    cmp = compare(fit_exponents(df), predict_exponents(opt, init, a, b, 4), tol=0.15)
    assert cmp.ok.all(), cmp[~cmp.ok][["term", "step", "slope", "gamma_float"]].to_string()


@pytest.mark.parametrize("wrong", [("gd", 1, -1, 0), ("gd", 1, 0, 0), ("signsgd", 1, -1, -1)])
def test_wrong_exponents_fail_loudly(wrong):
    """Measured under (gd, Init[1], -1/2, -1/2), compared with another configuration's prediction: mismatch."""
    df = width_sweep(WIDTHS, 4, seeds=(0,), optimizer="gd", init=1, a=-0.5, b=-0.5)
    cmp = compare(fit_exponents(df), predict_exponents(*wrong, 4), tol=0.15)
    assert not cmp.ok.all()


def test_gd_deltas_match_closed_forms():
    """delta1 = -eta_a b^2 U ||x||^2, delta2 = -eta_b (a^T x)^2 U, delta3 = eta_a eta_b U^2 b (a^T x) ||x||^2 (GD)."""
    df = simulate_toy([50], 3, optimizer="gd", init=2, a=-1, b=0, c_a=0.3, c_b=0.2)
    n, eta_a, eta_b = 50, 0.3 / 50, 0.2
    prev = {"b": 1.0, "s": 0.0}
    for row in df.itertuples():
        U = prev["b"] * prev["s"] - 1.0
        assert math.isclose(row.delta1, -eta_a * prev["b"] ** 2 * U * n, rel_tol=RTOL, abs_tol=1e-15)
        assert math.isclose(row.delta2, -eta_b * prev["s"] ** 2 * U, rel_tol=RTOL, abs_tol=1e-15)
        assert math.isclose(row.delta3, eta_a * eta_b * U**2 * prev["b"] * prev["s"] * n, rel_tol=RTOL, abs_tol=1e-15)
        assert math.isclose(row.df, row.delta1 + row.delta2 + row.delta3, rel_tol=RTOL, abs_tol=1e-15)
        prev = {"b": row.b_t, "s": row.aTx}


def test_bad_input():
    with pytest.raises(ValueError, match="widths"):
        width_sweep((0, 64), 2)
    with pytest.raises(ValueError, match="widths"):
        simulate_toy([-4], 2)
    with pytest.raises(ValueError, match="optimizer"):
        simulate_toy([8], 2, optimizer="lion")
    with pytest.raises(ValueError, match="init"):
        simulate_toy([8], 2, init=3)
    with pytest.raises(ValueError, match="c_a"):
        simulate_toy([8], 2, c_a=0)
    with pytest.raises(ValueError, match="init"):
        predict_exponents("gd", 0, -1, 0, 2)


def test_layer_first_steps():
    """lora_plus.thm1_layer: the Sec. 4 layer follows the Thm 1 exponents at steps 1-2 (SignSGD/Adam, LoRA+ rates)."""
    for opt, init in (("signsgd", 1), ("adam", 1), ("adam", 2)):
        df = width_sweep(WIDTHS, 2, seeds=(0, 1), optimizer=opt, init=init, a=-1.0, b=0.0, model="layer")
        cmp = compare(fit_exponents(df), predict_exponents(opt, init, -1, 0, 2), tol=0.15)
        assert cmp.ok.all(), cmp[~cmp.ok].to_string()
    with pytest.raises(ValueError, match="model"):
        width_sweep(WIDTHS, 1, model="mlp")


def test_exploding_run_does_not_raise():
    df = simulate_toy([4096], 10, optimizer="gd", init=2, a=-0.5, b=-0.5)
    assert len(df) == 10 and not df.loss.iloc[:2].isna().any()
