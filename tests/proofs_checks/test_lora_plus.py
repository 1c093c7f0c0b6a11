"""Runs proofs_checks/lora_plus.py (lora_plus.prop1, prop2, thm1)."""
from __future__ import annotations

from fractions import Fraction

from lora_theory.lora_plus.exponents import predict_exponents
from proofs_checks import lora_plus as pc


def test_prop1():
    out = pc.check_prop1()
    assert out["c"] == "-1/2" and out["init2_c"] == "-1/2" and out["init2_gamma_f1"] == "1/2"


def test_prop2():
    assert pc.check_prop2()["solution"] == {"c_a": -1, "c_b": 0}


def test_thm1():
    assert pc.check_thm1()["log_n_ratio"] == 1


def test_recursion_is_exact_rational():
    df = predict_exponents("gd", 2, "-1/2", "-1/2", 3)
    g = df[(df.step == 2) & (df.term == "delta3")].gamma.iloc[0]
    assert g == Fraction(3, 2) and isinstance(g, Fraction)
