"""The polynomial method's rank far beyond any runnable L: k(L) = C(g + d, d) from a certified degree bracket.

The almost-linear statements (Hu et al. 2024, Thm 3.1 / A.1) are asymptotic: the cost of the
polynomial method is c L k poly(d) (validated against measurements by ``limits.thm3.1``), and what
makes it L^{1+o(1)} is the rank k = C(g + d, d) being L^{o(1)} when Gamma = o(sqrt(log L)),
d = O(log L) and eps = 1/poly(L). The rank needs only the degree g, and the degree can be bracketed
for any (R, eps) without fitting anything, so k(L) can be evaluated at L = 2^512 in log space.

The bracket (:func:`degree_bracket`, a Bessel-coefficient argument): on t in [-1, 1],
e^{R t} = I_0(R) + 2 sum_{j >= 1} I_j(R) T_j(t). For any p of degree g, the (g+1)-th Chebyshev
coefficient of e^{R t} - p is 2 I_{g+1}(R), at most 2 ||e^{R t} - p||_inf, so

    lo(R, eps) = min{g : I_{g+1}(R) <= eps * scale}     (no degree below lo reaches eps)
    hi(R, eps) = min{g : c * sum_{j > g} I_j(R) <= eps * scale}   (the truncated series / interpolant reaches eps)

with, for the toolkit's error (``"relative"``: sup_{|s| <= R} |P(s) - e^s| / e^s), scale = I_0(R)
for lo (the weighted-norm argument) and scale = e^{-R}, c = 4 for hi (interpolation at most doubles
the truncation error 2 * tail, measured against min e^{R t} = e^{-R}); for Aggarwal-Alman's
(``"additive"``: sup_{x in [0, 2R]} |p(x) - e^x|, e^x = e^R e^{R t}) scale = e^{-R}, c = 2.
log I_j(R) for j up to thousands (I_j(R) underflows float64 long before) comes from the backward
recurrence of the ratios r_j = I_{j+1}(R) / I_j(R) = 1 / (2 (j + 1) / R + r_{j+1}) (Miller's
algorithm: stable for the minimal solution), anchored at log I_0(R) = R + log ive(0, R). Nothing
here calls the toolkit's degree rule (:mod:`lora_theory.limits.polynomial`): the bracket is the
independent reference the degree rule is checked against (claims ``limits.degree_bound``,
``limits.degree_tightness``).

Regimes (:func:`rank_table`): d = ceil(log2(L) / 2) (d = Theta(log L), :func:`half_log_dimension`),
R = Gamma^2 (AS23's scaling: beta = 1/d inside exp, entries bounded by Gamma), eps = L^-a.

Reference: Hu et al. (2024), Thm 3.1, A.1, Sec. 1 (the sqrt(log L) threshold); Alman & Song (2023),
Lemma 3.2-3.3; Aggarwal & Alman (2022); claims ``limits.thm3.1``, ``limits.thmA.1``,
``limits.threshold``, ``limits.degree_tightness``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd

from .._validate import InvalidArgumentError, check_choice, check_positive

__all__ = [
    "GAMMA_RULES",
    "THRESHOLD_LOG2_LS",
    "THRESHOLD_WINDOWS",
    "degree_bracket",
    "fit_threshold_power",
    "half_log_dimension",
    "log_bessel_i",
    "log_rank",
    "low_rank_budget",
    "rank_table",
    "threshold_point",
    "threshold_table",
]

Kind = Literal["relative", "additive"]
_LN2 = math.log(2.0)


def log_bessel_i(R: float, n: int) -> np.ndarray:
    """log I_j(R) for j = 0..n (modified Bessel functions of the first kind), finite for every j when R > 0.

    Args:
        R: the argument, >= 0 (R = 0: I_0 = 1, I_j = 0, log -inf).
        n: the largest order.

    Returns:
        (n + 1,) float64 array.
    """
    from scipy.special import ive  # heavy

    R = check_positive("R", R, allow_zero=True)
    out = np.full(n + 1, -np.inf)
    if R == 0.0:
        out[0] = 0.0
        return out
    # start the backward recurrence far enough above n (and above R) that the seed r_N = 0 is forgotten
    top = n + 40 + int(math.ceil(R))
    logr = np.empty(n)
    r = 0.0
    for j in range(top - 1, -1, -1):  # r_j = I_{j+1}/I_j = 1 / (2 (j + 1) / R + r_{j+1})
        r = 1.0 / (2.0 * (j + 1) / R + r)
        if j < n:
            logr[j] = math.log(r)
    out[0] = R + math.log(float(ive(0, R)))  # log I_0(R), without overflow
    out[1:] = out[0] + np.cumsum(logr)
    return out


def degree_bracket(R: float, eps: float | None = None, kind: Kind = "relative", *, log_inv_eps: float | None = None) -> tuple[int, int]:
    """(lo, hi): the minimal degree g of a polynomial reaching error eps for e^s on [-R, R] lies in [lo, hi].

    Args:
        R: half-width of the score interval, >= 0.
        eps: target error in (0, 1); or give ``log_inv_eps`` = ln(1/eps) instead (eps below float64's range).
        kind: "relative" (the toolkit's sup |P(s) - e^s| / e^s on [-R, R]) or "additive"
            (Aggarwal-Alman's sup_{[0, 2R]} |p(x) - e^x|); see the module docstring.

    Returns:
        (lo, hi) with lo <= hi: no degree below lo reaches eps; the degree-hi truncated Chebyshev series
        (additive) or interpolant (relative) does.
    """
    check_choice("kind", kind, ("relative", "additive"))
    R = check_positive("R", R, allow_zero=True)
    if log_inv_eps is None:
        if eps is None:
            raise InvalidArgumentError("eps: expected a number in (0, 1) or log_inv_eps, got neither")
        eps = check_positive("eps", eps)
        if eps >= 1:
            raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
        log_inv_eps = -math.log(eps)
    elif not (math.isfinite(log_inv_eps) and log_inv_eps > 0):
        raise InvalidArgumentError(f"log_inv_eps: expected a finite number > 0, got {log_inv_eps}")
    le = -float(log_inv_eps)
    n = int(4 * R + 4 * log_inv_eps + 40)  # past the hi degree for every (R, eps): I_j(R) falls faster than (R / 2j)^j there
    li = log_bessel_i(R, n)
    # tail[j] = log sum_{i >= j} I_i(R); beyond n the terms fall by more than 2x per order (I_{i+1}/I_i <= R/(2i+1) < 1/2 for
    # i >= n > R), so the remainder past n is at most 2 I_n: added so that hi stays an upper bound
    tail = np.logaddexp.accumulate(np.concatenate([li[:-1], [_LN2 + li[-1]]])[::-1])[::-1]
    if kind == "additive":
        lo_ok = R + li[1:] <= le
        hi_ok = R + _LN2 + tail[1:] <= le
    else:
        lo_ok = li[1:] <= le + li[0]
        hi_ok = math.log(4.0) + tail[1:] <= le - R
    # g = index into li[1:] (the coefficient of T_{g+1}); both conditions are monotone in g
    lo, hi = int(np.argmax(lo_ok)), int(np.argmax(hi_ok))
    if not hi_ok.any():  # cannot happen for n above (kept as a loud guard, never a silent wrong degree)
        raise ArithmeticError(f"degree_bracket: no degree <= {n} reaches eps = e^-{log_inv_eps:.4g} at R = {R}")
    return lo, hi


def log_rank(g: float, d: float) -> float:
    """ln C(g + d, d) = ln k, the log of the feature rank of degree g in dimension d (lgamma: exact for huge g, d)."""
    return math.lgamma(g + d + 1) - math.lgamma(g + 1) - math.lgamma(d + 1)


def half_log_dimension(log2_L: float) -> int:
    """d = ceil(log2(L) / 2) (at least 2): d = Theta(log L), the regime of the theorems (= log2(L) / 2 at even powers of 2)."""
    return max(2, math.ceil(log2_L / 2 - 1e-12))  # the 1e-12: log2 L / 2 exactly an integer must not round up


#: Gamma(L) rules, as functions of ln L: constants and (ln L)^{1/4} are o(sqrt(log L)) (Thm 3.1's regime);
#: "x=0.5 sqrt(ln L)" is on the Theta(sqrt(log L)) boundary, the contrast where k must not become L^{o(1)}
GAMMA_RULES: dict[str, Callable[[float], float]] = {
    "Gamma=1": lambda lnL: 1.0,
    "Gamma=2": lambda lnL: 2.0,
    "Gamma=(ln L)^(1/4)": lambda lnL: lnL**0.25,
    "Gamma=0.5 sqrt(ln L)": lambda lnL: 0.5 * math.sqrt(lnL),
}


def rank_table(log2_Ls, gammas: dict[str, Callable[[float], float]] | None = None, eps_powers=(1.0, 2.0), *, kind: Kind = "relative",
               d_rule: Callable[[float], int] = half_log_dimension) -> pd.DataFrame:
    """The rank k(L) the polynomial method needs, per L, Gamma rule and eps = L^-a, in log space.

    Args:
        log2_Ls: log2 of the lengths (any positive numbers; 512 is L = 2^512).
        gammas: name -> Gamma(ln L); default :data:`GAMMA_RULES`.
        eps_powers: a in eps = L^-a.
        kind: the error the degree bracket is for (the toolkit's: "relative").
        d_rule: d from log2 L (default :func:`half_log_dimension`).

    Returns:
        Tidy DataFrame: log2_L, ln_L, gamma_rule, Gamma, R (= Gamma^2), eps_power, log_inv_eps, d,
        degree_lo, degree_hi, ln_k_lo, ln_k_hi, log_L_k_lo, log_L_k_hi (= ln k / ln L: the rank's exponent,
        o(1) when k = L^{o(1)}), low_rank (k_hi < L).
    """
    gammas = GAMMA_RULES if gammas is None else gammas
    rows = []
    for log2_L in log2_Ls:
        lnL = float(log2_L) * _LN2
        d = int(d_rule(float(log2_L)))
        for name, rule in gammas.items():
            G = float(rule(lnL))
            R = G * G
            for a in eps_powers:
                q = a * lnL
                lo, hi = degree_bracket(R, kind=kind, log_inv_eps=q)
                klo, khi = log_rank(lo, d), log_rank(hi, d)
                rows.append({"log2_L": float(log2_L), "ln_L": lnL, "gamma_rule": name, "Gamma": G, "R": R, "eps_power": float(a), "log_inv_eps": q,
                             "d": d, "degree_lo": lo, "degree_hi": hi, "ln_k_lo": klo, "ln_k_hi": khi, "log_L_k_lo": klo / lnL,
                             "log_L_k_hi": khi / lnL, "low_rank": khi < lnL})
    return pd.DataFrame(rows)


#: log2 L of the threshold's evaluation (2^8..2^512) and the three windows of the fitted power p (claim ``limits.threshold``)
THRESHOLD_LOG2_LS = (8, 10, 12, 14, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
THRESHOLD_WINDOWS = ((8, 16), (24, 96), (128, 512))


def low_rank_budget(ln_L: float, d: int) -> int:
    """The largest degree g with C(g + d, d) < L (the rank stays below L), from ln L (works at L = 2^512)."""
    g = 0
    while log_rank(g + 1, d) < ln_L:
        g += 1
    return g


def _threshold_R(g_max: int, q: float, bound: Literal["lo", "hi"], kind: Kind) -> float:
    """The largest R at which the bracket's ``bound`` degree is still <= g_max (bisection on R; both bounds are monotone in R)."""
    def deg(R: float) -> int:
        return degree_bracket(R, kind=kind, log_inv_eps=q)[0 if bound == "lo" else 1]

    lo, hi = 0.0, 1.0
    while deg(hi) <= g_max:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if deg(mid) <= g_max else (lo, mid)
    return hi


def threshold_point(log2_L: float, *, eps_power: float = 1.0, kind: Kind = "relative", d_rule: Callable[[float], int] = half_log_dimension) -> dict:
    """Gamma* at which the rank k = C(g + d, d) of eps = L^-a reaches L, from both ends of the degree bracket.

    With the minimal degree g(R) in [lo(R), hi(R)], the rank reaches L once g > g_max = the low-rank
    budget; g(R) > g_max for R > R*_hi (the hi degree is past it: an upper bound on the minimal
    degree's transition is R*_lo, the R where lo passes g_max; a lower one is R*_hi). So
    Gamma*_min = sqrt(R*_hi) <= Gamma* <= sqrt(R*_lo) = Gamma*_max (AS23 scaling R = Gamma^2).

    Returns:
        {"log2_L", "ln_L", "d", "eps_power", "g_max", "R_star_min", "R_star_max", "Gamma_star_min", "Gamma_star_max",
        "Gamma_star" (the geometric mean of the two), "x_star" (= Gamma* / sqrt(ln L)), "x_star_min", "x_star_max"}.
    """
    lnL = float(log2_L) * _LN2
    d = int(d_rule(float(log2_L)))
    g_max = low_rank_budget(lnL, d)
    q = eps_power * lnL
    r_min, r_max = _threshold_R(g_max, q, "hi", kind), _threshold_R(g_max, q, "lo", kind)
    g_min, g_maxs = math.sqrt(r_min), math.sqrt(r_max)
    G = math.sqrt(g_min * g_maxs)
    s = math.sqrt(lnL)
    return {"log2_L": float(log2_L), "ln_L": lnL, "d": d, "eps_power": float(eps_power), "g_max": g_max, "R_star_min": r_min, "R_star_max": r_max,
            "Gamma_star_min": g_min, "Gamma_star_max": g_maxs, "Gamma_star": G, "x_star": G / s, "x_star_min": g_min / s, "x_star_max": g_maxs / s}


def threshold_table(log2_Ls, *, eps_power: float = 1.0, kind: Kind = "relative", d_rule: Callable[[float], int] = half_log_dimension) -> pd.DataFrame:
    """:func:`threshold_point` per log2 L: a tidy DataFrame (one row per L)."""
    return pd.DataFrame([threshold_point(x, eps_power=eps_power, kind=kind, d_rule=d_rule) for x in log2_Ls])


def fit_threshold_power(df: pd.DataFrame, lo: float = -math.inf, hi: float = math.inf, column: str = "Gamma_star") -> float:
    """p of Gamma* ~ (ln L)^p: the least-squares slope of ln Gamma* vs ln ln L over log2 L in [lo, hi]."""
    g = df[(df.log2_L >= lo) & (df.log2_L <= hi)]
    if len(g) < 2:
        raise InvalidArgumentError(f"lo, hi: expected a range holding >= 2 rows of df, got {len(g)} in [{lo}, {hi}]")
    return float(np.polyfit(np.log(g.ln_L.to_numpy(float)), np.log(g[column].to_numpy(float)), 1)[0])
