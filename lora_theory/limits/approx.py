"""Almost-linear LoRA gradients by the polynomial method: exp(S) ~ phi(Q') psi(K')^T, O(L k d^2).

With exp(beta Q K^T) ~ A~ = U V^T entrywise (U = phi(Q'), V = psi(K'), Q' = Q sqrt(beta/R),
K' = K sqrt(beta/R), P(t) ~ e^{R t} on [-1, 1], k = C(g + d, d) features), the gradients follow
the low-rank chain of :mod:`lora_theory.limits.lowrank` (no L x L matrix, O(L k d^2)).

Error bound (returned in ``info.error_bound``, absolute, max-entry, per gradient): if every
entry satisfies |A~_ij / e^{S_ij} - 1| <= delta < 1, then sum_j |f~_ij - f_ij| <= eta =
delta / (1 - delta) for every row (proofs_checks/limits_polynomial.py::check_normalizer_perturbation), and the bound propagates through O, c, p and the three
weight gradients with the max-entry norms of X, V, K, Q and the row norms of c (see
``_error_bound``).

Reference: Alman & Song (2023) (AS23) for the forward pass; Alman & Song (2024) (AS24) and
Hu et al. (2024), Sec. 4-5, Thm 3.1 / A.1 for the gradient chain; claims ``limits.thm3.1``,
``limits.thmA.1``, ``limits.thm4.1_regime``.
"""
from __future__ import annotations

import math
import time
from typing import Literal

import torch

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .exact import _check_single_head
from .features import polynomial_features
from .instance import AttentionLoRAInstance
from .lowrank import ApproximationError, ApproxInfo, run_lowrank, score_range_bound
from .polynomial import ExpPolynomial, exp_polynomial

__all__ = ["ApproxInfo", "ApproximationError", "approx_gradients", "score_range_bound"]


def _error_bound(inst: AttentionLoRAInstance, delta: float, aux: dict[str, torch.Tensor]) -> dict[str, float]:
    """A-priori max-entry bounds on |grad~ - grad| given the entrywise relative error delta of exp.

    Row-wise: sum_j |f~_ij - f_ij| <= eta = delta / (1 - delta): f~_ij - f_ij = f_ij (delta_ij - dbar_i) /
    (1 + dbar_i) with dbar_i = sum_j f_ij delta_ij, and the f-mean absolute deviation of values in
    [-delta, delta] is at most delta (proofs_checks/limits_polynomial.py::check_normalizer_perturbation). With v = ||V_val||_max and
    c~ the approximate residual: |O~_i - O_i|_inf <= eta v; ||c_i||_1 <= ||c~_i||_1 + d eta v;
    sum_j |p~_ij - p_ij| <= e_i = 2 eta v ||c~_i||_1 + eta v (2 d v + ||c_i||_1). Then
    |dG_Q| <= beta ||K||_max sum_i |X_Q,ia| e_i; |dG_K| <= beta ||Q||_max ||X_K||_max sum_i e_i;
    |dG_V| <= ||X_V||_max eta sum_i (||c~_i||_inf + v); and the chain multiplies by
    (alpha/r) max_col ||B||_1 (for dL/dA) or (alpha/r) max_row ||A||_1 (for dL/dB).
    """
    if not delta < 1:
        return {f"{p}_{mu}": math.inf for mu in inst.adapt for p in "AB"}
    Q, K, Vv = inst.projections()
    d = inst.d
    eta = delta / (1 - delta)
    v = float(Vv.abs().max())
    c = aux["c"]
    c1 = c.abs().sum(dim=1)  # (L,) ||c~_i||_1
    e = 2 * eta * v * c1 + eta * v * (2 * d * v + c1 + d * eta * v)  # (L,)
    dG = {}
    if "q" in inst.adapt:
        dG["q"] = inst.beta * float(K.abs().max()) * float((inst.Xq.abs().T @ e).max())
    if "k" in inst.adapt:
        dG["k"] = inst.beta * float(Q.abs().max()) * float(inst.Xk.abs().max()) * float(e.sum())
    if "v" in inst.adapt:
        dG["v"] = float(inst.Xv.abs().max()) * eta * float((c.abs().amax(dim=1) + v).sum())
    s = inst.scale
    out = {}
    for mu in inst.adapt:
        out[f"A_{mu}"] = s * float(inst.B[mu].abs().sum(dim=0).max()) * dG[mu]
        out[f"B_{mu}"] = s * float(inst.A[mu].abs().sum(dim=1).max()) * dG[mu]
    return out


def approx_gradients(
    inst: AttentionLoRAInstance,
    *,
    eps: float = 1e-3,
    method: Literal["chebyshev", "taylor"] = "chebyshev",
    degree: int | None = None,
    R: float | None = None,
    max_degree: int = 40,
    on_invalid: Literal["raise", "flag"] = "raise",
) -> tuple[dict[str, torch.Tensor], ApproxInfo]:
    """LoRA gradients by the polynomial method in O(L k d^2), k = C(g + d, d); no L x L matrix.

    Args:
        inst: the instance (any dtype/device; float64 for verification).
        eps: target sup relative error of P(s) ~ e^s on the score range (the entrywise error of
            exp(S) ~ U V^T); ignored for the degree choice when ``degree`` is given.
        method: "chebyshev" or "taylor" (see :func:`lora_theory.exp_polynomial`).
        degree: force this degree g (the "fixed degree budget" of the phase-transition sweeps).
        R: score range to cover; default :func:`score_range_bound` (Cauchy-Schwarz, O(L d)).
        max_degree: largest degree tried when searching for eps.
        on_invalid: "raise" an :class:`ApproximationError` when eps cannot be certified or D~ is
            not positive, or "flag" (return the result with ``info.valid = False``).

    Returns:
        (grads, info): grads as :func:`lora_theory.exact_gradients`; info an :class:`ApproxInfo`.

    Reference: Hu et al. (2024), Thm 3.1 (partial) and Thm A.1 (full); AS23, AS24.
    """
    inst = _check_single_head(inst, "approx_gradients")
    check_choice("method", method, ("chebyshev", "taylor"))
    check_choice("on_invalid", on_invalid, ("raise", "flag"))
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    if degree is not None:
        degree = check_int("degree", degree, low=0, high=60)
    t0 = time.perf_counter()
    R_used = score_range_bound(inst) if R is None else check_positive("R", R, allow_zero=True)
    if R_used == 0.0:
        R_used = 1e-12  # all scores are 0: any positive half-width works; avoids t = s / 0
    poly: ExpPolynomial = exp_polynomial(R_used, eps, method=method, degree=degree, max_degree=max_degree)
    Q, K, _ = inst.projections()
    k_rank = math.comb(poly.degree + inst.d, inst.d)
    # delta: the entrywise relative error of U V^T vs exp(S): the polynomial's own error plus the
    # rounding of summing k monomial products in this dtype (see ExpPolynomial.feature_rounding).
    delta = poly.rel_error + poly.feature_rounding(k_rank + poly.degree, torch.finfo(Q.dtype).eps)
    reasons = []
    if delta > eps:
        reasons.append(f"degree {poly.degree} reaches sup relative error {delta:.2e} > eps = {eps:.0e} on [-R, R], R = {R_used:.3g}"
                       f" (fit {poly.rel_error:.1e}, rounding {delta - poly.rel_error:.1e})")
    if delta >= 1:
        reasons.append("P can be <= 0 on the score range (relative error >= 1)")
    scale = math.sqrt(inst.beta / R_used)  # q' . k' = beta q . k / R = t in [-1, 1]
    U = polynomial_features(Q * scale, poly, "query")
    V = polynomial_features(K * scale, poly, "key")
    run = run_lowrank(inst, U, V, t0)
    grads, aux = run.grads, run.aux
    reasons += run.reasons
    bound = _error_bound(inst, delta, aux)
    info = ApproxInfo(
        valid=not reasons, reason="; ".join(reasons), degree=poly.degree, rank=U.shape[1], R=R_used,
        poly_rel_error=delta, min_normalizer=float(aux["D"].min()), error_bound=bound, times=run.times, method=method,
    )
    if reasons and on_invalid == "raise":
        raise ApproximationError("approx_gradients: cannot certify the approximation: " + "; ".join(reasons)
                                 + ". Raise max_degree or eps, reduce the norms (bound), or pass on_invalid='flag'.")
    return grads, info
