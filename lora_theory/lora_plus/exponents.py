"""The LoRA+ exponent recursions, evaluated exactly: predicted gamma[delta_i] at every step.

Notation: v = Theta(n^{gamma[v]}); gamma of an exactly-zero quantity is -inf; products add
exponents, sums take the max (no cancellation). With eta_A = Theta(n^a), eta_B = Theta(n^b),
s = a^T x (gamma 0 for Init[1], -inf for Init[2]), the toy model's b (-inf / 0) and
U = f - y (gamma max(0, gamma[f])):

GD (Prop. 1, Prop. 2):
    gamma[Delta s] = a + gamma[b] + gamma[U] + 1,     gamma[Delta b] = b + gamma[s] + gamma[U]
SignSGD / Adam (Thm 1: processed gradients have Theta(1) entries, when non-zero):
    gamma[Delta s] = a + 1 (if b != 0),               gamma[Delta b] = b (if s != 0)
Then delta1 = b Delta s, delta2 = Delta b s, delta3 = Delta b Delta s, and
gamma[b_t] = max(gamma[b_{t-1}], gamma[Delta b]), gamma[s_t] = max(gamma[s_{t-1}], gamma[Delta s]).

Exact arithmetic with fractions.Fraction (exponents such as -1/2 stay exact).

Reference: Hayou et al. (2024), Prop. 1, Prop. 2 (recursions for GD), Thm 1 (Adam-type);
claims ``lora_plus.prop1``, ``lora_plus.prop2``, ``lora_plus.thm1``.
"""
from __future__ import annotations

from fractions import Fraction

import pandas as pd

from .._validate import check_int
from ._update import check_optimizer_init

__all__ = ["NEG_INF", "predict_exponents"]

NEG_INF = None  # gamma of an exactly-zero quantity


def _add(*xs):
    return None if any(x is None for x in xs) else sum(xs, Fraction(0))


def _max(*xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def predict_exponents(optimizer: str, init: int, a, b, steps: int) -> pd.DataFrame:
    """Predicted gamma of delta1, delta2, delta3, Delta f, b_t, (a^T x)_t and f_t for t = 1..steps.

    Args:
        optimizer: "gd", "signsgd" or "adam" (the last two share the Thm 1 recursion).
        init: 1 (b = 0, a^T x = Theta(1)) or 2 (b = Theta(1), a = 0).
        a, b: exponents of eta_A and eta_B (ints, Fractions or strings like "-1/2").
        steps: number of steps.

    Returns:
        DataFrame: step, term, gamma (a Fraction, or None for an exactly-zero term), gamma_float.
    """
    check_optimizer_init(optimizer, init)
    steps = check_int("steps", steps, low=1)
    a, b = Fraction(a), Fraction(b)
    g_b, g_s = (NEG_INF, Fraction(0)) if init == 1 else (Fraction(0), NEG_INF)
    g_U = Fraction(0)  # f_0 = 0, so U_0 = -y = Theta(1)
    rows = []
    for t in range(1, steps + 1):
        if optimizer == "gd":
            g_ds = _add(a, g_b, g_U, Fraction(1))
            g_db = _add(b, g_s, g_U)
        else:
            g_ds = None if g_b is None or g_U is None else a + 1
            g_db = None if g_s is None or g_U is None else b
        d1, d2, d3 = _add(g_b, g_ds), _add(g_db, g_s), _add(g_db, g_ds)
        g_b, g_s = _max(g_b, g_db), _max(g_s, g_ds)
        g_f = _add(g_b, g_s)
        g_U = _max(Fraction(0), g_f)
        for term, g in (("delta1", d1), ("delta2", d2), ("delta3", d3), ("df", _max(d1, d2, d3)), ("b_t", g_b), ("aTx", g_s), ("f", g_f)):
            rows.append({"step": t, "term": term, "gamma": g, "gamma_float": float("-inf") if g is None else float(g)})
    return pd.DataFrame(rows)
