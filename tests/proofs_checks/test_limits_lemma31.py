"""proofs_checks/limits_lemma31.py (limits.lemma3.1, limits.lemma3.2, limits.grad_closed_form): the identities hold,
and each check raises ProofCheckFailed when handed a plausible wrong formula."""
from __future__ import annotations

import pytest

from proofs_checks import ProofCheckFailed
from proofs_checks import limits_lemma31 as pc


def test_lemma31_exact_identity():
    pc.check_lemma31_score_gradient(L=3, d=2)


def test_lemma31_without_part_iii_fails():
    """Dropping Part III (the diag(rho) f term) must break the exact identity inside the check itself."""
    with pytest.raises(ProofCheckFailed, match="Lemma 3.1 fails"):
        pc.check_lemma31_score_gradient(L=2, d=1, p_formula=lambda f, q, rho, i, j: f[i, j] * q[i, j])


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
def test_lemma32_chain_identity(adapt):
    pc.check_lemma32_chain(adapt=adapt)


@pytest.mark.parametrize("wrong", [lambda s, A, B, G: (s**2 * B.T * G, s**2 * G * A.T),  # (alpha/r)^2
                                   lambda s, A, B, G: (s * B.T * G.T, s * G.T * A.T)])  # the printed transpose slip
def test_lemma32_wrong_chain_fails(wrong):
    with pytest.raises(ProofCheckFailed, match="dL/dA"):
        pc.check_lemma32_chain(adapt="qv", chain=wrong)


def test_full_symbolic_gradient_partial():
    assert pc.check_full_gradient(adapt="qv", points=1)["max_rel_diff"] < 1e-40


def test_full_symbolic_gradient_catches_untransposed_key_side():
    """G_K = beta X_K^T p Q (p not transposed) differs from the symbolic derivative (full adaptation)."""
    def wrong(beta, Xq, Xk, Xv, p, f, c, Q, K):
        return {"q": beta * Xq.T * p * K, "k": beta * Xk.T * p * Q, "v": Xv.T * f.T * c}

    with pytest.raises(ProofCheckFailed, match="closed form differs"):
        pc.check_full_gradient(L=2, d=1, r=1, adapt="qkv", points=1, digits=30, weight_grads=wrong)


@pytest.mark.slow
def test_full_symbolic_gradient_full():
    assert pc.check_full_gradient(adapt="qkv", points=2)["max_rel_diff"] < 1e-40
