"""Symbolic checks of Lemma 3.1 and 3.2 of Hu et al. (2024) (claims ``limits.lemma3.1``,
``limits.lemma3.2``, ``limits.grad_closed_form``), in sympy at small symbolic sizes.

1. :func:`check_lemma31_score_gradient`: with e_ij = exp(S_ij) as positive symbols, f is a
   rational function of e, and dL/dS_ij = e_ij dL/de_ij. The identity
   dL/dS = f o q - diag(rho) f, q = c V^T, rho = rowsum(f o q) = rowsum(c o O), is checked
   exactly (``cancel`` of the difference is 0).
2. :func:`check_lemma32_chain`: for a generic upstream gradient P = dL/dS (free symbols),
   the chain rule through W_mu = W_mu* + (alpha/r) B_mu A_mu gives exactly
   dL/dA_Q = (alpha/r) B_Q^T (beta X_Q^T P K), dL/dA_K = (alpha/r) B_K^T (beta X_K^T P^T Q),
   and likewise for B (polynomial identities, checked by ``expand``); the V side with a
   generic f: dL/dW_V = X_V^T f^T c.
3. :func:`check_full_gradient`: the symbolic derivative of the whole loss (exp and all) with
   respect to every entry of every A and B, against the closed form, evaluated at random
   rational points with 60 significant digits (mpmath).

Each function returns a dict of what it checked and raises :class:`~proofs_checks.ProofCheckFailed` on a
mismatch (also under ``python -O``). The formula under check is a parameter (default: the paper's,
corrected as in paper_notes), so a test can hand in a wrong one and watch the check fail.
"""
from __future__ import annotations

import random

import mpmath
import sympy as sp

from . import require

__all__ = ["check_full_gradient", "check_lemma31_score_gradient", "check_lemma32_chain", "run_all"]


def _mat(name: str, rows: int, cols: int, **kw) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", **kw))


def _p_paper(f, q, rho, i, j):
    return f[i, j] * q[i, j] - rho[i] * f[i, j]  # Part II minus Part III


def check_lemma31_score_gradient(L: int = 3, d: int = 2, p_formula=_p_paper) -> dict:
    """dL/dS = f o q - diag(rho) f, exactly, with e = exp(S) as positive symbols (L x L).

    ``p_formula(f, q, rho, i, j)`` is the claimed p_ij (default: Lemma 3.1's).
    """
    E = _mat("e", L, L, positive=True)
    V = _mat("v", L, d, real=True)
    Y = _mat("y", L, d, real=True)
    f = sp.Matrix(L, L, lambda i, j: E[i, j] / sum(E[i, k] for k in range(L)))
    O = f * V
    c = O - Y
    loss = sp.Rational(1, 2) * sum(x**2 for x in c)
    q = c * V.T  # (L, L)
    rho = [sum(f[i, j] * q[i, j] for j in range(L)) for i in range(L)]
    rho_alt = [sum(c[i, k] * O[i, k] for k in range(d)) for i in range(L)]
    for i in range(L):
        require(sp.cancel(rho[i] - rho_alt[i]) == 0, f"rowsum(f o q) != rowsum(c o O) in row {i}")
        for j in range(L):
            dS = E[i, j] * sp.diff(loss, E[i, j])  # d/dS_ij = e_ij d/de_ij since e = exp(S)
            p_ij = p_formula(f, q, rho, i, j)
            require(sp.cancel(dS - p_ij) == 0, f"Lemma 3.1 fails at ({i}, {j})")
    return {"L": L, "d": d, "entries_checked": L * L}


def _weights(d: int, r: int, adapt: str):
    alpha, beta = sp.symbols("alpha beta", positive=True)
    s = alpha / r
    W, A, B = {}, {}, {}
    for mu in "qkv":
        W[mu] = _mat(f"w{mu}", d, d, real=True)
        if mu in adapt:
            A[mu] = _mat(f"a{mu}", r, d, real=True)
            B[mu] = _mat(f"b{mu}", d, r, real=True)
            W[mu] = W[mu] + s * B[mu] * A[mu]
    return alpha, beta, s, W, A, B


def _grad(expr, M: sp.Matrix) -> sp.Matrix:
    return M.applyfunc(lambda x: sp.diff(expr, x))


def _chain_paper(s, A, B, G):
    return s * B.T * G, s * G * A.T  # (dL/dA, dL/dB), Lemma 3.2


def check_lemma32_chain(L: int = 2, d: int = 2, r: int = 1, adapt: str = "qkv", chain=_chain_paper) -> dict:
    """Chain rule through W = W* + (alpha/r) B A for generic P = dL/dS and generic f (exact).

    ``chain(s, A, B, G) -> (dL/dA, dL/dB)`` is the claimed chain rule (default: Lemma 3.2's, s = alpha/r).
    """
    alpha, beta, s, W, A, B = _weights(d, r, adapt)
    Xq, Xk, Xv = (_mat(n, L, d, real=True) for n in ("xq", "xk", "xv"))
    P = _mat("P", L, L, real=True)  # a generic upstream gradient dL/dS
    Q, K = Xq * W["q"], Xk * W["k"]
    S = beta * Q * K.T
    lin = sum(P[i, j] * S[i, j] for i in range(L) for j in range(L))  # d lin / d theta = sum P_ij dS_ij/d theta
    G = {"q": beta * Xq.T * P * K, "k": beta * Xk.T * P.T * Q}
    n = 0
    for mu in ("q", "k"):
        if mu not in adapt:
            continue
        dA, dB = chain(s, A[mu], B[mu], G[mu])
        require((_grad(lin, A[mu]) - dA).expand() == sp.zeros(r, d), f"dL/dA_{mu}")
        require((_grad(lin, B[mu]) - dB).expand() == sp.zeros(d, r), f"dL/dB_{mu}")
        n += 2
    if "v" in adapt:
        F = _mat("f", L, L, real=True)  # generic attention matrix, held fixed
        Yt = _mat("y", L, d, real=True)
        c = F * Xv * W["v"] - Yt
        loss_v = sp.Rational(1, 2) * sum(x**2 for x in c)
        Gv = Xv.T * F.T * c
        dA, dB = chain(s, A["v"], B["v"], Gv)
        require((_grad(loss_v, A["v"]) - dA).expand() == sp.zeros(r, d), "dL/dA_v")
        require((_grad(loss_v, B["v"]) - dB).expand() == sp.zeros(d, r), "dL/dB_v")
        n += 2
    return {"L": L, "d": d, "r": r, "adapt": adapt, "gradients_checked": n}


def _weight_grads_paper(beta, Xq, Xk, Xv, p, f, c, Q, K):
    return {"q": beta * Xq.T * p * K, "k": beta * Xk.T * p.T * Q, "v": Xv.T * f.T * c}


def check_full_gradient(L: int = 2, d: int = 2, r: int = 1, adapt: str = "qkv", points: int = 2, seed: int = 0, digits: int = 60,
                        weight_grads=_weight_grads_paper) -> dict:
    """Symbolic d(loss)/d(A, B) of the full loss vs the closed form, at random rational points.

    ``weight_grads(beta, Xq, Xk, Xv, p, f, c, Q, K) -> {"q", "k", "v": G_mu}`` is the claimed closed form.
    """
    alpha, beta, s, W, A, B = _weights(d, r, adapt)
    Xq, Xk, Xv = (_mat(n, L, d, real=True) for n in ("xq", "xk", "xv"))
    Y = _mat("y", L, d, real=True)
    Q, K, V = Xq * W["q"], Xk * W["k"], Xv * W["v"]
    S = beta * Q * K.T
    E = S.applyfunc(sp.exp)
    f = sp.Matrix(L, L, lambda i, j: E[i, j] / sum(E[i, k] for k in range(L)))
    O = f * V
    c = O - Y
    loss = sp.Rational(1, 2) * sum(x**2 for x in c)
    q = c * V.T
    rho = sp.Matrix(L, 1, lambda i, _: sum(c[i, k] * O[i, k] for k in range(d)))
    p = sp.Matrix(L, L, lambda i, j: f[i, j] * (q[i, j] - rho[i]))
    G = weight_grads(beta, Xq, Xk, Xv, p, f, c, Q, K)
    symbolic = {}
    closed = {}
    for mu in adapt:
        symbolic[f"A_{mu}"] = _grad(loss, A[mu])
        symbolic[f"B_{mu}"] = _grad(loss, B[mu])
        closed[f"A_{mu}"] = s * B[mu].T * G[mu]
        closed[f"B_{mu}"] = s * G[mu] * A[mu].T
    free = sorted(loss.free_symbols, key=lambda x: x.name)
    keys = list(symbolic)
    # Evaluate both sides with mpmath at `digits` significant digits (lambdify is far faster
    # than subs/evalf on these expression trees; the derivative itself stays symbolic).
    sym_fn = sp.lambdify(free, [symbolic[k] for k in keys], modules="mpmath")
    closed_fn = sp.lambdify(free, [closed[k] for k in keys], modules="mpmath")
    rng = random.Random(seed)
    worst = mpmath.mpf(0)
    with mpmath.workdps(digits):
        for _ in range(points):
            vals = []
            for x in free:
                if x in (alpha, beta):
                    vals.append(mpmath.mpf(rng.randint(1, 8)) / 4)
                else:
                    vals.append(mpmath.mpf(rng.randint(-9, 9)) / rng.randint(4, 12))
            for a, b in zip(sym_fn(*vals), closed_fn(*vals), strict=True):
                a, b = mpmath.matrix(a), mpmath.matrix(b)
                scale = max(abs(x) for x in a) or 1
                worst = max(worst, max(abs(x - y) for x, y in zip(a, b, strict=True)) / scale)
    require(worst < mpmath.mpf(10) ** (-(digits - 10)), f"closed form differs from the symbolic derivative by {worst}")
    return {"L": L, "d": d, "r": r, "adapt": adapt, "points": points, "max_rel_diff": float(worst)}


def run_all() -> dict:
    """Every check above at its default sizes, for partial and full adaptation."""
    return {
        "lemma3.1": check_lemma31_score_gradient(),
        "lemma3.2_qkv": check_lemma32_chain(adapt="qkv"),
        "lemma3.2_qv": check_lemma32_chain(adapt="qv"),
        "full_qv": check_full_gradient(adapt="qv"),
        "full_qkv": check_full_gradient(adapt="qkv"),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2, default=str))
