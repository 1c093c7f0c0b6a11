"""proofs_checks/limits_polynomial.py (limits.rank_count, limits.degree_bound, limits.thm3.1): the identities hold,
and each check raises ProofCheckFailed when handed a plausible wrong formula or wrong code under check."""
from __future__ import annotations

import math

import pytest

from proofs_checks import ProofCheckFailed
from proofs_checks import limits_polynomial as pc


@pytest.mark.parametrize("d,g", [(2, 3), (3, 2)])
def test_multinomial_identity(d, g):
    assert pc.check_multinomial_identity(d=d, g=g)["rank"] == math.comb(g + d, d)


def test_multinomial_without_weights_fails():
    """Dropping the |alpha|!/alpha! weights breaks the identity inside the check."""
    with pytest.raises(ProofCheckFailed, match="multinomial identity"):
        pc.check_multinomial_identity(d=2, g=2, weight=lambda j, counts: 1)


def test_rank_count():
    pc.check_rank_count(max_d=5, max_g=5)


def test_rank_count_catches_as23_count(monkeypatch):
    """The toolkit's feature_rank replaced by AS23's looser C(2(g + d), 2g) is caught (the check reads the code's rank)."""
    from lora_theory.limits import features

    monkeypatch.setattr(features, "feature_rank", lambda g, d: math.comb(2 * (g + d), 2 * g))
    with pytest.raises(ProofCheckFailed, match="rank at d"):
        pc.check_rank_count(max_d=3, max_g=3)


def test_taylor_remainder_bound():
    assert pc.check_taylor_remainder(g_max=10, Rs=(0.5, 2.0))["max_measured_over_bound"] <= 1.0


def test_taylor_remainder_catches_a_wrong_degree(monkeypatch):
    """exp_polynomial(method='taylor') returning one degree too few breaks the Lagrange bound."""
    from lora_theory.limits import polynomial

    orig = polynomial.exp_polynomial
    monkeypatch.setattr(polynomial, "exp_polynomial", lambda R, eps=None, **kw: orig(R, eps, **{**kw, "degree": max(kw.get("degree", 1) - 1, 0)}))
    with pytest.raises(ProofCheckFailed, match="Lagrange bound"):
        pc.check_taylor_remainder(g_max=6, Rs=(1.0,))


def test_rowwise_kronecker():
    pc.check_rowwise_kronecker(L=3, k1=2, k2=2)


def test_rowwise_kronecker_catches_pairing_columns_instead_of_all_pairs():
    """A 'Kronecker' that pairs column a of A with column a of B only (a Hadamard product, repeated) breaks the identity."""
    import sympy as sp

    def wrong(A, B):
        return sp.Matrix(A.rows, A.cols * B.cols, lambda i, j: A[i, j % A.cols] * B[i, j % B.cols])

    with pytest.raises(ProofCheckFailed, match="Kronecker"):
        pc.check_rowwise_kronecker(L=2, k1=2, k2=2, rowkron=wrong)


def test_normalizer_perturbation():
    """limits.thm3.1: the softmax row error bound delta / (1 - delta) behind info.error_bound, nearly attained."""
    out = pc.check_normalizer_perturbation(L=3)
    assert 0.5 < out["max_sum_over_bound"] <= 1.0


def test_normalizer_perturbation_catches_a_too_small_bound():
    """The bound delta (without the 1 / (1 - delta)) is violated at the extreme sign patterns the check tries."""
    with pytest.raises(ProofCheckFailed, match="above the bound"):
        pc.check_normalizer_perturbation(L=2, bound=lambda delta: delta)
