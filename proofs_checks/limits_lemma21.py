"""Symbolic checks of Lemma 2.1 and the operation count of Thm F.1 of Hu et al. (2024) (claims ``limits.lemma2.1``,
``limits.thmF.1``), in sympy.

1. :func:`check_lemma21_vec_kron`: vec(A X B^T) = (A (x) B) vec(X) with row-major vec, for generic
   symbolic A (m, n), X (n, p), B (q, p) at several small shapes (``expand`` of the difference is 0).
   The Kronecker product is written out entry by entry, (A (x) B)[(a, b), (i, j)] = A_ai B_bj, not
   taken from a library; ``kron`` is a parameter so a test can hand in a wrong one (B (x) A: the
   column-major form) and watch the check fail.
2. :func:`check_thmF1_count`: the multiply-adds of the closed form's matrix products (Lemma 3.1/3.2:
   S = beta Q K^T, O = f V, q = c V^T, G_Q = beta X_Q^T (p K), G_K = beta X_K^T (p^T Q),
   G_V = X_V^T (f^T c), Q = X_Q W_Q, ..., dL/dA = (alpha/r) B^T G, dL/dB = (alpha/r) G A^T), summed
   symbolically with T(a, b, c) = a b c, equal O(T(d, L, L) + T(d, d, L) + T(d, d, r)): the count is
   a polynomial in L, d, r whose every monomial is L^2 d, L d^2 or d^2 r (up to constants).

Each function returns a dict of what it checked and raises :class:`~proofs_checks.ProofCheckFailed` otherwise.
"""
from __future__ import annotations

import sympy as sp

from . import require

__all__ = ["check_lemma21_vec_kron", "check_thmF1_count", "closed_form_products", "kron", "run_all"]


def _mat(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}"))


def kron(A: sp.Matrix, B: sp.Matrix) -> sp.Matrix:
    """(A (x) B)[(a, b), (i, j)] = A[a, i] B[b, j], rows (a, b) and columns (i, j) in row-major order."""
    m, n = A.shape
    q, p = B.shape
    return sp.Matrix(m * q, n * p, lambda r, c: A[r // q, c // p] * B[r % q, c % p])


def _vec(M: sp.Matrix) -> sp.Matrix:
    """Row-major vec: the rows of M one after another, as a column."""
    return sp.Matrix([M[i, j] for i in range(M.rows) for j in range(M.cols)])


def check_lemma21_vec_kron(shapes=((2, 2, 2, 2), (2, 3, 2, 1), (1, 2, 3, 2), (3, 2, 2, 3)), kron=kron) -> dict:
    """vec(A X B^T) == (A (x) B) vec(X), row-major, for A (m, n), X (n, p), B (q, p) of each (m, n, p, q) in ``shapes``."""
    for m, n, p, q in shapes:
        A, X, B = _mat("a", m, n), _mat("x", n, p), _mat("b", q, p)
        diff = (_vec(A * X * B.T) - kron(A, B) * _vec(X)).applyfunc(sp.expand)
        require(diff == sp.zeros(m * q, 1), f"Lemma 2.1: vec(A X B^T) != (A (x) B) vec(X) at (m, n, p, q) = {(m, n, p, q)}")
    return {"shapes": list(shapes)}


def closed_form_products(adapt: str = "qkv") -> list[tuple[str, tuple[sp.Expr, sp.Expr, sp.Expr]]]:
    """The matrix products of the closed form, each as (name, (a, b, c)): an (a x b) by (b x c) product, a b c multiply-adds."""
    L, d, r = sp.symbols("L d r", positive=True)
    out = [("Q = X_Q W_Q", (L, d, d)), ("K = X_K W_K", (L, d, d)), ("V = X_V W_V", (L, d, d)),
           ("S = beta Q K^T", (L, d, L)), ("O = f V", (L, L, d)), ("q = c V^T", (L, d, L))]
    if "q" in adapt:
        out += [("p K", (L, L, d)), ("G_Q = beta X_Q^T (p K)", (d, L, d))]
    if "k" in adapt:
        out += [("p^T Q", (L, L, d)), ("G_K = beta X_K^T (p^T Q)", (d, L, d))]
    if "v" in adapt:
        out += [("f^T c", (L, L, d)), ("G_V = X_V^T (f^T c)", (d, L, d))]
    for mu in adapt:
        out += [(f"dL/dA_{mu} = (alpha/r) B^T G", (r, d, d)), (f"dL/dB_{mu} = (alpha/r) G A^T", (d, d, r))]
    # the LoRA weights W = W* + (alpha/r) B A
    out += [(f"W_{mu} = W* + (alpha/r) B A", (d, r, d)) for mu in adapt]
    return out


def check_thmF1_count(adapt: str = "qkv", products=closed_form_products) -> dict:
    """sum of a b c over the closed form's products is a combination of L^2 d, L d^2, d^2 r with positive integer coefficients."""
    L, d, r = sp.symbols("L d r", positive=True)
    total = sp.expand(sum(a * b * c for _, (a, b, c) in products(adapt)))
    poly = sp.Poly(total, L, d, r)
    allowed = {(2, 1, 0), (1, 2, 0), (0, 2, 1)}  # T(d, L, L), T(d, d, L), T(d, d, r)
    monomials = set(poly.monoms())
    require(monomials <= allowed, f"Thm F.1: the closed form's count has monomials {sorted(monomials - allowed)} outside L^2 d, L d^2, d^2 r")
    require(all(c > 0 for c in poly.coeffs()), "Thm F.1: a non-positive coefficient in the count")
    require((2, 1, 0) in monomials, "Thm F.1: no L^2 d term (the count misses the score products)")
    return {"adapt": adapt, "count": str(total), "L2d_coefficient": int(poly.coeff_monomial(L**2 * d))}


def run_all() -> dict:
    return {"lemma21": check_lemma21_vec_kron(), "thmF1_qv": check_thmF1_count("qv"), "thmF1_qkv": check_thmF1_count("qkv")}


if __name__ == "__main__":
    print(run_all())
