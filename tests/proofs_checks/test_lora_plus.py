"""proofs_checks/lora_plus.py (lora_plus.prop1, prop2, thm1): the exponent algebra holds, and a corrupted
recursion in the toolkit (the code under check) makes each check raise ProofCheckFailed."""
from __future__ import annotations

from fractions import Fraction

import pytest

from lora_theory.lora_plus import exponents
from proofs_checks import ProofCheckFailed
from proofs_checks import lora_plus as pc


def test_prop1():
    out = pc.check_prop1()
    assert out["c"] == "-1/2" and out["init2_c"] == "-1/2" and out["init2_gamma_f1"] == "1/2"


def test_prop2():
    assert pc.check_prop2()["solution"] == {"c_a": -1, "c_b": 0}


def test_thm1():
    assert pc.check_thm1()["log_n_ratio"] == 1


@pytest.mark.parametrize("check", [pc.check_prop1, pc.check_prop2, pc.check_thm1])
def test_a_shifted_recursion_is_caught(monkeypatch, check):
    """predict_exponents with eta_A's exponent shifted by +1/2 contradicts the algebra in every check."""
    orig = exponents.predict_exponents
    monkeypatch.setattr(exponents, "predict_exponents", lambda opt, init, a, b, steps: orig(opt, init, Fraction(a) + Fraction(1, 2), b, steps))
    with pytest.raises(ProofCheckFailed, match="predict_exponents"):
        check()


def test_recursion_is_exact_rational():
    df = exponents.predict_exponents("gd", 2, "-1/2", "-1/2", 3)
    g = df[(df.step == 2) & (df.term == "delta3")].gamma.iloc[0]
    assert g == Fraction(3, 2) and isinstance(g, Fraction)
