"""Polynomial approximation of exp: P(s) ~ e^s on [-R, R] with sup relative error <= eps.

Chebyshev interpolation of t -> e^{R t} on [-1, 1] (t = s / R) at the g + 1 Chebyshev points
of the first kind, the lowest degree g whose *certified* sup relative error
max_{|s| <= R} |P(s) - e^s| / e^s is <= eps; a truncated Taylor series of e^s at 0 for
comparison. "Certified": the relative error eps(t) = P(t) e^{-R t} - 1 is evaluated on a fine
grid and the extremes on each gap between neighbouring grid points are padded by
(gap / 2) * 2 max|eps'| at its ends (the mean value theorem, with a factor 2 for eps' itself
being sampled), so the value returned bounds the sup over the whole interval, not only over
the grid points. Coefficients are kept in the power basis of t (well conditioned on [-1, 1] for the
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
# Chebyshev-extrema points (dense near the ends) and uniform points on [-1, 1], sorted; the largest
# gap between neighbours is ~1e-3, which the derivative pad of _eps_intervals covers.
_GRID = np.unique(np.concatenate([np.cos(np.linspace(0.0, math.pi, 4097)), np.linspace(-1.0, 1.0, 2049)]))
#: Largest R whose e^{R t} is finite in float64 on [-1, 1] with room for the power-basis sums.
MAX_FINITE_R = 700.0


@dataclass(frozen=True)
class ExpPolynomial:
    """P(s) = sum_j coef[j] (s / R)^j ~ e^s on [-R, R], with its measured sup relative error.

    Attributes:
        R: half-width of the interval.
        degree: g.
        coef: (g + 1,) power-basis coefficients in t = s / R (float64).
        rel_error: certified sup_{|s| <= R} |P(s) - e^s| / e^s: the maximum over a fine grid plus
            the derivative pad (see the module docstring); ``inf`` when P or e^{R t} is not finite
            in float64 (R beyond ~700, or overflowing coefficients), never NaN.
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

    @property
    def finite(self) -> bool:
        """Whether every coefficient is finite (False past R ~ 700: nothing can be computed with P)."""
        return bool(np.all(np.isfinite(self.coef)))

    def feature_rounding(self, n_terms: int, unit_roundoff: float) -> float:
        """Relative rounding error of summing P's monomial expansion in floating point.

        The feature map evaluates P(t) as a sum of ``n_terms`` products whose absolute values add
        up to at most sum_j |coef_j| (for ||q'|| ||k'|| <= 1), while P(t) ~ e^{R t} >= e^{-R}.
        So the relative error of the sum is at most n_terms * u * sum_j |coef_j| * e^R: large
        R makes the power basis lose every digit, and this term is what says so (``inf`` when it
        overflows or the coefficients are not finite).
        """
        with np.errstate(over="ignore", invalid="ignore"):  # e^R overflows past R ~ 709.8: then inf (no digit left), as it should say
            out = n_terms * unit_roundoff * float(np.abs(self.coef).sum()) * float(np.exp(self.R))
        return out if math.isfinite(out) else math.inf

    def abs_sum(self, rho: np.ndarray | float) -> np.ndarray:
        """sum_j |coef_j| rho^j: the largest sum of |monomial products| when ||q'|| ||k'|| <= rho <= 1."""
        return np.polynomial.polynomial.polyval(np.asarray(rho, dtype=np.float64), np.abs(self.coef))

    def error_range(self, rho: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Certified (min, max) of eps(t) = P(t) e^{-R t} - 1 over |t| <= rho, for each rho in [0, 1].

        Row-wise refinement of ``rel_error``: a query row whose scores satisfy |t_ij| <= rho_i
        only sees eps on [-rho_i, rho_i]. Each value is a grid extremum over the grid points up to
        over every grid interval that meets [-rho, rho], padded like ``rel_error``.

        Returns:
            (lo, hi) arrays shaped like ``rho``; (-inf, inf) when P is not finite.
        """
        rho = np.asarray(rho, dtype=np.float64)
        key, lo, hi = _range_table(self.R, tuple(self.coef))
        idx = np.clip(np.searchsorted(key, rho, side="right") - 1, 0, key.size - 1)  # every interval that meets [-rho, rho]
        return lo[idx], hi[idx]

    def slope_bound(self, rho: np.ndarray | float) -> np.ndarray:
        """Certified sup |eps'(t)| over |t| <= rho, for each rho in [0, 1] (Lipschitz constant of eps there).

        With it, |eps(t_j) - eps(tau)| <= slope |t_j - tau| for scores and their mean in [-rho, rho]: a
        row whose scores spread little under f~ sees a nearly constant eps (which cancels in f~).
        """
        rho = np.asarray(rho, dtype=np.float64)
        key, run = _slope_table(self.R, tuple(self.coef))
        return run[np.clip(np.searchsorted(key, rho, side="right") - 1, 0, key.size - 1)]

    @property
    def certified(self) -> bool:
        """Whether the measured error meets the target (True when no target was set)."""
        return self.eps is None or self.rel_error <= self.eps

    @property
    def min_value_ratio(self) -> float:
        """min over the grid of P(s) / e^s; > 0 means P is positive on [-R, R]."""
        iv = _eps_intervals(self.coef, self.R)
        return float(np.min(iv[1])) + 1.0 if iv is not None else -math.inf


def _eps_intervals(coef: np.ndarray, R: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Certified (lo, hi) of eps(t) = P(t) e^{-R t} - 1 on each interval between neighbouring grid points.

    On [a, b]: eps lies within [min(eps(a), eps(b)) - pad, max(eps(a), eps(b)) + pad] with
    pad = (b - a) / 2 * 2 max(|eps'(a)|, |eps'(b)|) (the mean value theorem, with a factor 2 for
    eps' itself being sampled; the grid is ~1e3 times finer than the oscillation of eps' for the
    degrees used), eps'(t) = (P'(t) - R P(t)) e^{-R t}, plus the float64 rounding of evaluating
    eps at a and b (Horner's bound gamma_{2g+4} sum_j |c_j| |t|^j e^{-R t}). Returns (key, lo, hi) with key = the
    smallest |t| on the interval, or None when anything overflows (R past ~709).
    """
    t = _GRID
    pc = np.polynomial.polynomial
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # overflow is reported as None (then inf), never NaN
        w = np.exp(-R * t)
        P = pc.polyval(t, coef)
        eps = P * w - 1.0
        deps = (pc.polyval(t, pc.polyder(coef)) - R * P) * w if coef.size > 1 else -R * P * w
        # rounding of evaluating eps itself in float64 (Horner: gamma_{2g+2} sum_j |c_j| |t|^j, then the
        # product with e^{-R t} and the subtraction): the grid values are only known to within this
        u = np.finfo(np.float64).eps / 2
        n = 2 * coef.size + 4
        noise = n * u / (1 - n * u) * pc.polyval(np.abs(t), np.abs(coef)) * w + 2 * u * np.abs(eps + 1.0)
    if not (np.all(np.isfinite(eps)) and np.all(np.isfinite(deps)) and np.all(np.isfinite(noise))):
        return None
    gap = np.diff(t)
    pad = gap * np.maximum(np.abs(deps[:-1]), np.abs(deps[1:])) + np.maximum(noise[:-1], noise[1:])  # (gap / 2) * 2 max|eps'| + evaluation noise
    lo = np.minimum(eps[:-1], eps[1:]) - pad
    hi = np.maximum(eps[:-1], eps[1:]) + pad
    key = np.where((t[:-1] <= 0) & (t[1:] >= 0), 0.0, np.minimum(np.abs(t[:-1]), np.abs(t[1:])))
    return key, lo, hi


@lru_cache(maxsize=256)
def _slope_table(R: float, coef: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Interval keys sorted, and the running certified max of |eps'| over the intervals up to each key.

    eps'(t) = (P' - R P) e^{-R t}, eps''(t) = (P'' - 2 R P' + R^2 P) e^{-R t}; on [a, b]:
    |eps'| <= max(|eps'(a)|, |eps'(b)|) + (b - a) max(|eps''(a)|, |eps''(b)|) + evaluation noise.
    """
    c = np.array(coef)
    t = _GRID
    pc = np.polynomial.polynomial
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # overflow -> the inf table below
        w = np.exp(-R * t)
        P, P1 = pc.polyval(t, c), pc.polyval(t, pc.polyder(c)) if c.size > 1 else np.zeros_like(t)
        P2 = pc.polyval(t, pc.polyder(c, 2)) if c.size > 2 else np.zeros_like(t)
        d1 = np.abs((P1 - R * P) * w)
        d2 = np.abs((P2 - 2 * R * P1 + R * R * P) * w)
        u = np.finfo(np.float64).eps / 2
        n = 2 * c.size + 6
        j = np.arange(c.size)
        absP = pc.polyval(np.abs(t), np.abs(c))
        absP1 = pc.polyval(np.abs(t), (j * np.abs(c))[1:]) if c.size > 1 else np.zeros_like(t)
        noise = n * u / (1 - n * u) * (absP1 + R * absP) * w  # the float64 rounding of evaluating eps'
        bound = np.maximum(d1[:-1], d1[1:]) + np.diff(t) * np.maximum(d2[:-1], d2[1:]) + np.maximum(noise[:-1], noise[1:])
    key = np.where((t[:-1] <= 0) & (t[1:] >= 0), 0.0, np.minimum(np.abs(t[:-1]), np.abs(t[1:])))
    order = np.argsort(key, kind="stable")
    run = np.maximum.accumulate(bound[order])
    if not np.all(np.isfinite(run)):
        run = np.full_like(run, np.inf)
    return key[order], run


def _rel_error(coef: np.ndarray, R: float) -> float:
    iv = _eps_intervals(coef, R)
    if iv is None:
        return math.inf
    return float(max(np.max(np.abs(iv[1])), np.max(np.abs(iv[2]))))


@lru_cache(maxsize=256)
def _range_table(R: float, coef: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval keys (smallest |t|) sorted, and the running (min lo, max hi) over the intervals up to each key."""
    iv = _eps_intervals(np.array(coef), R)
    if iv is None:
        return np.array([0.0]), np.array([-np.inf]), np.array([np.inf])
    key, lo, hi = iv
    order = np.argsort(key, kind="stable")
    return key[order], np.minimum.accumulate(lo[order]), np.maximum.accumulate(hi[order])


@lru_cache(maxsize=4096)
def _fit(R: float, g: int, method: str) -> tuple[tuple[float, ...], float]:
    if R > MAX_FINITE_R:  # e^{R t} and the coefficients overflow float64: nothing to fit
        return tuple([math.inf] * (g + 1)), math.inf
    if method == "chebyshev":
        if R == 0.0:
            coef = np.zeros(g + 1)
            coef[0] = 1.0
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # overflowing coefficients are caught by _rel_error (inf)
                cheb = C.chebinterpolate(lambda t: np.exp(R * t), g)
            # Power basis in t = s / R, not in s: the feature map then works on q, k scaled into the
            # unit ball, every monomial is <= 1 and the feature sum's rounding is bounded by
            # n u sum_j |coef_j| (ExpPolynomial.feature_rounding); in s the monomials would range
            # over R^j and the coefficients over R^-j, the same products but scaled far apart. The
            # Chebyshev -> power conversion can lose digits at high degree, which is why the error
            # below is measured on these converted coefficients (the ones actually used).
            with np.errstate(over="ignore", invalid="ignore"):
                coef = C.cheb2poly(cheb)
    else:  # Taylor of e^s at 0, written in t = s / R: coef_j = R^j / j!
        coef = np.array([math.exp(j * math.log(R) - math.lgamma(j + 1)) if R > 0 else float(j == 0) for j in range(g + 1)])
    err = _rel_error(coef, R) if np.all(np.isfinite(coef)) else math.inf
    return tuple(float(c) for c in coef), err


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
        R: half-width of the score interval, >= 0 (finite; beyond ~700 nothing is certifiable in
            float64 and the result has ``rel_error = inf``).
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
        if best is None or err < best[2]:  # err is never NaN (inf when not finite), so this comparison is total
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
#: ``lora_theory.limits.norm_sweeps.fit_degree_constant``; re-fit with ``python -m lora_theory.limits.norm_sweeps``:
#: 1.520, at R = 8, eps = 1e-12, degree 28, since the certified error includes the between-grid pad; 1.50 before).
DEGREE_BOUND_C = 1.53


def degree_bound(R: float, eps: float, *, C: float | None = None) -> int:
    """ceil(C * max{B, log(1/eps) / log(log(1/eps) / B)}), B = 2R: an upper bound on the degree.

    Args:
        R: half-width of the interval.
        eps: target relative error.
        C: the constant; default :data:`DEGREE_BOUND_C` (fitted, see there).

    Reference: Aggarwal & Alman (2022), Thm 1.2; claim ``limits.degree_bound``.
    """
    return math.ceil((DEGREE_BOUND_C if C is None else C) * degree_order(R, eps))
