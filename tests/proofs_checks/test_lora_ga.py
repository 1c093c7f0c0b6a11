"""Runs proofs_checks/lora_ga.py (lora_ga.thm3.1, lora_ga.sign_invariance) and checks it can fail."""
from __future__ import annotations

import sympy as sp

from proofs_checks import lora_ga as pc


def test_one_step_expansion():
    assert pc.check_one_step_expansion(m=3, n=2, r=1)["r"] == 1


def test_projection_identity_all_directions():
    assert pc.check_projection_identity(m=5, n=4, r=1)["directions"] == ["ArB2r", "A2rBr", "ArBr", "random"]


def test_sign_invariance():
    pc.check_sign_invariance()


def test_overlapping_indices_break_the_identity():
    """A and B from the same singular vector (I_A = I_B) do not give c^2 G_2r: the check is not vacuous."""
    U = pc.cayley_orthogonal(4, 0)[:, :3]
    V = pc.cayley_orthogonal(3, 1)
    sig = sp.symbols("s0:3", positive=True)
    G = U * sp.diag(*sig) * V.T
    A = V[:, 0].T
    B = U[:, 0]
    G2 = U[:, :2] * sp.diag(*sig[:2]) * V[:, :2].T
    assert (G * A.T * A + B * B.T * G - G2).expand() != sp.zeros(4, 3)
