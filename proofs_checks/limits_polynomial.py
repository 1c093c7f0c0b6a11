"""Symbolic checks behind the polynomial method (claims ``limits.rank_count``,
``limits.degree_bound``, ``limits.thm3.1``, ``limits.thmA.1``), in sympy.

1. :func:`check_multinomial_identity`: sum_j a_j (q . k)^j = phi(q) . psi(k) with
   phi_alpha = a_|alpha| |alpha|!/alpha! q^alpha and psi_alpha = k^alpha, exactly, for symbolic
   q, k, a at small d and g; and the number of monomials is C(g + d, d).
2. :func:`check_rank_count`: the count of multi-indices |alpha| <= g in d variables equals
   C(g + d, d) (enumerated), and is below AS23's C(2(g + d), 2g).
3. :func:`check_taylor_remainder`: e^s - T_g(s) = e^xi s^{g+1} / (g+1)! (Lagrange), hence
   sup_{|s| <= R} |e^s - T_g(s)| / e^s <= e^{2R} R^{g+1} / (g+1)!; checked symbolically for the
   remainder formula (sympy's series) and numerically against ``exp_polynomial(method="taylor")``.
4. :func:`check_rowwise_kronecker`: (U1 V1^T) o (U2 V2^T) = (U1 (x) U2)(V1 (x) V2)^T with
   row-wise Kronecker products, exactly, for symbolic matrices.
Each raises :class:`~proofs_checks.ProofCheckFailed` on a mismatch (also under ``python -O``); the
formula under check is a parameter, so a test can hand in a wrong one and watch the check fail.

5. :func:`check_normalizer_perturbation`: entrywise relative error delta of exp becomes at most
   delta / (1 - delta) in each row of the softmax (l1), the first step of the computed error
   bound of ``approx_gradients`` (claims ``limits.thm3.1``, ``limits.thmA.1``).
"""
from __future__ import annotations

import itertools
import math

import sympy as sp

from . import require
from .limits_bound import perturbed_softmax_symbols

__all__ = ["check_multinomial_identity", "check_normalizer_perturbation", "check_rank_count", "check_rowwise_kronecker", "check_taylor_remainder", "run_all"]


def _monomials(d: int, g: int):
    for j in range(g + 1):
        yield from itertools.combinations_with_replacement(range(d), j)


def _multinomial(j: int, counts: list[int]):
    return sp.factorial(j) / sp.Mul(*[sp.factorial(c) for c in counts])  # |alpha|! / alpha!


def check_multinomial_identity(d: int = 2, g: int = 3, weight=_multinomial) -> dict:
    """sum_j a_j (q.k)^j == sum_alpha a_|alpha| (|alpha|!/alpha!) q^alpha k^alpha (expand == 0).

    ``weight(j, counts)`` is the claimed weight of monomial alpha (default |alpha|!/alpha!).
    """
    q = sp.symbols(f"q0:{d}")
    k = sp.symbols(f"k0:{d}")
    a = sp.symbols(f"a0:{g + 1}")
    dot = sum(qi * ki for qi, ki in zip(q, k, strict=True))
    lhs = sum(a[j] * dot**j for j in range(g + 1))
    rhs = 0
    n = 0
    for mono in _monomials(d, g):
        counts = [mono.count(i) for i in range(d)]
        j = len(mono)
        coeff = weight(j, counts)
        qa = sp.Mul(*[q[i] ** c for i, c in enumerate(counts)])
        ka = sp.Mul(*[k[i] ** c for i, c in enumerate(counts)])
        rhs += (a[j] * coeff * qa) * ka  # phi_alpha(q) * psi_alpha(k)
        n += 1
    require(sp.expand(lhs - rhs) == 0, "multinomial identity fails")
    require(n == math.comb(g + d, d), f"rank {n} != C(g + d, d) = {math.comb(g + d, d)}")
    return {"d": d, "g": g, "rank": n}


def check_rank_count(max_d: int = 6, max_g: int = 6, rank=None) -> dict:
    """#{alpha : |alpha| <= g} == C(g + d, d) <= C(2(g + d), 2g) for all d <= max_d, g <= max_g.

    ``rank(g, d)`` is the claimed count (default: the toolkit's ``feature_rank``, the code under check).
    """
    if rank is None:
        from lora_theory.limits import features

        rank = features.feature_rank
    for d, g in itertools.product(range(1, max_d + 1), range(max_g + 1)):
        n = sum(1 for _ in _monomials(d, g))
        require(n == sp.binomial(g + d, d) == rank(g, d), f"rank at d = {d}, g = {g}: {n} monomials, C(g + d, d) = {sp.binomial(g + d, d)}, claimed {rank(g, d)}")
        require(n <= sp.binomial(2 * (g + d), 2 * g), f"C(g + d, d) above AS23's C(2(g + d), 2g) at d = {d}, g = {g}")
    return {"pairs_checked": max_d * (max_g + 1)}


def check_taylor_remainder(g_max: int = 12, Rs=(0.5, 1.0, 2.0, 4.0)) -> dict:
    """Lagrange remainder of e^s, and the relative bound e^{2R} R^{g+1}/(g+1)! on [-R, R].

    The numeric half measures the toolkit's ``exp_polynomial(method="taylor")`` (the code under check).
    """
    from lora_theory.limits import polynomial

    s = sp.Symbol("s")
    for g in range(g_max + 1):
        T = sp.series(sp.exp(s), s, 0, g + 1).removeO()
        # The g-th Taylor polynomial's remainder has (g+1)-th derivative e^s: its coefficients match.
        require(sp.expand(T - sum(s**j / sp.factorial(j) for j in range(g + 1))) == 0, f"Taylor coefficients of e^s at degree {g}")
    worst = 0.0
    for R, g in itertools.product(Rs, range(1, g_max + 1)):
        bound = math.exp(2 * R) * R ** (g + 1) / math.factorial(g + 1)
        measured = polynomial.exp_polynomial(R, degree=g, method="taylor").rel_error
        require(measured <= bound * (1 + 1e-9), f"Taylor degree {g} on [-{R}, {R}]: measured {measured:.3g} above the Lagrange bound {bound:.3g}")
        if g >= 2:  # the remainder is also not far below the bound's leading factor R^{g+1}/(g+1)! (a wrong degree would be)
            require(measured >= R ** (g + 1) / math.factorial(g + 1) * math.exp(-R) * 0.5, f"Taylor degree {g} at R = {R}: error {measured:.3g} "
                    "below what the (g+1)-th term alone leaves")
        worst = max(worst, measured / bound)
    return {"g_max": g_max, "Rs": list(Rs), "max_measured_over_bound": worst}


def _rowkron(A, B):
    return sp.Matrix(A.rows, A.cols * B.cols, lambda i, j: A[i, j // B.cols] * B[i, j % B.cols])


def check_rowwise_kronecker(L: int = 2, k1: int = 2, k2: int = 2, rowkron=_rowkron) -> dict:
    """(U1 V1^T) o (U2 V2^T) == (U1 (x) U2)(V1 (x) V2)^T, rows Kronecker'd, exactly (``rowkron`` the claimed product)."""
    U1 = sp.Matrix(L, k1, lambda i, j: sp.Symbol(f"u{i}{j}"))
    V1 = sp.Matrix(L, k1, lambda i, j: sp.Symbol(f"v{i}{j}"))
    U2 = sp.Matrix(L, k2, lambda i, j: sp.Symbol(f"x{i}{j}"))
    V2 = sp.Matrix(L, k2, lambda i, j: sp.Symbol(f"y{i}{j}"))

    lhs = (U1 * V1.T).multiply_elementwise(U2 * V2.T)
    rhs = rowkron(U1, U2) * rowkron(V1, V2).T
    require((lhs - rhs).expand() == sp.zeros(L, L), "row-wise Kronecker identity fails")
    return {"L": L, "k1": k1, "k2": k2}


def check_normalizer_perturbation(L: int = 3, bound=lambda delta: delta / (1 - delta)) -> dict:
    """The first step of ``approx_gradients``' error bound, exactly: with a~_j = a_j (1 + delta_j),

        f~_j - f_j = f_j (delta_j - dbar) / (1 + dbar),   dbar = sum_j f_j delta_j,

    where f = a / sum(a), f~ = a~ / sum(a~). Hence |delta_j| <= delta < 1 gives |delta_j - dbar| <= 2 delta
    and 1 + dbar >= 1 - delta; sum_j f_j |delta_j - dbar| is the mean absolute deviation (under f)
    of values in [-delta, delta], at most their standard deviation, at most delta. So
    sum_j |f~_j - f_j| <= delta / (1 - delta), the ``eta`` of ``lora_theory.limits.approx._error_bound``
    (``bound(delta)``: the claimed bound).
    The identity is checked symbolically; the bound on a grid of extreme sign patterns
    (delta_j = +-delta) and weights, where it is nearly attained.
    """
    a, dl, f, ft, dbar = perturbed_softmax_symbols(L)
    for j in range(L):
        lhs = ft[j] - f[j]
        rhs = f[j] * (dl[j] - dbar) / (1 + dbar)
        require(sp.simplify(lhs - rhs) == 0, f"perturbation identity fails at j = {j}")
    worst = 0.0
    for delta in (0.01, 0.1, 0.5, 0.9):
        for signs in itertools.product((-1, 1), repeat=L):
            for w in ((1,) * L, tuple(10**i for i in range(L)), (100,) + (1,) * (L - 1)):  # softmax weights a_j
                sub = {**{ai: wi for ai, wi in zip(a, w, strict=True)}, **{di: s * delta for di, s in zip(dl, signs, strict=True)}}
                total = float(sum(abs((ft[j] - f[j]).subs(sub)) for j in range(L)))
                b = bound(delta)
                require(total <= b * (1 + 1e-12), f"row error {total:.4g} above the bound {b:.4g} at delta = {delta}, signs {signs}, weights {w}")
                worst = max(worst, total / b)
    return {"L": L, "max_sum_over_bound": worst}


def run_all() -> dict:
    return {
        "multinomial": check_multinomial_identity(),
        "multinomial_d3": check_multinomial_identity(d=3, g=3),
        "rank_count": check_rank_count(),
        "taylor": check_taylor_remainder(),
        "kronecker": check_rowwise_kronecker(L=3, k1=2, k2=3),
        "normalizer": check_normalizer_perturbation(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2))
