"""Runs proofs_checks/limits_polynomial.py (limits.rank_count, limits.degree_bound, limits.thm3.1)."""
from __future__ import annotations

import sympy as sp

from proofs_checks import limits_polynomial as pc


def test_multinomial_identity():
    assert pc.check_multinomial_identity(d=2, g=3)["rank"] == 10
    assert pc.check_multinomial_identity(d=3, g=2)["rank"] == 10


def test_rank_count():
    assert pc.check_rank_count(max_d=5, max_g=5)["pairs_checked"] == 30


def test_taylor_remainder_bound():
    assert pc.check_taylor_remainder(g_max=10, Rs=(0.5, 2.0))["max_measured_over_bound"] <= 1.0


def test_rowwise_kronecker():
    assert pc.check_rowwise_kronecker(L=3, k1=2, k2=2)["L"] == 3


def test_wrong_multinomial_weights_are_caught():
    """Dropping the |alpha|!/alpha! weights breaks the identity (the check can fail)."""
    q0, q1, k0, k1 = sp.symbols("q0 q1 k0 k1")
    lhs = (q0 * k0 + q1 * k1) ** 2
    wrong = (q0 * k0) ** 2 + (q1 * k1) ** 2 + q0 * q1 * k0 * k1  # should be 2 q0 q1 k0 k1
    assert sp.expand(lhs - wrong) != 0


def test_normalizer_perturbation():
    """limits.thm3.1: the softmax row error bound delta / (1 - delta) behind info.error_bound."""
    out = pc.check_normalizer_perturbation(L=3)
    assert 0 < out["max_sum_over_bound"] <= 1.0
