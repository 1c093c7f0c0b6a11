"""The attention forward pass O = D^{-1} exp(beta Q K^T) V, exact (row-blocked) and almost linear (certified).

Exact: :func:`attention_forward` streams query-row blocks with a log-sum-exp shift, peak memory
O(block * L_k + L d), time Theta(L_q L_k d).

Almost linear (Alman & Song 2023, Thm 1.4 / the limits paper's Lemma 1.1): with
exp(beta Q K^T) ~ A~ = U V'^T entrywise (U = phi(Q sqrt(beta / R)), V' = psi(K sqrt(beta / R)),
P(t) ~ e^{R t} on [-1, 1], k = C(g + d, d) features, the same feature map and moment source as the
gradients, :mod:`lora_theory.limits.lowrank`),

    O~_i = E~_i[V] = sum_j A~_ij V_j / sum_j A~_ij                      (d_v,) per query row i,

the first moment of the values under the approximate softmax row f~_i: time O(L k c) with
c = 1 + d_v + d_v (d_v + 1) / 2 moment columns (the second moments feed the bound), no L x L matrix.

Certified bound (a-posteriori, per row, every input): per query row the scores satisfy
|t_ij| <= rho_i (``row_score_ranges``), so the entrywise relative error delta_ij of A~ lies in
[lo_i, hi_i] (``ExpPolynomial.error_range``), widened for the rounded scores; with
eta_i = (hi_i - lo_i) / 2 / (1 - max |delta_i|) and kappa_i = (1 + hi_i) / (1 + lo_i),

    |O~_ie - O_ie| <= eta_i sqrt(kappa_i) sd~_i(V_e)                     (check_mean_shift)

plus the rounding of the moment sums (gamma_n bounds on the absolute values, as in
:mod:`lora_theory.limits.approx`) and of the final cast. ``info.error_bound`` is the max over rows
and entries; ``info.row_error_bound`` the per-row maxima.

Refusals (:class:`ApproximationError`, before anything of size k is allocated): a score range whose
rounding alone exceeds eps (R > ln(eps / u) / 2), a degree that cannot reach eps within
``max_degree``, too many features or bytes (:func:`lora_theory.limits.plan.check_resources`).

Reference: Alman & Song (2023), "Fast attention requires bounded entries", Thm 1.4 and Lemma 3.1
(the polynomial method); Hu et al. (2024), Lemma 1.1; claim ``limits.lemma1.1``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .features import FeatureMap
from .lowrank import CAUSAL_BLOCK, ApproximationError, MomentSource, key_range_stats, row_score_ranges
from .plan import DEFAULT_MAX_FEATURES, check_resources, default_feature_block
from .polynomial import exp_polynomial

__all__ = ["ForwardInfo", "approx_forward", "attention_forward", "forward_score_range"]

_COMPUTE_DTYPES = (torch.float64, torch.float32)
_BLOCK_ELEMENTS = 1 << 18  # entries of one (block, L_k) score piece, as exact.default_block_size


def _gamma(n: float, u: float) -> float:
    """gamma_n = n u / (1 - n u) (Higham 2002, Sec. 3.5); inf when n u >= 1/2."""
    return n * u / (1.0 - n * u) if n * u < 0.5 else math.inf


@dataclass
class ForwardInfo:
    """What :func:`approx_forward` did.

    Attributes:
        valid: False when eps could not be certified (only with on_invalid="flag"); reason: why.
        degree, rank: g and k = C(g + d, d); R: the score range the polynomial covers (>= every
            element's Cauchy-Schwarz bound beta max||Q_i|| max||K_j||); poly_rel_error: delta.
        error_bound: certified max-entry bound on |O~ - O| over every element and row.
        row_error_bound: (*batch, L_q) per-row max-entry bounds (a tensor, float64).
        element_R: per-element Cauchy-Schwarz score range (array of the batch shape).
        min_normalizer: min_i D~_i (> 0 for a valid result).
        times: seconds ("total").
    """

    valid: bool
    reason: str
    degree: int
    rank: int
    R: float
    poly_rel_error: float
    error_bound: float
    row_error_bound: torch.Tensor | None = None
    element_R: np.ndarray | None = None
    min_normalizer: float = math.nan
    times: dict[str, float] = field(default_factory=dict)
    compute_dtype: str = "float64"


def _check_qkv(Q: object, K: object, V: object, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]]:
    for name, t in (("Q", Q), ("K", K), ("V", V)):
        if not isinstance(t, torch.Tensor) or t.dim() < 2 or not t.is_floating_point():
            raise InvalidArgumentError(f"{name}: expected a floating tensor of shape (*batch, L, d), got {type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
        if 0 in t.shape:
            raise InvalidArgumentError(f"{name}: expected non-empty dimensions, got shape {tuple(t.shape)}")
    if Q.shape[-1] != K.shape[-1]:
        raise InvalidArgumentError(f"Q, K: expected the same head dimension d, got {Q.shape[-1]} and {K.shape[-1]}")
    if K.shape[-2] != V.shape[-2]:
        raise InvalidArgumentError(f"K, V: expected the same number of keys, got {K.shape[-2]} and {V.shape[-2]}")
    if causal and Q.shape[-2] != K.shape[-2]:
        raise InvalidArgumentError(f"causal: expected as many queries as keys, got L_q = {Q.shape[-2]}, L_k = {K.shape[-2]}")
    if len({Q.dtype, K.dtype, V.dtype}) != 1 or len({Q.device, K.device, V.device}) != 1:
        raise InvalidArgumentError(f"Q, K, V: expected one dtype and device, got {Q.dtype}/{Q.device}, {K.dtype}/{K.device}, {V.dtype}/{V.device}")
    for name, t in (("Q", Q), ("K", K), ("V", V)):
        if not bool(torch.isfinite(t).all()):
            raise InvalidArgumentError(f"{name}: expected finite entries (no NaN or inf)")
    try:
        bs = tuple(torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2], V.shape[:-2]))
    except RuntimeError:
        raise InvalidArgumentError(f"Q, K, V: expected batch dimensions that broadcast, got {tuple(Q.shape)}, {tuple(K.shape)}, {tuple(V.shape)}") from None
    return Q, K, V, bs


def attention_forward(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, *, beta: float = 1.0, causal: bool = False,
                      block_size: int | None = None) -> torch.Tensor:
    """O = softmax(beta Q K^T (masked j > i when causal)) V, exact, in query-row blocks (no L x L matrix).

    Args:
        Q: (*batch, L_q, d); K: (*batch, L_k, d); V: (*batch, L_k, d_v) (batch dims broadcast).
        beta: score scale; causal: query i sees keys j <= i (L_q = L_k).
        block_size: query rows per block (default ~2^18 / L_k).

    Returns:
        (*batch, L_q, d_v) in Q's dtype.
    """
    Q, K, V, bs = _check_qkv(Q, K, V, causal)
    beta = check_positive("beta", beta)
    Lq, Lk = Q.shape[-2], K.shape[-2]
    b = min(Lq, max(16, _BLOCK_ELEMENTS // Lk)) if block_size is None else min(check_int("block_size", block_size, low=1), Lq)
    out = torch.empty(*bs, Lq, V.shape[-1], dtype=Q.dtype, device=Q.device)
    Qs = Q * beta
    cols = torch.arange(Lk, device=Q.device)
    for i in range(0, Lq, b):
        sl = slice(i, min(i + b, Lq))
        f = Qs[..., sl, :] @ K.mT  # (*batch, b, L_k)
        if causal:  # exp(-inf) = 0 drops the keys j > i (j = i always stays)
            f.masked_fill_(cols[None, :] > torch.arange(sl.start, sl.stop, device=Q.device)[:, None], float("-inf"))
        # Stabilizing shift: softmax is invariant to a per-row constant; the row max makes every exponent <= 0.
        f -= f.amax(dim=-1, keepdim=True)
        f.exp_()
        f /= f.sum(dim=-1, keepdim=True)
        out[..., sl, :] = f @ V
    return out


def forward_score_range(Q: torch.Tensor, K: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """R+_e = beta max_i ||Q_e,i|| max_j ||K_e,j|| per batch element (float64, O(L d)): covers every score |beta q . k|."""
    return beta * Q.double().norm(dim=-1).amax(dim=-1) * K.double().norm(dim=-1).amax(dim=-1)


def _flat(t: torch.Tensor, bs: tuple[int, ...]) -> torch.Tensor:
    """(*batch, L, x) broadcast to the full batch shape and flattened to (E, L, x) (E = 1 for no batch)."""
    return t.expand(*bs, *t.shape[-2:]).reshape(-1, *t.shape[-2:])


def approx_forward(
    Q: torch.Tensor,
    K: torch.Tensor,
    V: torch.Tensor,
    *,
    beta: float = 1.0,
    causal: bool = False,
    eps: float = 1e-3,
    method: Literal["chebyshev", "taylor"] = "chebyshev",
    max_degree: int = 40,
    on_invalid: Literal["raise", "flag"] = "raise",
    max_features: int = DEFAULT_MAX_FEATURES,
    memory_budget: float | None = None,
    block_size: int | None = None,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, ForwardInfo]:
    """O~ = D~^{-1} A~ V by the polynomial method in O(L k c), with a certified max-entry bound on |O~ - O|.

    Args:
        Q: (*batch, L_q, d); K: (*batch, L_k, d); V: (*batch, L_k, d_v) (batch dims broadcast).
        beta: score scale (S = beta Q K^T); causal: query i sees keys j <= i (prefix moments).
        eps: target sup relative error of P(s) ~ e^s on the score range; method, max_degree: as
            :func:`lora_theory.exp_polynomial`.
        on_invalid: "raise" :class:`ApproximationError` when eps cannot be certified, or "flag"
            (``info.valid = False``); refusals before any computation raise in both modes.
        max_features, memory_budget: refuse before allocating beyond them (see ``check_resources``).
        block_size: rows per feature block; compute_dtype: float64 or float32 (the bound uses its u).

    Returns:
        (O~ (*batch, L_q, d_v) in Q's dtype, :class:`ForwardInfo`).

    Raises:
        InvalidArgumentError: bad arguments.
        ApproximationError: the range is past what eps allows (entries beyond ~sqrt(log L) scale),
            resources, or an uncertifiable result (see ``on_invalid``).

    Reference: Alman & Song (2023), Thm 1.4; Hu et al. (2024), Lemma 1.1; claim ``limits.lemma1.1``.
    """
    Q, K, V, bs = _check_qkv(Q, K, V, causal)
    beta = check_positive("beta", beta)
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    check_choice("method", method, ("chebyshev", "taylor"))
    check_choice("on_invalid", on_invalid, ("raise", "flag"))
    max_degree = check_int("max_degree", max_degree, low=0, high=60)
    max_features = check_int("max_features", max_features, low=1)
    if compute_dtype not in _COMPUTE_DTYPES:
        raise InvalidArgumentError(f"compute_dtype: expected torch.float64 or torch.float32, got {compute_dtype!r}")
    if block_size is not None:
        block_size = check_int("block_size", block_size, low=1)
    t0 = time.perf_counter()
    out_dtype = Q.dtype
    Qf, Kf, Vf = (_flat(t, bs).to(compute_dtype) for t in (Q, K, V))  # (E, L, .)
    E, Lq, d = Qf.shape
    Lk, dv = Kf.shape[1], Vf.shape[-1]
    R_elem = forward_score_range(Qf, Kf, beta)  # (E,) float64
    R = float(R_elem.max())
    if not math.isfinite(R):
        raise ApproximationError(f"approx_forward: the score range bound beta max||Q_i|| max||K_j|| overflows float64 (got {R}); reduce the norms")
    R = max(R, 1e-12)  # all scores 0: any positive half-width works; avoids t = s / 0
    u = torch.finfo(compute_dtype).eps / 2  # unit roundoff of the computation
    # the monomial sums' rounding alone is >= u e^(2R): past R = ln(eps / u) / 2 nothing is certifiable (and e^R overflows past ~700)
    R_cap = 0.5 * math.log(eps / (u * (1 - eps)))
    if R > R_cap:
        raise ApproximationError(
            f"approx_forward: cannot certify eps = {eps:.1e} at score range R = {R:.4g} in {compute_dtype}: the rounding of the monomial sums "
            f"alone is at least u e^(2R) = {u * math.exp(min(2 * R, 700.0)):.2e}; R must be <= {R_cap:.3g} (entries of Q, K of order "
            f"sqrt(R / (beta d))). Use the exact forward (attention_forward), reduce the norms or beta, or raise eps.")
    poly = exp_polynomial(R, eps, method=method, max_degree=max_degree)
    if not poly.finite:
        raise ApproximationError(f"approx_forward: the degree-{poly.degree} polynomial of e^s on [-R, R], R = {R:.4g}, overflows float64")
    g = poly.degree
    k = math.comb(g + d, d)
    itemsize = torch.empty((), dtype=compute_dtype).element_size()
    check_resources(L=max(Lq, Lk), d=d, k=k, degree=g, R=R, eps=eps, method=method, m=dv, n=dv, itemsize=itemsize, max_features=max_features,
                    budget=memory_budget, max_degree=max_degree, what="approx_forward", batch=E, causal=causal)
    reasons: list[str] = []
    delta = poly.rel_error + poly.feature_rounding(k + g, 2 * u)
    if not delta <= eps:
        reasons.append(f"degree {g} reaches sup relative error {delta:.2e} > eps = {eps:.0e} on [-R, R], R = {R:.3g}")
    scale = math.sqrt(beta / R)  # q' . k' = beta q . k / R = t in [-1, 1]
    Qs, Ks = Qf * scale, Kf * scale
    fmap = FeatureMap(g, d)
    block = min(block_size or default_feature_block(k, max(Lq, Lk), itemsize, E), max(Lq, Lk))
    if causal and block_size is None:
        block = min(block, CAUSAL_BLOCK)  # the masked diagonal block costs O(b^2 k)
    buf = torch.empty(k, E, block, dtype=compute_dtype, device=Qf.device)  # one (k, E, block) feature slice, reused

    def query_blocks(i0: int, i1: int) -> torch.Tensor:
        return fmap(Qs[:, i0:i1, :], out=buf)

    def key_blocks(j0: int, j1: int) -> torch.Tensor:
        return fmap(Ks[:, j0:j1, :], out=buf)

    weights = torch.as_tensor(fmap.weights(poly.coef), dtype=compute_dtype, device=Qf.device)
    stats = key_range_stats(Kf)
    O = torch.empty(E, Lq, dv, dtype=compute_dtype, device=Qf.device)
    rowb = torch.empty(E, Lq, dtype=torch.float64, device=Qf.device)
    D = torch.empty(E, Lq, dtype=compute_dtype, device=Qf.device)
    ok = True
    u_out = torch.finfo(out_dtype).eps / 2 if out_dtype != compute_dtype else 0.0
    with torch.no_grad():
        src = MomentSource(Vf, key_blocks, query_blocks, block=block, weights=weights, causal=causal)
        for i0 in range(0, Lq, block):
            i1 = min(i0 + block, Lq)
            mom = src.moments(i0, i1)
            O[:, i0:i1] = mom.mean  # E~_i[V] = zbar + E~_i[V - zbar]
            D[:, i0:i1] = mom.D
            if not ok:
                continue
            # -- the row-wise range of delta_ij (widened for the rounded scores: |t' - t| <= 3u, e^{R (t' - t)})
            rho = (row_score_ranges(Qf[:, i0:i1], None, beta, stats=stats) / R).clamp(max=1.0)  # (E, b) |t_ij| <= rho_i
            rho_np = (rho * (1 + 8 * u)).clamp(max=1.0).cpu().numpy()
            lo_np, hi_np = poly.error_range(rho_np)
            dt, dev = compute_dtype, Qf.device
            lo = (1 + torch.as_tensor(lo_np, dtype=dt, device=dev)) * math.exp(-4 * u * R) - 1
            hi = (1 + torch.as_tensor(hi_np, dtype=dt, device=dev)) * math.exp(4 * u * R) - 1
            dlt = torch.maximum(lo.abs(), hi.abs())
            if not bool(torch.isfinite(dlt).all()) or float(dlt.max()) >= 1:
                ok = False
                continue
            eta = (hi - lo) / 2 / (1 - dlt)  # only the spread of delta_ij within a row moves f~ (check_mean_shift)
            skap = ((1 + hi) / (1 + lo)).sqrt()
            # -- rounding of the moment sums: |N_comp - N| <= rho_r sum_j A~_ij |w_j| (as approx._ErrorBound)
            abs_sum = torch.as_tensor(poly.abs_sum(rho_np), dtype=dt, device=dev)
            kF = abs_sum * torch.exp(R * torch.as_tensor(rho_np, dtype=dt, device=dev)) / (1 + lo)
            rho_r = _gamma(mom.n_sum + 2 * g + 6, u) * kF
            if not bool(torch.isfinite(rho_r).all()) or float(rho_r.max()) >= 0.5 or float(eta.max()) >= 1:
                ok = False
                continue
            tau = (2 * rho_r + 2 * u) / (1 - rho_r)  # (E, b) relative-to-magnitude error of a normalized moment
            s = (mom.second.clamp(min=0) / (1 - tau[..., None])).sqrt()  # (E, b, dv) >= sqrt(E~ (V - zbar)^2)
            tauC = 3 * tau + tau * tau + 4 * u  # |Cov_comp - Cov~| <= tauC s s^T
            varV = torch.diagonal(mom.cov, dim1=-2, dim2=-1) + tauC[..., None] * s * s  # >= Var~(V_e)
            err_mean = tau[..., None] * s + u * mom.mean.abs()  # the computed mean vs E~[V]
            b_ie = (eta * skap)[..., None] * varV.clamp(min=0).sqrt() + err_mean  # (E, b, dv)    (check_mean_shift)
            b_ie = b_ie + u_out * (mom.mean.abs() + b_ie)  # the cast to the output dtype
            rowb[:, i0:i1] = b_ie.amax(dim=-1).double()
    dmin = float(D.min())
    if not dmin > 0 or not math.isfinite(float(D.max())):
        reasons.append(f"the approximate normalizer D~ is not positive and finite (min D~ = {dmin:.2e})")
    if not bool(torch.isfinite(O).all()):
        reasons.append("non-finite outputs")
    if not ok:
        reasons.append(f"the error bound cannot be established at R = {R:.3g} (relative error of A~ >= 1, or the moment rounding is not below 1/2)")
        rowb.fill_(math.inf)
    bound = float(rowb.max()) if rowb.numel() else 0.0
    info = ForwardInfo(valid=not reasons, reason="; ".join(reasons), degree=g, rank=k, R=R, poly_rel_error=delta,
                       error_bound=bound if math.isfinite(bound) else math.inf, row_error_bound=rowb.reshape(*bs, Lq),
                       element_R=R_elem.cpu().numpy().reshape(bs), min_normalizer=dmin, times={"total": time.perf_counter() - t0},
                       compute_dtype=str(compute_dtype).replace("torch.", ""))
    if reasons and on_invalid == "raise":
        raise ApproximationError("approx_forward: cannot certify the approximation: " + "; ".join(reasons)
                                 + ". Raise max_degree or eps, reduce the norms or beta, or use attention_forward (exact).")
    return O.reshape(*bs, Lq, dv).to(out_dtype), info
