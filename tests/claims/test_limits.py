"""Tests of the references inside lora_theory.claims.limits (claims limits.degree_bound, limits.remark4.2, limits.threshold).

A check is only as good as its reference: these test the references against independent computations.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numpy.polynomial import chebyshev

from lora_theory.claims import limits as cl
from lora_theory.limits import exact, instance, polynomial
from lora_theory.tolerances import max_rel_error


def _additive_error(R: float, g: int) -> float:
    """sup_{x in [0, 2R]} |p_g(x) - e^x| for the degree-g Chebyshev interpolant of e^x on [0, 2R] (float64, Chebyshev basis)."""
    c = chebyshev.chebinterpolate(lambda t: np.exp(R * (t + 1)), g)
    t = np.cos(np.linspace(0, math.pi, 4001))
    return float(np.max(np.abs(chebyshev.chebval(t, c) - np.exp(R * (t + 1)))))


@pytest.mark.parametrize("R,eps", list(itertools.product((0.1, 1.0, 4.0), (1e-3, 1e-8))))
def test_reference_degree_brackets_the_interpolant(R, eps):
    """limits.degree_bound's reference: the interpolant of degree hi + 1 reaches eps (interpolation loses at most a factor 2 to the
    truncation the bracket's hi is computed from); below lo even the interpolant misses eps; lo <= hi <= lo + 2."""
    lo, hi = cl.reference_degree(R, eps)
    assert lo <= hi <= lo + 2
    assert _additive_error(R, hi + 1) <= eps
    if lo >= 1:
        assert _additive_error(R, lo - 1) > eps


def test_reference_degree_relative_vs_additive():
    """Relative error on e^x >= 1 is implied by the same additive error: the relative bracket is never above the additive one."""
    for R, eps in itertools.product((0.5, 2.0, 8.0, 32.0), (1e-2, 1e-6, 1e-12)):
        rlo, rhi = cl.reference_degree(R, eps, "relative")
        alo, ahi = cl.reference_degree(R, eps, "additive")
        assert rlo <= alo and rlo <= rhi


def test_paper_order_is_the_toolkits_formula():
    """The check's order (written from the paper) and the toolkit's degree_order agree: two independent writings of one formula."""
    for R, eps in itertools.product((0.0, 0.05, 0.5, 2.0, 16.0, 64.0), (1e-1, 1e-3, 1e-8, 1e-15)):
        assert cl.paper_order(R, eps) == pytest.approx(polynomial.degree_order(R, eps))


def test_alternative_laws_differ_from_the_paper():
    """Each alternative law is a different function of (R, eps): otherwise 'separates from it' would be vacuous."""
    pts = list(itertools.product((0.1, 4.0, 64.0), (1e-2, 1e-12)))
    for name, law in cl.ALTERNATIVE_LAWS.items():
        ratios = {round(law(R, e) / cl.paper_order(R, e), 6) for R, e in pts}
        assert len(ratios) > 1, name


def test_full_from_partial_keeps_W_K_and_the_QV_gradients():
    """limits.remark4.2's embedding: a genuine key adapter, W_K unchanged, the Q and V gradients unchanged, dL/dA_K != 0."""
    P = instance.make_instance(64, 4, 2, adapt="qv", attention="cross", bound=1.0, seed=3)
    F = cl._full_from_partial(P, seed=1)
    assert F.adapt == ("q", "k", "v") and float(F.B["k"].abs().max()) > 0
    assert max_rel_error(F.weight("k"), P.weight("k")) < 1e-14 and max_rel_error(F.pretrained("k"), P.pretrained("k")) > 1e-3
    gP, gF = exact.exact_gradients(P), exact.exact_gradients(F)
    assert all(max_rel_error(gF[k], gP[k]) < 1e-12 for k in gP)
    assert float(gF["A_k"].abs().max()) > 0


def test_hard_shape_measures_the_lemma():
    """_hard_shape on AS23's instance: norms at kappa sqrt(ln L), scores in [0, B'], half of each row at B', V binary;
    and on a random instance it does not report that shape."""
    L = 256
    s = cl._hard_shape(instance.hard_instance(L, 4, 2, kappa=1.5), L, 1.5)
    assert s["Q_max_over_gamma"] == pytest.approx(1) and s["max_score_over_Bp"] == pytest.approx(1)
    assert s["min_score_over_Bp"] >= 0 and s["min_row_fraction_at_Bp"] >= 0.5 and s["V_binary"] == 1.0
    r = cl._hard_shape(instance.make_instance(L, 4, 2, bound=1.5 * math.sqrt(math.log(L))), L, 1.5)
    assert r["min_score_over_Bp"] < 0 or r["min_row_fraction_at_Bp"] < 0.5


def test_interpolant_error_matches_the_toolkit_where_the_power_basis_is_exact():
    """The threshold check's reference evaluates in the Chebyshev basis; at small degree it agrees with the toolkit's power basis."""
    for R, g in ((0.5, 3), (2.0, 7), (4.0, 10)):
        assert cl._interpolant_rel_error(R, g) == pytest.approx(polynomial.exp_polynomial(R, degree=g).rel_error, rel=1e-3)


def test_thm31_decomposition_parts():
    """limits.thm3.1 / thmA.1: part (b) (the rank from the degree bracket to 2^512) holds on its own and tells the boundary apart;
    part (c) measures the theorem's max-entry error (<= eps) on a small case; part (a)'s fit recovers the exponent of a synthetic
    linear cost and flags a quadratic one."""
    from lora_theory.limits import scaling

    figs, margins, _ = cl._rank_evaluation()
    assert all(m.ok for m in margins.values()), {k: str(m) for k, m in margins.items() if not m.ok}
    assert margins["boundary_contrast_rises"].measured > 0
    figs, margins, _ = cl._accuracy("qv", True)
    assert margins["max_entry_err_over_eps"].ok and margins["refused_cases"].measured == 0
    assert all(r["max_abs_err"] <= r["eps"] for r in figs["accuracy"])
    L = np.repeat(2.0 ** np.arange(10, 15), 2)
    k = np.tile([495.0, 1820.0], 5)
    for e_true in (1.0, 2.0):
        e, _ = scaling.fixed_rank_exponent(L, k, 2e-3 + 1e-12 * k * L**e_true)
        assert (1 - cl.EXP_TOL <= e <= 1 + cl.EXP_TOL) == (e_true == 1.0)


def test_lemma21_identity_and_kron():
    """limits.lemma2.1: the check holds, and the column-major Kronecker order in approx._kron is caught."""
    from lora_theory.claims import run_check

    assert cl._lemma21(True).holds
    assert run_check("limits.lemma2.1", quick=True, control="kron_swapped")["verdict"] == "fails"


def test_thmF1_count_and_band():
    """limits.thmF.1: torch's FlopCounterMode count of exact_gradients equals the symbolic count of the closed form's products
    (proofs_checks.limits_lemma21) exactly, for partial and full adaptation."""
    import sympy as sp

    from proofs_checks import limits_lemma21 as pc

    Ls, ds, rs = sp.symbols("L d r", positive=True)
    for L, d, r, adapt in ((64, 4, 2, "qv"), (96, 6, 3, "qkv"), (128, 16, 4, "qkv")):
        inst = instance.make_instance(L, d, r, adapt=adapt, seed=1)
        counted = cl._matmul_count(lambda inst=inst: exact.exact_gradients(inst))
        sym = float(sum(a * b * c for _, (a, b, c) in pc.closed_form_products(adapt)).subs({Ls: L, ds: d, rs: r}))
        assert counted == sym, (L, d, r, adapt, counted, sym)


def test_thm41_embedding_is_exact():
    """limits.thm4.1_regime's embedding of a hard instance through a block of A_Q: norms = Gamma, Y = 0, r < d, same dL/dS."""
    L = 256
    e = cl._thm41_embedding(instance.hard_instance(L, 4, 2, kappa=1.5), L, 1.5)
    assert e["Xk_WkStar_over_Gamma"] == pytest.approx(1.0) and e["lora_Q_over_Gamma"] == pytest.approx(1.0)
    assert e["Y_nonzero"] == 0 and e["r_minus_d"] < 0 and e["dS_err"] < 1e-12
    e = cl._thm41_embedding(instance.hard_instance(L, 4, 2, kappa=1.5, zero_target=False), L, 1.5)
    assert e["Y_nonzero"] > 0
