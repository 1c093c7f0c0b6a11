"""The steps behind the a-posteriori error bound of ``approx_gradients`` (claims ``limits.thm3.1``,
``limits.thmA.1``), checked in sympy (identities, exactly) and on extreme numeric configurations
(inequalities). Notation: A_j > 0 the exact weights of one query row, A~_j = A_j (1 + delta_j) the
approximate ones with delta_j in [lo, hi] (hi - lo = osc, |delta_j| <= delta < 1), f = A / sum A,
f~ = A~ / sum A~, dbar = sum_j f_j delta_j, E and E~ the means under f and f~.

1. :func:`check_moment_form`: every quantity of the gradient chain is a moment under f:
   sum_j p_ij x_j = Cov_f(c_i . V, x) for p = f o (q - rho 1^T), q_ij = c_i . V_j, rho_i = c_i . O_i;
   G_K = beta X_K^T p^T Q = beta (p X_K)^T Q; G_V = X_V^T f^T c = sum_i E_i[X_V] c_i^T (symbolic, exact).
2. :func:`check_mean_shift`: (E~ - E)[x] = (1 / (1 + dbar)) sum_j f_j (delta_j - m)(x_j - E x) for ANY
   constant m (symbolic), hence with m the midpoint of [lo, hi]:
   |(E~ - E)[x]| <= eta sd_f(x), eta = (osc / 2) / (1 - delta) (numeric, extreme delta patterns).
3. :func:`check_cov_shift`: Cov~(h, x) - Cov(h, x) = (E~ - E)[(h - E h)(x - E x)] - (E~ h - E h)(E~ x - E x)
   (symbolic), hence |Cov~ - Cov| <= eta (sd_f(h) sd_f(x) + |Cov_f(h, x)|) + eta^2 sd_f(h) sd_f(x) (numeric).
4. :func:`check_slope_shift`: when delta_j = eps(t_j) with |eps'| <= slope on an interval holding every
   t_j (hence tau = E_f t), |(E~ - E)[x]| <= slope sd_f(t) sd_f(x) / (1 - delta) (numeric: oscillating and
   monotone eps, weights over many decades).
5. :func:`check_sd_ratio`: f_j / f~_j <= kappa = (1 + hi) / (1 + lo), hence Var_f(x) <= kappa Var_f~(x)
   (numeric; symbolic form of the ratio).

Each function returns a dict of what it checked and raises :class:`proofs_checks.ProofCheckFailed` on a mismatch.
``factor`` arguments scale the claimed bound: a test passes factor < 1 to show the check can fail.
"""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from . import require

__all__ = ["check_cov_shift", "check_mean_shift", "check_moment_form", "check_sd_ratio", "check_slope_shift", "run_all"]


def perturbed_softmax_symbols(L: int):
    """(a, delta, f, f~, dbar): weights a_j > 0, relative errors delta_j, f = a / sum a, f~ from a_j (1 + delta_j), dbar = sum f_j delta_j."""
    a = sp.symbols(f"a0:{L}", positive=True)
    dl = sp.symbols(f"d0:{L}", real=True)
    S = sum(a)
    f = [ai / S for ai in a]
    at = [ai * (1 + di) for ai, di in zip(a, dl, strict=True)]
    St = sum(at)
    ft = [ai / St for ai in at]
    dbar = sum(fi * di for fi, di in zip(f, dl, strict=True))
    return a, dl, f, ft, dbar


def check_moment_form(L: int = 3, d: int = 2) -> dict:
    """Symbolic: sum_j p_ij x_j = Cov_f(c_i . V, x); G_K = beta (p X_K)^T Q; G_V = sum_i E_i[X_V] c_i^T."""
    F = sp.Matrix(L, L, lambda i, j: sp.Symbol(f"f{i}{j}"))  # row-stochastic below: substitute the last column
    F = sp.Matrix(L, L, lambda i, j: F[i, j] if j < L - 1 else 1 - sum(F[i, k] for k in range(L - 1)))
    V = sp.Matrix(L, d, lambda j, e: sp.Symbol(f"v{j}{e}"))
    Y = sp.Matrix(L, d, lambda i, e: sp.Symbol(f"y{i}{e}"))
    Xk = sp.Matrix(L, d, lambda j, a: sp.Symbol(f"x{j}{a}"))
    Q = sp.Matrix(L, d, lambda i, e: sp.Symbol(f"q{i}{e}"))
    beta = sp.Symbol("beta")
    O = F * V
    c = O - Y
    q = c * V.T
    rho = [sum(c[i, e] * O[i, e] for e in range(d)) for i in range(L)]
    p = sp.Matrix(L, L, lambda i, j: F[i, j] * (q[i, j] - rho[i]))
    for i in range(L):
        for a in range(d):
            h = [sum(c[i, e] * V[j, e] for e in range(d)) for j in range(L)]
            Eh = sum(F[i, j] * h[j] for j in range(L))
            Ex = sum(F[i, j] * Xk[j, a] for j in range(L))
            cov = sum(F[i, j] * (h[j] - Eh) * (Xk[j, a] - Ex) for j in range(L))
            require(sp.expand(sum(p[i, j] * Xk[j, a] for j in range(L)) - cov) == 0, f"(p X_K)_{i}{a} != Cov_f(c . V, X_K,{a})")
    GK = beta * Xk.T * p.T * Q
    require(sp.expand(GK - beta * (p * Xk).T * Q) == sp.zeros(d, d), "G_K != beta (p X_K)^T Q")
    GV = Xk.T * F.T * c  # X_V = X_K here (self/cross attention)
    EXc = sum(((F[i, :] * Xk).T * c[i, :] for i in range(L)), sp.zeros(d, d))
    require(sp.expand(GV - EXc) == sp.zeros(d, d), "G_V != sum_i E_i[X_V] c_i^T")
    return {"L": L, "d": d}


def _extreme_rows(L: int, rng: np.random.Generator):
    """Weights a (L,), values x, h (L,): a few fixed patterns and random ones, wide dynamic range."""
    yield np.ones(L), np.arange(L, dtype=float), np.arange(L, dtype=float)[::-1].copy()
    yield 10.0 ** np.arange(L), np.array([1.0, -1.0] * (L // 2) + [0.0] * (L % 2)), np.ones(L)
    for _ in range(20):
        yield np.exp(rng.normal(0, 2, L)), rng.normal(0, 1, L), rng.normal(0, 1, L)


def _patterns(L: int, lo: float, hi: float, rng: np.random.Generator):
    """delta patterns in [lo, hi]: every vertex of the box (where linear objectives peak) and random interior points."""
    for v in itertools.product((lo, hi), repeat=L):
        yield np.array(v)
    for _ in range(10):
        yield rng.uniform(lo, hi, L)


def check_mean_shift(L: int = 4, factor: float = 1.0, seed: int = 0) -> dict:
    """(E~ - E)[x] = (1 / (1 + dbar)) sum_j f_j (delta_j - m)(x_j - E x) for any m; |.| <= eta sd_f(x)."""
    a, dl, f, ft, dbar = perturbed_softmax_symbols(3)
    x = sp.symbols("x0:3", real=True)
    m = sp.Symbol("m", real=True)
    Ex = sum(fi * xi for fi, xi in zip(f, x, strict=True))
    lhs = sum((fti - fi) * xi for fti, fi, xi in zip(ft, f, x, strict=True))
    rhs = sum(fi * (di - m) * (xi - Ex) for fi, di, xi in zip(f, dl, x, strict=True)) / (1 + dbar)
    require(sp.simplify(lhs - rhs) == 0, "mean-shift identity fails")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for lo, hi in ((-0.1, 0.1), (0.2, 0.5), (-0.6, -0.3), (-0.01, 0.3)):
        delta = max(abs(lo), abs(hi))
        eta = (hi - lo) / 2 / (1 - delta)
        for w, xv, _ in _extreme_rows(L, rng):
            fw = w / w.sum()
            sd = np.sqrt(fw @ (xv - fw @ xv) ** 2)
            for dv in _patterns(L, lo, hi, rng):
                at = w * (1 + dv)
                shift = (at / at.sum()) @ xv - fw @ xv
                bound = factor * eta * sd
                require(abs(shift) <= bound * (1 + 1e-12) + 1e-15, f"|(E~ - E)[x]| = {abs(shift):.3e} > {bound:.3e} (lo {lo}, hi {hi})")
                worst = max(worst, abs(shift) / bound if bound > 0 else 0.0)
    return {"L": L, "max_shift_over_bound": worst}


def check_cov_shift(L: int = 4, factor: float = 1.0, seed: int = 0) -> dict:
    """Cov~ - Cov = (E~ - E)[(h - Eh)(x - Ex)] - (E~h - Eh)(E~x - Ex); |.| <= eta (sd sd + |Cov|) + eta^2 sd sd."""
    a, dl, f, ft, dbar = perturbed_softmax_symbols(3)
    h = sp.symbols("h0:3", real=True)
    x = sp.symbols("x0:3", real=True)

    def E(w, v):
        return sum(wi * vi for wi, vi in zip(w, v, strict=True))

    def cov(w):
        return E(w, [hi * xi for hi, xi in zip(h, x, strict=True)]) - E(w, h) * E(w, x)

    y = [(hi - E(f, h)) * (xi - E(f, x)) for hi, xi in zip(h, x, strict=True)]
    rhs = (E(ft, y) - E(f, y)) - (E(ft, h) - E(f, h)) * (E(ft, x) - E(f, x))
    require(sp.simplify(cov(ft) - cov(f) - rhs) == 0, "covariance-shift identity fails")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for lo, hi in ((-0.1, 0.1), (0.2, 0.5), (-0.6, -0.3), (-0.01, 0.3)):
        delta = max(abs(lo), abs(hi))
        eta = (hi - lo) / 2 / (1 - delta)
        for w, xv, hv in _extreme_rows(L, rng):
            fw = w / w.sum()
            sdh, sdx = np.sqrt(fw @ (hv - fw @ hv) ** 2), np.sqrt(fw @ (xv - fw @ xv) ** 2)
            c0 = fw @ (hv * xv) - (fw @ hv) * (fw @ xv)
            for dv in _patterns(L, lo, hi, rng):
                at = w * (1 + dv)
                ftw = at / at.sum()
                c1 = ftw @ (hv * xv) - (ftw @ hv) * (ftw @ xv)
                bound = factor * (eta * (sdh * sdx + abs(c0)) + eta * eta * sdh * sdx)
                require(abs(c1 - c0) <= bound * (1 + 1e-12) + 1e-15, f"|Cov~ - Cov| = {abs(c1 - c0):.3e} > {bound:.3e} (lo {lo}, hi {hi})")
                worst = max(worst, abs(c1 - c0) / bound if bound > 0 else 0.0)
    return {"L": L, "max_shift_over_bound": worst}


def check_slope_shift(L: int = 6, factor: float = 1.0, seed: int = 0) -> dict:
    """|(E~ - E)[x]| <= slope sd_f(t) sd_f(x) / (1 - delta) for delta_j = eps(t_j), |eps'| <= slope, |eps| <= delta."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for amp, omega, shift in ((0.1, 1.0, 0.0), (0.3, 5.0, 0.7), (0.05, 20.0, 1.3), (0.4, 0.5, -0.4)):
        def eps(t):
            return amp * np.sin(omega * t + shift)

        slope, delta = amp * omega, amp  # sup |eps'| and sup |eps| over the whole line
        for w, xv, _ in _extreme_rows(L, rng):
            fw = w / w.sum()
            for _ in range(10):
                t = rng.uniform(-1, 1, L) * rng.uniform(0.01, 1)
                at = w * (1 + eps(t))
                shift_x = (at / at.sum()) @ xv - fw @ xv
                sd_t, sd_x = np.sqrt(fw @ (t - fw @ t) ** 2), np.sqrt(fw @ (xv - fw @ xv) ** 2)
                bound = factor * slope * sd_t * sd_x / (1 - delta)
                require(abs(shift_x) <= bound * (1 + 1e-12) + 1e-15, f"|(E~ - E)[x]| = {abs(shift_x):.3e} > slope bound {bound:.3e}")
                worst = max(worst, abs(shift_x) / bound if bound > 0 else 0.0)
    return {"L": L, "max_shift_over_bound": worst}


def check_sd_ratio(L: int = 4, factor: float = 1.0, seed: int = 0) -> dict:
    """f_j / f~_j = (1 + dbar) / (1 + delta_j) <= kappa = (1 + hi) / (1 + lo), so Var_f(x) <= kappa Var_f~(x)."""
    a, dl, f, ft, dbar = perturbed_softmax_symbols(3)
    for j in range(3):
        require(sp.simplify(f[j] / ft[j] - (1 + dbar) / (1 + dl[j])) == 0, "f / f~ ratio identity fails")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for lo, hi in ((-0.1, 0.1), (0.2, 0.5), (-0.6, -0.3)):
        kappa = (1 + hi) / (1 + lo)
        for w, xv, _ in _extreme_rows(L, rng):
            fw = w / w.sum()
            var = fw @ (xv - fw @ xv) ** 2
            for dv in _patterns(L, lo, hi, rng):
                ftw = w * (1 + dv) / (w * (1 + dv)).sum()
                var_t = ftw @ (xv - ftw @ xv) ** 2
                bound = factor * kappa * var_t
                require(var <= bound * (1 + 1e-12) + 1e-15, f"Var_f = {var:.3e} > kappa Var_f~ = {bound:.3e}")
                worst = max(worst, var / bound if bound > 0 else 0.0)
    return {"L": L, "max_var_over_bound": worst}


def run_all() -> dict:
    return {"moment_form": check_moment_form(), "mean_shift": check_mean_shift(), "cov_shift": check_cov_shift(), "slope_shift": check_slope_shift(),
            "sd_ratio": check_sd_ratio()}


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2))
