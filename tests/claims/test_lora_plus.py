"""Tests for lora_theory.claims.lora_plus: the checks hold, and fail loudly with wrong exponents.

Claims ``lora_plus.prop1``, ``lora_plus.prop2``, ``lora_plus.thm1``, ``lora_plus.ratio``.
"""
from __future__ import annotations

from fractions import Fraction

import pytest

from lora_theory.claims import get_claim
from lora_theory.claims.lora_plus import PROP1_CONFIGS, PROP2_CONFIGS, THM1_CONFIGS, check_configs


@pytest.mark.parametrize("cid", ["lora_plus.prop1", "lora_plus.prop2", "lora_plus.thm1"])
def test_scaling_claims_hold_quick(cid):
    m = get_claim(cid).check(True)
    assert m.holds, m.summary
    assert "mismatches" not in m.summary


def _half_shift(cfg):
    opt, init, a, b = cfg
    return opt, init, Fraction(str(a)) + Fraction(1, 2), Fraction(str(b)) - Fraction(1, 2)


def _swap_rates(cfg):
    """eta_A <-> eta_B exponents (LoRA+ read backwards); equal-rate configurations get LoRA+ rates."""
    opt, init, a, b = cfg
    return (opt, init, b, a) if str(a) != str(b) else (opt, init, -1, 0)


def _other_init(cfg):
    opt, init, a, b = cfg
    return opt, 3 - init, a, b


def _gd_vs_adam(cfg):
    opt, init, a, b = cfg
    return ("adam" if opt == "gd" else "gd"), init, a, b


@pytest.mark.parametrize("name,configs", [("prop1", PROP1_CONFIGS), ("prop2", PROP2_CONFIGS), ("thm1", THM1_CONFIGS)])
@pytest.mark.parametrize("wrong", [_half_shift, _swap_rates, _other_init])
def test_wrong_exponents_fail_the_claim_check_loudly(name, configs, wrong):
    """Every claim configuration, compared with a wrong prediction: the check says 'fails' and names mismatches."""
    from lora_theory.claims.lora_plus import _summary

    for cfg in configs:
        ok, table = check_configs([cfg], quick=True, predict_with=wrong)
        assert not ok, (name, cfg, wrong.__name__)
        assert "mismatches" in _summary(table)


def test_lora_plus_rates_give_the_same_exponents_for_gd_and_adam():
    """Not a wrong prediction: at eta_A = Theta(1/n), eta_B = Theta(1) the GD (Prop. 2) and Adam-type (Thm 1) recursions coincide."""
    ok, _ = check_configs(PROP2_CONFIGS, quick=True, predict_with=_gd_vs_adam)
    assert ok


@pytest.mark.slow
def test_ratio_claim_reports_optimum_and_gap():
    m = get_claim("lora_plus.ratio").check(True)
    assert m.holds, m.summary
    f = m.figures
    assert f["best_ratio"] == pytest.approx(f["best_eta_B"] / f["best_eta_A"]) and f["best_ratio"] >= 8
    assert f["gap"] == pytest.approx(f["best_equal_rate_test_loss"] / f["best_test_loss"]) and f["gap"] > 1
