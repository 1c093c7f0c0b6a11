"""Runs the sympy proof checks of proofs_checks/limits_lemma31.py (limits.lemma3.1, limits.lemma3.2,
limits.grad_closed_form), and makes sure they can fail."""
from __future__ import annotations

import pytest
import sympy as sp

from proofs_checks import limits_lemma31 as pc


def test_lemma31_exact_identity():
    assert pc.check_lemma31_score_gradient(L=3, d=2)["entries_checked"] == 9


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
def test_lemma32_chain_identity(adapt):
    assert pc.check_lemma32_chain(adapt=adapt)["gradients_checked"] == 2 * len(adapt)


def test_full_symbolic_gradient_partial():
    res = pc.check_full_gradient(adapt="qv", points=1)
    assert res["max_rel_diff"] < 1e-40


@pytest.mark.slow
def test_full_symbolic_gradient_full():
    assert pc.check_full_gradient(adapt="qkv", points=2)["max_rel_diff"] < 1e-40


def test_a_wrong_formula_is_caught():
    """Dropping Part III (the diag(rho) f term) must break the exact identity."""
    E = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"e{i}{j}", positive=True))
    V = sp.Matrix(2, 1, lambda i, j: sp.Symbol(f"v{i}", real=True))
    f = sp.Matrix(2, 2, lambda i, j: E[i, j] / (E[i, 0] + E[i, 1]))
    c = f * V - sp.Matrix([1, 2])
    loss = sum(x**2 for x in c) / 2
    q = c * V.T
    wrong = f[0, 1] * q[0, 1]  # Part II only
    assert sp.cancel(E[0, 1] * sp.diff(loss, E[0, 1]) - wrong) != 0
