"""What the polynomial method will cost before it runs: degree g, rank k = C(g + d, d), bytes, operations.

For an instance (or a shape and a score range R) and a target eps, :func:`approx_plan` returns
the degree the method needs (measured by :func:`exp_polynomial` when it is reachable, else the
Aggarwal-Alman bound :func:`degree_bound`), the feature rank k (an exact Python int, reported even
when it is far too large to build), the bytes of the two (L, k) feature matrices and the
multiply-add counts of the approximate and the exact gradient. Nothing of size L x k is allocated.

    exact  ~ L^2 (4 d + d min(n_adapted, 2) + 3)             (blocked closed form, Lemma 3.1)
    approx ~ L k (2 + 2 d + 2 d^2 min(n_adapted, 2) + 2 d)   (features + the low-rank chain)

Reference: Hu et al. (2024), Thm 3.1 / A.1 and Sec. 5; Alman & Song (2023), Lemma 3.2-3.3;
claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .instance import AttentionLoRAInstance
from .polynomial import degree_bound, exp_polynomial

__all__ = ["ApproxPlan", "approx_flops", "approx_plan", "exact_flops"]


def exact_flops(L: int, d: int, n_adapted: int = 3) -> float:
    """Multiply-adds of the blocked exact gradient: 4 L^2 d (S, f V, c V^T, f^T c) + L^2 d per Q/K side + 3 L^2."""
    return L * L * (4 * d + d * min(n_adapted, 2) + 3)


def approx_flops(L: int, d: int, k: int, n_adapted: int = 3) -> float:
    """Multiply-adds of approx_gradients: features 2 L k, forward 2 L k d, 2 L k d^2 per Q/K side, 2 L k d for V."""
    return float(L) * float(k) * (2 + 2 * d + 2 * d * d * min(n_adapted, 2) + 2 * d)


@dataclass(frozen=True)
class ApproxPlan:
    """The polynomial method's cost for one (L, d, R, eps), computed without running it.

    Attributes:
        L, d, R, eps, method: the problem (R: the score range the polynomial must cover).
        degree: g; ``degree_source`` says "measured" (the lowest degree whose measured sup relative
            error on [-R, R] is <= eps, up to ``max_degree``) or "bound" (beyond it: the fitted
            Aggarwal-Alman bound, an estimate).
        k: C(g + d, d) features per row (exact integer, may be astronomically large).
        feature_bytes: bytes of the two (L, k) feature matrices in ``dtype`` (a float).
        approx_flops, exact_flops: multiply-adds of the two methods; ``cost_ratio`` = approx / exact.
        n_adapted: how many of W_Q, W_K, W_V carry LoRA (2 for "qv", 3 for "qkv").
    """

    L: int
    d: int
    R: float
    eps: float
    method: str
    degree: int
    degree_source: Literal["measured", "bound"]
    k: int
    feature_bytes: float
    approx_flops: float
    exact_flops: float
    n_adapted: int

    @property
    def cost_ratio(self) -> float:
        """approx_flops / exact_flops: < 1 where the polynomial method is predicted to be cheaper."""
        return self.approx_flops / self.exact_flops


def approx_plan(
    inst: AttentionLoRAInstance | None = None,
    eps: float = 1e-3,
    *,
    L: int | None = None,
    d: int | None = None,
    R: float | None = None,
    adapt: str = "qkv",
    method: Literal["chebyshev", "taylor"] = "chebyshev",
    max_degree: int = 40,
    dtype: torch.dtype = torch.float64,
) -> ApproxPlan:
    """Degree, rank, bytes and operation counts of ``approx_gradients`` for an instance or a shape.

    Args:
        inst: an instance (L, d, adapt and R are read from it; R is the Cauchy-Schwarz bound
            :func:`lora_theory.score_range_bound`, the range ``approx_gradients`` covers), or None.
        eps: target sup relative error of P(s) ~ e^s, in (0, 1).
        L, d, R, adapt: the shape, score range and adapted weights when ``inst`` is None.
        method: "chebyshev" or "taylor"; max_degree: the largest degree searched by measurement.
        dtype: of the features (for ``feature_bytes``).

    Returns:
        An :class:`ApproxPlan`.
    """
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    check_choice("method", method, ("chebyshev", "taylor"))
    if inst is not None:
        from .lowrank import score_range_bound  # lowrank imports exact; kept local to keep plan light

        L, d, adapt = inst.L, inst.d, inst.adapt
        R = score_range_bound(inst) if R is None else check_positive("R", R, allow_zero=True)
    else:
        if L is None or d is None or R is None:
            raise InvalidArgumentError(f"inst: expected an instance, or L, d and R, got L={L!r}, d={d!r}, R={R!r}")
        L, d = check_int("L", L, low=1), check_int("d", d, low=1)
        R = check_positive("R", R, allow_zero=True)
        check_choice("adapt", adapt, ("qv", "qkv"))
    n_adapted = len(adapt)
    poly = exp_polynomial(R, eps, method=method, max_degree=max_degree)
    if poly.certified:
        degree, source = poly.degree, "measured"
    else:
        degree, source = max(degree_bound(R, eps), poly.degree + 1), "bound"
    k = math.comb(degree + d, d)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return ApproxPlan(L=L, d=d, R=float(R), eps=eps, method=method, degree=degree, degree_source=source, k=k,
                      feature_bytes=2.0 * L * float(k) * itemsize, approx_flops=approx_flops(L, d, k, n_adapted),
                      exact_flops=exact_flops(L, d, n_adapted), n_adapted=n_adapted)
