"""proofs_checks/lora_ga.py (lora_ga.thm3.1, toolkit.sign_invariance): the identities hold, and each check raises
ProofCheckFailed when handed a plausible wrong formula or wrong code under check."""
from __future__ import annotations

import pytest

from proofs_checks import ProofCheckFailed
from proofs_checks import lora_ga as pc


def test_one_step_expansion():
    pc.check_one_step_expansion(m=3, n=2, r=1)


def test_one_step_expansion_without_second_order_fails():
    with pytest.raises(ProofCheckFailed, match="one-step expansion"):
        pc.check_one_step_expansion(claimed=lambda lr, eta, A, B, G: -lr * eta**2 * (G * A.T * A + B * B.T * G))


def test_projection_identity_all_directions():
    assert pc.check_projection_identity(m=5, n=4, r=1)["directions"] == ["ArB2r", "A2rBr", "ArBr", "random"]


@pytest.mark.parametrize("wrong", [lambda r, direction: (list(range(r)), list(range(r))),  # I_A = I_B (PEFT's "random")
                                   lambda r, direction: (list(range(r)), list(range(r + 1, 2 * r + 1)))])  # off by one
def test_projection_identity_catches_a_wrong_split(wrong):
    with pytest.raises(ProofCheckFailed, match="projection identity fails"):
        pc.check_projection_identity(m=5, n=4, r=1, split=wrong)


def test_projection_identity_reads_the_toolkit_split(monkeypatch):
    """The default split is the toolkit's split_indices (the code under check): corrupting it is caught."""
    from lora_theory.lora_ga import init

    monkeypatch.setattr(init, "split_indices", lambda r, direction, seed=None: (list(range(r)), list(range(r))))
    with pytest.raises(ProofCheckFailed):
        pc.check_projection_identity(m=4, n=3, r=1)


def test_sign_invariance():
    pc.check_sign_invariance()


def test_sign_invariance_catches_an_odd_update():
    """An update linear in A (G A^T B^T G, the second-order term) changes with the signs."""
    with pytest.raises(ProofCheckFailed, match="sign flip"):
        pc.check_sign_invariance(step=lambda G, A, B: G * A.T * B.T * G)
