"""Almost-linear LoRA gradients: exp(S) ~ U V^T (rank k), then the AS24 chain, O(L k d^2).

With exp(beta Q K^T) ~ A~ = U V^T entrywise (U = phi(Q'), V = psi(K'), Q' = Q sqrt(beta/R),
K' = K sqrt(beta/R), P(t) ~ e^{R t} on [-1, 1]) and Dt = U (V^T 1), f~ = Dt^{-1} U V^T:

    O~ = Dt^{-1} U (V^T X_V W_V),  c = O~ - Y,  rho_i = c_i . O~_i
    (f~ o (c V_val^T)) K = Dt^{-1} einsum(ia,ib,abe->ie; U, c, T),  T = einsum(ja,jb,je->abe; V, V_val, K)
    p~ K   = (f~ o q) K - diag(rho) Dt^{-1} U (V^T K)                              -> G_Q = beta X_Q^T p~ K
    p~^T Q = einsum(ja,jb,abe->je; V, V_val, T2) - V (U~^T diag(rho) Q),  U~ = Dt^{-1} U,
             T2 = einsum(ia,ib,ie->abe; U~, c, Q)                                    -> G_K = beta X_K^T p~^T Q
    f~^T c = V (U~^T c)                                                             -> G_V = X_V^T f~^T c

Contracting in the order above, the row-wise Kronecker products are only ever formed between
two (L, d) matrices ((V_val (x) K), (c (x) Q): (L, d^2)), and the k-sized contractions are
plain matrix products (L, k) @ (k, d^2): the largest intermediate is (L, max(k, d^2)), no
L x L matrix ever exists, and every step is O(L k d^2).

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
from dataclasses import dataclass, field
from typing import Literal

import torch

from ._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .exact import _check_instance, lora_chain
from .features import polynomial_features
from .instance import AttentionLoRAInstance
from .polynomial import ExpPolynomial, exp_polynomial

__all__ = ["ApproxInfo", "ApproximationError", "approx_gradients", "lowrank_gradients", "score_range_bound"]

# The Performer FAVOR+ peer lives in lora_theory.random_features (it reuses lowrank_gradients).


class ApproximationError(ValueError):
    """The polynomial cannot certify the requested accuracy on this instance (the message says why)."""


@dataclass
class ApproxInfo:
    """What ``approx_gradients`` did: degree g, rank k, score range R, D~ min, error bound, times.

    Attributes:
        valid: False when the requested eps could not be certified (only with on_invalid="flag").
        reason: why it is invalid ("" when valid).
        degree: g; rank: k (features per row); R: the score range bound the polynomial covers.
        poly_rel_error: delta, the entrywise relative error of U V^T vs exp(S): the measured sup
            relative error of P on [-R, R] plus the rounding bound of the feature sum.
        min_normalizer: min_i D~_i, the approximate softmax normalizer D~ = U (V^T 1) ~ sum_j e^{S_ij}
            (must be > 0; for exact scores it is >= L e^{-R}, and D~_i >= (1 - delta) L e^{-R}).
            For the random-feature peer D~ carries per-row stabilizing factors, so only its sign
            is meaningful there.
        error_bound: {"A_q": ..., ...} a-priori absolute max-entry bound on each gradient's error.
        times: seconds per phase (features, forward, gradients, total).
        method: "chebyshev", "taylor" or "random_features".
    """

    valid: bool
    reason: str
    degree: int
    rank: int
    R: float
    poly_rel_error: float
    min_normalizer: float
    error_bound: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    method: str = "chebyshev"


def score_range_bound(inst: AttentionLoRAInstance) -> float:
    """R+ = beta max_i ||Q_i||_2 max_j ||K_j||_2 >= max |beta Q K^T| (Cauchy-Schwarz), in O(L d).

    The exact R needs all L^2 scores; this bound is what an almost-linear algorithm can afford.
    """
    Q, K, _ = inst.projections()
    return inst.beta * float(Q.norm(dim=1).max()) * float(K.norm(dim=1).max())


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def lowrank_gradients(inst: AttentionLoRAInstance, U: torch.Tensor, V: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The LoRA gradients with exp(beta Q K^T) replaced by U V^T (any positive factorization).

    Args:
        inst: the instance.
        U: (L, k) query-side factor; V: (L, k) key-side factor; U V^T must be entrywise > 0.

    Returns:
        (grads, G, aux): the LoRA gradients ``{"A_q": ...}``, the weight gradients
        ``{"q": (d, d), ...}`` and auxiliary tensors (``"D"`` (L,) normalizer, ``"O"`` and
        ``"c"`` (L, d)) for error bounds.
    """
    Q, K, Vv = inst.projections()  # (L, d) each; Vv are the values X_V W_V
    L, d = Q.shape
    if U.shape != V.shape or U.shape[0] != L:
        raise InvalidArgumentError(f"U, V: expected two ({L}, k) factors, got {tuple(U.shape)} and {tuple(V.shape)}")
    D = U @ V.sum(dim=0)  # (L,) D~ = U (V^T 1)
    Ut = U / D[:, None]  # (L, k) U~ = D~^{-1} U; D~ > 0 is checked by the caller
    O = Ut @ (V.T @ Vv)  # (L, d) O~ = D~^{-1} U (V^T V_val)
    c = O - inst.Y  # (L, d)
    rho = (c * O).sum(dim=1)  # (L,) rho_i = c_i . O~_i = rowsum(f~ o q)
    need = set(inst.adapt)
    G: dict[str, torch.Tensor] = {}

    def pair(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return (X[:, :, None] * Y[:, None, :]).reshape(L, d * d)  # (L, d^2) row-wise Kronecker X (x) Y

    if "q" in need:
        # T[a, (b, e)] = sum_j V_ja Vv_jb K_je: (k, L) @ (L, d^2); then
        # (f~ o q) K [i, e] = sum_b c_ib sum_a U~_ia T[a, (b, e)]: (L, k) @ (k, d^2), contracted with c.
        T = V.T @ pair(Vv, K)  # (k, d^2)
        pK = torch.einsum("ib,ibe->ie", c, (Ut @ T).reshape(L, d, d))  # (L, d)
        pK -= rho[:, None] * (Ut @ (V.T @ K))  # - diag(rho) f~ K
        G["q"] = inst.beta * (inst.Xq.T @ pK)
    if "k" in need:
        # T2[a, (b, e)] = sum_i U~_ia c_ib Q_ie; p~^T Q [j, e] = sum_b Vv_jb sum_a V_ja T2[a, (b, e)].
        T2 = Ut.T @ pair(c, Q)  # (k, d^2)
        pTQ = torch.einsum("jb,jbe->je", Vv, (V @ T2).reshape(L, d, d))  # (L, d)
        pTQ -= V @ (Ut.T @ (rho[:, None] * Q))  # - f~^T diag(rho) Q
        G["k"] = inst.beta * (inst.Xk.T @ pTQ)
    if "v" in need:
        G["v"] = inst.Xv.T @ (V @ (Ut.T @ c))  # X_V^T f~^T c
    return lora_chain(inst, G), G, {"D": D, "O": O, "c": c}


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
    inst = _check_instance(inst)
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
    _sync(U)
    t1 = time.perf_counter()
    grads, G, aux = lowrank_gradients(inst, U, V)
    _sync(U)
    t2 = time.perf_counter()
    D = aux["D"]
    dmin = float(D.min())
    if not dmin > 0:
        reasons.append(f"the approximate normalizer D~ is not positive (min D~ = {dmin:.2e}, max |D~| = {float(D.abs().max()):.2e})")
    bad = [k for k, v in grads.items() if not bool(torch.isfinite(v).all())]
    if bad:  # a safety net: certified inputs never get here, but a forced degree or an overflow can
        reasons.append(f"non-finite gradients {bad}")
    bound = _error_bound(inst, delta, aux)
    info = ApproxInfo(
        valid=not reasons, reason="; ".join(reasons), degree=poly.degree, rank=U.shape[1], R=R_used,
        poly_rel_error=delta, min_normalizer=dmin, error_bound=bound,
        times={"features": t1 - t0, "gradients": t2 - t1, "total": time.perf_counter() - t0}, method=method,
    )
    if reasons and on_invalid == "raise":
        raise ApproximationError("approx_gradients: cannot certify the approximation: " + "; ".join(reasons)
                                 + ". Raise max_degree or eps, reduce the norms (bound), or pass on_invalid='flag'.")
    return grads, info
