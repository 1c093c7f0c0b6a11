"""Polynomial feature maps: phi(q) . psi(k) = P(q . k) for P(x) = sum_{j <= g} a_j x^j.

By the multinomial theorem (q . k)^j = sum_{|alpha| = j} (j! / alpha!) q^alpha k^alpha, so

    phi(q)_alpha = a_|alpha| (|alpha|! / alpha!) q^alpha,      psi(k)_alpha = k^alpha,

over all multi-indices alpha in N^d with |alpha| <= g: rank k = C(g + d, d). Stacking rows,
U = phi(Q) (L, k) and V = psi(K) (L, k) give P(Q K^T) = U V^T entrywise, in O(L k) time and
memory, without an L x L matrix.

Conditioning: the sum over monomials adds terms of total size sum_j |a_j| (sum_i |q_i k_i|)^j, so
the caller should scale q and k so that ||q|| ||k|| <= 1 (Cauchy-Schwarz), not merely
|q . k| <= 1; ``approx_gradients`` scales by the range bound beta max||Q_i|| max||K_j||.

Order of the monomials (graded, and within a degree grouped by the largest variable index): the
degree-j monomials whose largest variable is v are the degree-(j - 1) monomials whose largest
variable is <= v, times z_v, and those form a *prefix* of the degree-(j - 1) block (of length
C(j - 1 + v, v)). So every degree block is built from d contiguous slices of the previous one,
each times one coordinate: d g broadcast multiplies per block of rows, no gather, no index table
on the device. :class:`FeatureMap` builds the features transposed, (k, b), so that those slices
are contiguous rows.

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

__all__ = ["FeatureMap", "feature_rank", "monomial_table", "polynomial_features"]


def feature_rank(g: int, d: int) -> int:
    """k = C(g + d, d): the number of monomials of degree <= g in d variables."""
    return math.comb(check_int("g", g, low=0) + check_int("d", d, low=1), d)


@lru_cache(maxsize=64)
def _build_plan(g: int, d: int) -> tuple[tuple[tuple[int, int, int, int], ...], int]:
    """((out, prev, n, v), ...) per degree j >= 1 and variable v, and k.

    Rows out .. out + n of the degree-j block are rows prev .. prev + n of the degree-(j - 1) block
    (its prefix of monomials with largest variable <= v, n = C(j - 1 + v, v)) times z_v.
    """
    steps = []
    prev, out = 0, 1  # the degree-0 block is row 0 (the constant 1)
    for j in range(1, g + 1):
        start = out
        for v in range(d):
            n = math.comb(j - 1 + v, v)
            steps.append((out, prev, n, v))
            out += n
        prev = start
    return tuple(steps), out


@lru_cache(maxsize=64)
def monomial_table(g: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index tables for the monomials of degree <= g in d variables, in the order of :class:`FeatureMap`.

    Returns:
        (parent, var, degree, multinomial): each (k,). Monomial m (m >= 1) equals monomial
        ``parent[m]`` times coordinate ``var[m]``; monomial 0 is the constant 1. ``degree[m]`` is
        |alpha| and ``multinomial[m]`` is |alpha|! / alpha! (exact integers, as float64).
    """
    steps, k = _build_plan(g, d)
    parent = np.zeros(k, dtype=np.int64)
    var = np.full(k, -1, dtype=np.int64)
    deg = np.zeros(k, dtype=np.int64)
    counts = np.zeros((k, d), dtype=np.int64)  # alpha per monomial
    mult = np.empty(k, dtype=object)  # exact Python integers: j!/alpha! exceeds int64 beyond 20!
    mult[0] = 1
    for out, prev, n, v in steps:
        sl, src = slice(out, out + n), np.arange(prev, prev + n)
        parent[sl], var[sl], deg[sl] = src, v, deg[prev] + 1
        counts[sl] = counts[src]
        counts[sl, v] += 1
        # multinomial(alpha + e_v) = multinomial(alpha) * j / (alpha_v + 1), exactly divisible
        j = int(deg[prev]) + 1
        mult[sl] = [m * j // int(c) for m, c in zip(mult[src], counts[sl, v], strict=True)]
    return parent, var, deg, np.array([float(m) for m in mult])


class FeatureMap:
    """Monomials of degree <= g of the rows of Z, built transposed: (k, b) for a block of b rows.

    ``FeatureMap(g, d)(Z)`` returns M with M[m, i] = z_i^alpha(m) (the key side psi(Z)^T);
    the query side is ``weights(coef)[:, None] * M`` (phi(Z)^T), or, cheaper, the weights are
    folded into whatever M is contracted with (``lowrank`` does that).

    Args:
        g: degree, >= 0.
        d: number of variables, >= 1.
    """

    def __init__(self, g: int, d: int) -> None:
        self.g = check_int("g", g, low=0)
        self.d = check_int("d", d, low=1)
        self.steps, self.k = _build_plan(self.g, self.d)

    def weights(self, coef: np.ndarray) -> np.ndarray:
        """(k,) float64: a_|alpha| |alpha|!/alpha!, the query-side factor of each monomial."""
        coef = np.asarray(coef, dtype=np.float64)
        if coef.shape != (self.g + 1,):
            raise InvalidArgumentError(f"coef: expected {self.g + 1} coefficients a_0..a_g, got shape {coef.shape}")
        _, _, deg, mult = monomial_table(self.g, self.d)
        return coef[deg] * mult

    def __call__(self, Z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(k, b) monomials of the b rows of Z (b, d), in Z's dtype and device (``out`` reused if given).

        Batched: Z (*lead, b, d) gives (k, *lead, b) (the monomial index first, so that every step
        below still reads and writes contiguous slices); ``out`` then is (k, *lead, >= b).
        """
        b = Z.shape[-2]
        Zt = Z.movedim(-1, 0).contiguous()  # (d, *lead, b): each coordinate a contiguous slab, broadcast along the monomials
        M = torch.empty(self.k, *Z.shape[:-2], b, dtype=Z.dtype, device=Z.device) if out is None else out[..., :b]
        M[0] = 1.0
        for o, p, n, v in self.steps:
            torch.mul(M[p : p + n], Zt[v], out=M[o : o + n])  # (n, *lead, b) = (n, *lead, b) * (*lead, b)
        return M


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
    coef = np.asarray(coef.cpu() if isinstance(coef, torch.Tensor) else coef, dtype=np.float64)
    if coef.ndim != 1 or coef.size < 1:
        raise InvalidArgumentError(f"poly: expected a 1-D array of coefficients a_0..a_g, got shape {tuple(coef.shape)}")
    if Z.shape[1] < 1:
        raise InvalidArgumentError(f"Z: expected at least one column, got shape {tuple(Z.shape)}")
    fmap = FeatureMap(coef.size - 1, Z.shape[1])
    M = fmap(Z).T  # (L, k)
    if side == "query":
        M = M * torch.as_tensor(fmap.weights(coef), dtype=Z.dtype, device=Z.device)  # (k,) a_|alpha| |alpha|!/alpha!
    return M.contiguous()
