"""Polynomial feature maps: phi(q) . psi(k) = P(q . k) for P(x) = sum_{j <= g} a_j x^j.

By the multinomial theorem (q . k)^j = sum_{|alpha| = j} (j! / alpha!) q^alpha k^alpha, so

    phi(q)_alpha = a_|alpha| (|alpha|! / alpha!) q^alpha,      psi(k)_alpha = k^alpha,

over all multi-indices alpha in N^d with |alpha| <= g: rank k = C(g + d, d). Stacking rows,
U = phi(Q) (L, k) and V = psi(K) (L, k) give P(Q K^T) = U V^T entrywise, in O(L k) time and
memory, without an L x L matrix.

Conditioning: the sum over monomials adds terms of total size sum_j |a_j| (sum_i |q_i k_i|)^j, so
the caller should scale q and k so that ||q|| ||k|| <= 1 (Cauchy-Schwarz), not merely
|q . k| <= 1; ``approx_gradients`` scales by the range bound beta max||Q_i|| max||K_j||.

Monomials are built degree by degree, each degree-j monomial as (its parent of degree j - 1)
times one coordinate, so the work is one gather and one multiply per degree over all rows at
once (no Python loop over rows).

Reference: Alman & Song (2023), Lemma 3.1 (the polynomial method); Hu et al. (2024),
Sec. 5; claims ``limits.rank_count``, ``limits.thm3.1``.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

from .._validate import InvalidArgumentError, check_choice, check_finite, check_int, check_matrix
from .polynomial import ExpPolynomial

__all__ = ["feature_rank", "monomial_table", "polynomial_features"]


def feature_rank(g: int, d: int) -> int:
    """k = C(g + d, d): the number of monomials of degree <= g in d variables."""
    return math.comb(check_int("g", g, low=0) + check_int("d", d, low=1), d)


@lru_cache(maxsize=256)
def monomial_table(g: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index tables for the monomials of degree <= g in d variables, in graded order.

    Returns:
        (parent, var, degree, multinomial): each (k,). Monomial m (m >= 1) equals monomial
        ``parent[m]`` times coordinate ``var[m]``; monomial 0 is the constant 1. ``degree[m]`` is
        |alpha| and ``multinomial[m]`` is |alpha|! / alpha!.
    """
    parent, var, deg, mult = [0], [-1], [0], [1.0]
    # Each monomial is a non-decreasing tuple of variable indices; extend only by var >= last,
    # so every monomial appears exactly once.
    frontier = [(0, -1, ())]  # (index, last var, exponent tuple as a sorted index tuple)
    for j in range(1, g + 1):
        nxt = []
        for idx, last, tup in frontier:
            for v in range(max(last, 0), d):
                new = tup + (v,)
                counts = np.bincount(np.array(new), minlength=d)
                parent.append(idx)
                var.append(v)
                deg.append(j)
                # exact integer arithmetic: np.prod would overflow int64 for factorials beyond 20!
                mult.append(float(math.factorial(j) // math.prod(math.factorial(int(c)) for c in counts)))
                nxt.append((len(parent) - 1, v, new))
        frontier = nxt
    return np.array(parent), np.array(var), np.array(deg), np.array(mult)


def polynomial_features(
    Z: torch.Tensor,
    poly: ExpPolynomial | np.ndarray | torch.Tensor,
    side: Literal["query", "key"] = "query",
) -> torch.Tensor:
    """phi(Z) (query side) or psi(Z) (key side), (L, k) with k = C(g + d, d).

    Args:
        Z: (L, d) rows q_i (query side) or k_j (key side).
        poly: the coefficients a_0..a_g of P(x) = sum_j a_j x^j in the variable x = q . k, as
            an array, or an :class:`ExpPolynomial` (whose variable is t = s / R: scale q and k
            by sqrt(beta / R) first, as ``approx_gradients`` does).
        side: "query" puts the coefficients a_|alpha| |alpha|!/alpha! on phi; "key" gives the
            plain monomials psi.

    Returns:
        (L, k) tensor, same dtype and device as Z, with phi(Q) psi(K)^T = P(Q K^T).

    Reference: Alman & Song (2023), Lemma 3.1; claim ``limits.rank_count``.
    """
    check_matrix("Z", Z, (None, None))
    check_finite("Z", Z)
    check_choice("side", side, ("query", "key"))
    coef = poly.coef if isinstance(poly, ExpPolynomial) else poly
    coef = torch.as_tensor(np.asarray(coef.cpu() if isinstance(coef, torch.Tensor) else coef, dtype=np.float64))
    if coef.dim() != 1 or coef.numel() < 1:
        raise InvalidArgumentError(f"poly: expected a 1-D array of coefficients a_0..a_g, got shape {tuple(coef.shape)}")
    g, d = coef.numel() - 1, Z.shape[1]
    parent, var, deg, mult = (torch.as_tensor(a) for a in monomial_table(g, d))
    L, k = Z.shape[0], parent.numel()
    M = torch.empty(L, k, dtype=Z.dtype, device=Z.device)  # (L, k) monomials, graded order
    M[:, 0] = 1.0
    start = 1
    for j in range(1, g + 1):
        n_j = math.comb(j + d - 1, d - 1)  # monomials of degree exactly j
        sl = slice(start, start + n_j)
        M[:, sl] = M[:, parent[sl].to(Z.device)] * Z[:, var[sl].to(Z.device)]  # (L, n_j)
        start += n_j
    if side == "query":
        w = (coef[deg] * mult).to(dtype=Z.dtype, device=Z.device)  # (k,) a_|alpha| |alpha|!/alpha!
        M *= w
    return M
