"""LoRA-attention gradients with exp(beta Q K^T) replaced by a positive low-rank factorization U V^T.

With A~ = U V^T (U, V (L, k), entrywise > 0) and Dt = U (V^T 1), f~ = Dt^{-1} U V^T:

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

This is the one driver behind both feature maps: the polynomial method
(:mod:`lora_theory.limits.approx`, deterministic with a certified bound) and the FAVOR+ peer
(:mod:`lora_theory.limits.random_features`, unbiased, no bound).

Reference: Alman & Song (2024) (AS24) and Hu et al. (2024), Sec. 4-5 (the gradient chain).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .._validate import InvalidArgumentError
from .exact import lora_chain
from .instance import AttentionLoRAInstance

__all__ = ["ApproxInfo", "ApproximationError", "LowRankRun", "lowrank_gradients", "run_lowrank", "score_range_bound"]


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
    return inst.beta * float(Q.norm(dim=-1).max()) * float(K.norm(dim=-1).max())  # row norms (last dim), max over rows and batch


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


class LowRankRun(NamedTuple):
    """What :func:`run_lowrank` returns: the gradients, aux tensors, phase times and validity problems."""

    grads: dict[str, torch.Tensor]
    G: dict[str, torch.Tensor]
    aux: dict[str, torch.Tensor]
    times: dict[str, float]
    reasons: list[str]


def run_lowrank(inst: AttentionLoRAInstance, U: torch.Tensor, V: torch.Tensor, t0: float) -> LowRankRun:
    """:func:`lowrank_gradients` plus the checks every feature map needs, timed from ``t0``.

    Reasons (for ``ApproxInfo.reason``) are collected, never raised: the normalizer D~ must be
    positive in every row, and every gradient finite (a subnormal D~ in float32, or a forced
    degree, can make D~^{-1} U overflow although D~ > 0).
    """
    _sync(U)
    t1 = time.perf_counter()
    grads, G, aux = lowrank_gradients(inst, U, V)
    _sync(U)
    t2 = time.perf_counter()
    D = aux["D"]
    dmin = float(D.min())
    reasons = []
    if not dmin > 0:
        reasons.append(f"the approximate normalizer D~ is not positive (min D~ = {dmin:.2e}, max |D~| = {float(D.abs().max()):.2e})")
    bad = [k for k, v in grads.items() if not bool(torch.isfinite(v).all())]
    if bad:
        reasons.append(f"non-finite gradients {bad} (min D~ = {dmin:.2e} in {D.dtype})")
    return LowRankRun(grads, G, aux, {"features": t1 - t0, "gradients": t2 - t1, "total": t2 - t0}, reasons)
