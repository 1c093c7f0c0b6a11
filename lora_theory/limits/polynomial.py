"""Polynomial approximation of exp: P(s) ~ e^s on [-R, R] with sup relative error <= eps.

Chebyshev interpolation of t -> e^{R t} on [-1, 1] (t = s / R) at the g + 1 Chebyshev points
of the first kind, the lowest degree g whose *measured* sup relative error
max_{|s| <= R} |P(s) - e^s| / e^s is <= eps; a truncated Taylor series of e^s at 0 for
comparison. Coefficients are kept in the power basis of t (well conditioned on [-1, 1] for the
degrees used here), which is what the feature map needs after scaling q and k by sqrt(beta/R).

The degree's order is Theta(max{B, log(1/eps) / log(log(1/eps) / B)}) on an interval of
length B = 2R (Aggarwal & Alman, CCC 2022); :func:`degree_bound` returns that order times a
constant fitted on a grid of (R, eps) (see ``DEGREE_BOUND_C``).

Reference: Alman & Song (2023) Sec. 3 (polynomial method); Hu et al. (2024) Sec. 5; claims
``limits.degree_bound``, ``limits.thm3.1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.polynomial import chebyshev as C

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive

__all__ = ["DEGREE_BOUND_C", "ExpPolynomial", "degree_bound", "degree_order", "exp_polynomial"]

Method = Literal["chebyshev", "taylor"]
_GRID = np.cos(np.linspace(0.0, math.pi, 4097))  # Chebyshev-extrema grid on [-1, 1] (dense near the ends)
_GRID = np.concatenate([_GRID, np.linspace(-1.0, 1.0, 2049)])


@dataclass(frozen=True)
class ExpPolynomial:
    """P(s) = sum_j coef[j] (s / R)^j ~ e^s on [-R, R], with its measured sup relative error.

    Attributes:
        R: half-width of the interval.
        degree: g.
        coef: (g + 1,) power-basis coefficients in t = s / R (float64).
        rel_error: measured max |P(s) - e^s| / e^s over a 6146-point grid of [-R, R].
        method: "chebyshev" or "taylor".
        eps: the target it was built for (None when the degree was given).
    """

    R: float
    degree: int
    coef: np.ndarray = field(repr=False)
    rel_error: float
    method: str
    eps: float | None = None

    def __call__(self, s: np.ndarray | float) -> np.ndarray:
        """P(s) for scores s (NumPy array or float)."""
        s = np.asarray(s, dtype=np.float64)
        t = s / self.R if self.R > 0 else np.zeros_like(s)  # R = 0: the interval is {0}, P is its constant term
        return np.polynomial.polynomial.polyval(t, self.coef)

    def feature_rounding(self, n_terms: int, unit_roundoff: float) -> float:
        """Relative rounding error of summing P's monomial expansion in floating point.

        The feature map evaluates P(t) as a sum of ``n_terms`` products whose absolute values add
        up to at most sum_j |coef_j| (for ||q'|| ||k'|| <= 1), while P(t) ~ e^{R t} >= e^{-R}.
        So the relative error of the sum is at most n_terms * u * sum_j |coef_j| * e^R: large
        R makes the power basis lose every digit, and this term is what says so.
        """
        with np.errstate(over="ignore"):  # e^R overflows past R ~ 709.8: the bound is then inf (no digit left), as it should say
            return n_terms * unit_roundoff * float(np.abs(self.coef).sum()) * float(np.exp(self.R))

    @property
    def certified(self) -> bool:
        """Whether the measured error meets the target (True when no target was set)."""
        return self.eps is None or self.rel_error <= self.eps

    @property
    def min_value_ratio(self) -> float:
        """min over the grid of P(s) / e^s; > 0 means P is positive on [-R, R]."""
        t = _GRID
        return float(np.min(np.polynomial.polynomial.polyval(t, self.coef) / np.exp(self.R * t)))


def _rel_error(coef: np.ndarray, R: float) -> float:
    t = _GRID
    exact = np.exp(R * t)
    return float(np.max(np.abs(np.polynomial.polynomial.polyval(t, coef) - exact) / exact))


@lru_cache(maxsize=4096)
def _fit(R: float, g: int, method: str) -> tuple[tuple[float, ...], float]:
    if method == "chebyshev":
        if R == 0.0:
            coef = np.zeros(g + 1)
            coef[0] = 1.0
        else:
            cheb = C.chebinterpolate(lambda t: np.exp(R * t), g)
            # Power basis in t = s / R, not in s: the feature map then works on q, k scaled into the
            # unit ball, every monomial is <= 1 and the feature sum's rounding is bounded by
            # n u sum_j |coef_j| (ExpPolynomial.feature_rounding); in s the monomials would range
            # over R^j and the coefficients over R^-j, the same products but scaled far apart. The
            # Chebyshev -> power conversion can lose digits at high degree, which is why the error
            # below is measured on these converted coefficients (the ones actually used).
            coef = C.cheb2poly(cheb)
    else:  # Taylor of e^s at 0, written in t = s / R: coef_j = R^j / j!
        coef = np.array([R**j / math.factorial(j) for j in range(g + 1)])
    return tuple(float(c) for c in coef), _rel_error(coef, R)


def exp_polynomial(
    R: float,
    eps: float | None = None,
    *,
    method: Method = "chebyshev",
    degree: int | None = None,
    max_degree: int = 40,
) -> ExpPolynomial:
    """The lowest-degree P with sup_{|s| <= R} |P(s) - e^s| / e^s <= eps (or a given degree).

    Args:
        R: half-width of the score interval, >= 0.
        eps: target sup relative error in (0, 1); required unless ``degree`` is given.
        method: "chebyshev" (interpolation at Chebyshev points in t = s/R) or "taylor".
        degree: use exactly this degree instead of searching (the result records its error).
        max_degree: the largest degree tried; beyond it the power basis in t loses accuracy.

    Returns:
        An :class:`ExpPolynomial`. If no degree <= ``max_degree`` reaches ``eps``, the
        best one is returned with ``certified == False`` (callers decide whether to raise).

    Reference: Aggarwal & Alman (2022); Alman & Song (2023), Lemma 3.2-3.3.
    """
    R = check_positive("R", R, allow_zero=True)
    check_choice("method", method, ("chebyshev", "taylor"))
    max_degree = check_int("max_degree", max_degree, low=0, high=60)
    if degree is not None:
        degree = check_int("degree", degree, low=0, high=60)
        coef, err = _fit(R, degree, method)
        return ExpPolynomial(R, degree, np.array(coef), err, method, eps)
    if eps is None:
        raise InvalidArgumentError("eps: expected a number in (0, 1) when degree is not given, got None")
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    best = None
    for g in range(max_degree + 1):
        coef, err = _fit(R, g, method)
        if best is None or err < best[2]:
            best = (g, coef, err)
        if err <= eps:
            return ExpPolynomial(R, g, np.array(coef), err, method, eps)
    g, coef, err = best
    return ExpPolynomial(R, g, np.array(coef), err, method, eps)


def degree_order(R: float, eps: float) -> float:
    """max{B, log(1/eps) / max(1, log(log(1/eps) / B))} with B = 2R (the Aggarwal-Alman order).

    The ``max(1, .)`` keeps the order continuous where log(1/eps) / B drops below e (there the
    printed log(log(1/eps)/B) tends to 0 and the formula is only meant asymptotically); the
    order is unchanged up to a constant.
    """
    R = check_positive("R", R, allow_zero=True)
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    B = 2.0 * R
    q = math.log(1.0 / eps)
    second = q / max(1.0, math.log(q / B)) if B > 0 else q
    return max(B, second, 1.0)


#: The constant of :func:`degree_bound`: the largest ratio (minimal Chebyshev degree) /
#: degree_order(R, eps) over the certified points of R in [0.01, 16] x eps in [1e-12, 1e-1] (fitted by
#: ``lora_theory.limits.norm_sweeps.fit_degree_constant``; re-fit with ``python -m lora_theory.limits.norm_sweeps``).
DEGREE_BOUND_C = 1.5


def degree_bound(R: float, eps: float, *, C: float | None = None) -> int:
    """ceil(C * max{B, log(1/eps) / log(log(1/eps) / B)}), B = 2R: an upper bound on the degree.

    Args:
        R: half-width of the interval.
        eps: target relative error.
        C: the constant; default :data:`DEGREE_BOUND_C` (fitted, see there).

    Reference: Aggarwal & Alman (2022), Thm 1.2; claim ``limits.degree_bound``.
    """
    return math.ceil((DEGREE_BOUND_C if C is None else C) * degree_order(R, eps))
