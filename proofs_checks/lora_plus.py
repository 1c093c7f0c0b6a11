"""Symbolic checks for LoRA+ (claims ``lora_plus.prop1``, ``lora_plus.prop2``, ``lora_plus.thm1``).

The exponent recursions are solved with symbolic learning-rate exponents (sympy, exact):

1. :func:`check_prop1` (GD, one shared exponent c, Init[1]): at step 2, delta1 = 3c + 1 and
   delta2 = c; efficiency (delta1 = delta2 = 0) has no solution; a Theta(1) update of the feature
   a^T x (gamma = 2c + 1 = 0) forces c = -1/2, at which every delta is Theta(n^{-1/2})
   (vanishing); with Init[2], delta1 = c + 1 and delta2 = 3c + 2 at t = 2 (again no shared
   solution), B's update 2c + 1 = 0 forces c = -1/2, and then gamma[f_1] = 1/2 (exploding).
2. :func:`check_prop2` (GD, exponents c_a, c_b, Init[1]): delta1 = delta2 = 0 at t = 2 is the
   linear system c_a + 2 c_b + 1 = 0, c_b = 0, with the unique solution c_b = 0, c_a = -1;
   then delta3 = 0 too, and the recursion is stationary (all Theta(1) for t > 1).
3. :func:`check_thm1` (SignSGD / Adam): delta1 = c_b + c_a + 1 and delta2 = c_b at t = 2; with
   c_a = c_b = c efficiency needs 2c + 1 = 0 and c = 0 at once (no solution); efficiency forces
   c_a + c_b = -1 and stability of B (delta2 = c_b = 0) gives c_b = 0, c_a = -1: eta_B / eta_A = n.
Each check also evaluates the toolkit's ``predict_exponents`` (the code under check, reached through
its module so a test can corrupt it) at the solution and compares; a mismatch raises
:class:`~proofs_checks.ProofCheckFailed` (also under ``python -O``).
"""
from __future__ import annotations

from fractions import Fraction

import sympy as sp

from lora_theory.lora_plus import exponents

from . import require

__all__ = ["check_prop1", "check_prop2", "check_thm1", "run_all"]


def _pred(opt, init, a, b, step, term):
    df = exponents.predict_exponents(opt, init, a, b, step)
    return df[(df.step == step) & (df.term == term)].gamma.iloc[0]


def check_prop1() -> dict:
    c = sp.Symbol("c", real=True)
    # GD, Init[1]: t = 1 moves only b (b0 = 0): gamma[b_1] = c (a^T x = Theta(1), U = Theta(1)).
    # t = 2: gamma[Delta s] = c + gamma[b] + 1, delta1 = gamma[b] + gamma[Delta s] = 3c + 1.
    g_b = c
    d1 = g_b + (c + g_b + 1)  # = 3c + 1
    d2 = c + 0  # gamma[Delta b] + gamma[a^T x]
    require(sp.solve([sp.Eq(d1, 0), sp.Eq(d2, 0)], c) in ([], {}), "Prop. 1, Init[1]: a shared c makes delta1 and delta2 both Theta(1)")  # no shared c makes both Theta(1)
    # the feature update of a, gamma[Delta s] = 2c + 1, is Theta(1) only at c = -1/2
    (c_star,) = sp.solve(sp.Eq(2 * c + 1, 0), c)
    require(c_star == sp.Rational(-1, 2), "Prop. 1: a Theta(1) feature update should force c = -1/2")
    require(d1.subs(c, c_star) == sp.Rational(-1, 2) and d2.subs(c, c_star) == sp.Rational(-1, 2), "Prop. 1, Init[1]: at c = -1/2 delta1, delta2 should be Theta(n^-1/2)")
    require(_pred("gd", 1, "-1/2", "-1/2", 2, "delta1") == Fraction(-1, 2), "predict_exponents: GD, Init[1], c = -1/2: gamma[delta1] at step 2 should be -1/2")
    require(_pred("gd", 1, "-1/2", "-1/2", 2, "f") == Fraction(-1, 2), "predict_exponents: GD, Init[1], c = -1/2: gamma[f] at step 2 should be -1/2 (vanishing)")
    # Init[2]: b0 = Theta(1), a0 = 0 (U = Theta(1) while f is bounded). t = 1: only a moves,
    # gamma[s_1] = gamma[Delta s] = c + 1 (= delta1). t = 2: gamma[Delta b] = c + gamma[s_1] = 2c + 1,
    # delta1 = c + 1, delta2 = gamma[Delta b] + gamma[s_1] = 3c + 2.
    s1 = c + 1
    d1_2, d2_2, db = c + 1, (c + s1) + s1, c + s1
    require(sp.solve([sp.Eq(d1_2, 0), sp.Eq(d2_2, 0)], c) in ([], {}), "Prop. 1, Init[2]: a shared c makes delta1 and delta2 both Theta(1)")  # no shared c: inefficient
    (c_b_learns,) = sp.solve(sp.Eq(db, 0), c)  # B's own update Theta(1) forces c = -1/2 here too
    require(c_b_learns == sp.Rational(-1, 2), "Prop. 1, Init[2]: a Theta(1) update of B should force c = -1/2")
    g_f1 = 0 + s1.subs(c, c_b_learns)  # f_1 = b_0 (a_1^T x): gamma = 1/2 > 0, the output explodes
    require(g_f1 == sp.Rational(1, 2), "Prop. 1, Init[2]: gamma[f_1] should be 1/2 (exploding)")
    require(_pred("gd", 2, "-1/2", "-1/2", 1, "delta1") == Fraction(1, 2) and _pred("gd", 2, "-1/2", "-1/2", 1, "f") == Fraction(1, 2), "predict_exponents: GD, Init[2], c = -1/2: gamma[delta1] and gamma[f] at step 1 should be 1/2")
    require(_pred("gd", 2, "-1/2", "-1/2", 2, "f") > Fraction(1, 2), "predict_exponents: GD, Init[2], c = -1/2: gamma[f] should keep growing at step 2")  # and U = f - y feeds it back: it keeps growing
    return {"c": str(c_star), "init1_delta": "-1/2", "init2_c": str(c_b_learns), "init2_gamma_f1": str(g_f1)}


def check_prop2() -> dict:
    ca, cb = sp.symbols("c_a c_b", real=True)
    g_b = cb  # after step 1 (Init[1]): Delta b = Theta(n^{c_b})
    d1 = g_b + (ca + g_b + 1)  # c_a + 2 c_b + 1
    d2 = cb
    sol = sp.solve([sp.Eq(d1, 0), sp.Eq(d2, 0)], [ca, cb], dict=True)
    require(sol == [{ca: -1, cb: 0}], f"Prop. 2: the efficiency system should have the unique solution c_a = -1, c_b = 0, got {sol}")
    d3 = cb + (ca + g_b + 1)
    require(d3.subs(sol[0]) == 0, "Prop. 2: delta3 should be Theta(1) at c_a = -1, c_b = 0")
    for t in (2, 3, 4):
        for term in ("delta1", "delta2", "delta3"):
            require(_pred("gd", 1, -1, 0, t, term) == 0, f"predict_exponents: GD, Init[1], LoRA+ rates: gamma[{term}] at step {t} should be 0")
    return {"solution": {"c_a": -1, "c_b": 0}}


def check_thm1() -> dict:
    ca, cb, c = sp.symbols("c_a c_b c", real=True)
    d1 = cb + ca + 1  # gamma[B_{t-1}] (= c_b after one step) + gamma[Delta(A z)] (= c_a + 1)
    d2 = cb
    require(sp.solve([sp.Eq(d1.subs({ca: c, cb: c}), 0), sp.Eq(d2.subs(cb, c), 0)], c) in ([], {}), "Thm 1: equal rates c_a = c_b should not be efficient")
    sol = sp.solve([sp.Eq(d1, 0), sp.Eq(d2, 0)], [ca, cb], dict=True)
    require(sol == [{ca: -1, cb: 0}], f"Thm 1: efficiency should force c_a = -1, c_b = 0, got {sol}")
    require(sp.simplify((cb - ca).subs(sol[0])) == 1, "Thm 1: log_n(eta_B / eta_A) should be 1")  # log_n(eta_B / eta_A) = 1: ratio Theta(n)
    for opt in ("signsgd", "adam"):
        for t in (2, 3):
            require(all(_pred(opt, 1, -1, 0, t, term) == 0 for term in ("delta1", "delta2", "delta3")), f"predict_exponents: {opt}, Init[1], LoRA+ rates: every delta at step {t} should be Theta(1)")
    return {"solution": {"c_a": -1, "c_b": 0}, "log_n_ratio": 1}


def run_all() -> dict:
    return {"prop1": check_prop1(), "prop2": check_prop2(), "thm1": check_thm1()}


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2))
