"""proofs_checks/limits_lemma21.py (limits.lemma2.1, limits.thmF.1): the identities hold, and the checks fail on plausible wrong forms."""
from __future__ import annotations

import pytest
import sympy as sp

from proofs_checks import ProofCheckFailed
from proofs_checks import limits_lemma21 as pc


def test_lemma21_holds():
    assert pc.check_lemma21_vec_kron()["shapes"]


def test_lemma21_column_major_order_fails():
    """B (x) A is the identity for column-major vec: with row-major vec it must fail."""
    with pytest.raises(ProofCheckFailed, match="Lemma 2.1"):
        pc.check_lemma21_vec_kron(shapes=((2, 2, 2, 2),), kron=lambda A, B: pc.kron(B, A))


@pytest.mark.parametrize("adapt", ["qv", "qkv"])
def test_thmF1_count_holds(adapt):
    out = pc.check_thmF1_count(adapt)
    assert out["L2d_coefficient"] == (5 if adapt == "qv" else 6)


def test_thmF1_count_with_a_dense_normalizer_fails():
    """An L x L diagonal normalizer applied as a product adds an L^3 monomial outside the theorem's form."""
    L, d, r = sp.symbols("L d r", positive=True)

    def products(adapt):
        return pc.closed_form_products(adapt) + [("diag(1/D) @ E", (L, L, L))]

    with pytest.raises(ProofCheckFailed, match="Thm F.1"):
        pc.check_thmF1_count("qv", products=products)
