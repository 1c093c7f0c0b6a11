"""ALoRAGC(L, d, r, eps): the LoRA gradients with max-entry error <= eps, the problem as Hu et al. state it.

The polynomial method's ``eps`` (:func:`lora_theory.approx_gradients`) is the sup relative error of
P(s) ~ e^s; the theorems' eps bounds the gradient's entries: ||G~ - G||_max <= eps. The two differ
by the gradient's scale (entries of dL/dA grow with L for bounded inputs), which the papers absorb
by asking the polynomial for eps / poly(L) (AS24; still 1/poly(L), so the rank stays L^{o(1)}).
:func:`max_entry_gradients` does exactly that with the method's certified a-posteriori bound:

    eps_0 = eps;  eps_{i+1} = eps_i * eps / (2 B_i)   while  B_i = max_mu info.error_bound[mu] > eps

(the bound is about linear in the polynomial's eps; the factor 2 leaves room for its rounding part).

Reference: Hu et al. (2024), Problem 1 (ALoRAGC) and Thm 3.1 / A.1; Alman & Song (2024) (eps / poly(L));
claims ``limits.thm3.1``, ``limits.thmA.1``.
"""
from __future__ import annotations

import math

import torch

from .._validate import InvalidArgumentError, check_int, check_positive
from .instance import AttentionLoRAInstance
from .lowrank import ApproxInfo, ApproximationError

__all__ = ["max_entry_gradients"]


def max_entry_gradients(inst: AttentionLoRAInstance, eps: float, *, rounds: int = 4, **kw) -> tuple[dict[str, torch.Tensor], ApproxInfo, float]:
    """Gradients with certified max-entry error <= eps: (grads, info, eps_poly), eps_poly the polynomial's relative eps used.

    Args:
        inst: the instance.
        eps: the target max-entry error, in (0, 1).
        rounds: the most calls of :func:`lora_theory.approx_gradients` (each with a smaller eps_poly).
        **kw: passed to :func:`lora_theory.approx_gradients` (not ``eps``, ``degree`` or ``on_invalid``).

    Returns:
        (grads, info, eps_poly) with max_mu info.error_bound[mu] <= eps.

    Raises:
        ApproximationError: when ``rounds`` calls do not certify eps (or approx_gradients refuses).
    """
    from . import approx  # module attribute: a control corrupting approx_gradients reaches this call

    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    rounds = check_int("rounds", rounds, low=1)
    bad = sorted(set(kw) & {"eps", "degree", "on_invalid"})
    if bad:
        raise InvalidArgumentError(f"kw: expected no {bad} (max_entry_gradients chooses them), got {bad}")
    eps_poly, bound = eps, math.inf
    for _ in range(rounds):
        grads, info = approx.approx_gradients(inst, eps=eps_poly, **kw)
        bound = max(info.error_bound.values())
        if bound <= eps:
            return grads, info, eps_poly
        eps_poly = eps_poly * eps / (2.0 * bound)
    raise ApproximationError(f"max_entry_gradients: eps = {eps:.3g} not certified in {rounds} rounds (last bound {bound:.3g} at polynomial eps {eps_poly:.3g})")
