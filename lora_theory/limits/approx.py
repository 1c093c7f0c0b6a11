"""Almost-linear LoRA gradients by the polynomial method: exp(S) ~ phi(Q') psi(K')^T, with a certified bound.

With exp(beta Q K^T) ~ A~ = U V^T entrywise (U = phi(Q'), V = psi(K'), Q' = Q sqrt(beta/R),
K' = K sqrt(beta/R), P(t) ~ e^{R t} on [-1, 1], k = C(g + d, d) features), the gradients follow
the moment form of :mod:`lora_theory.limits.lowrank`: one contraction of O(L k m^2), no L x L
matrix, features one (k, block) slice at a time.

Soundness (what ``valid`` and ``error_bound`` promise, for every input):

- R is verified: a caller's ``R`` below the Cauchy-Schwarz bound beta max||Q_i|| max||K_j|| (which
  covers every score) raises :class:`ApproximationError` naming both; nothing is certified with an
  unverified range.
- eps is certified by delta = the certified sup relative error of P on [-R, R] (grid maximum plus a
  derivative pad, :mod:`polynomial`) + the rounding bound of the monomial sums; valid iff
  delta <= eps and every intermediate (coefficients, moments, D~, gradients, bound) is finite.
- degree, k and bytes are estimated before anything of size k is allocated
  (:func:`lora_theory.limits.plan.check_resources`).
- ``info.error_bound`` is an a-posteriori bound on |grad~ - grad| (max entry) built from the computed
  row-wise moments (see :func:`_error_bound`, proofs in proofs_checks/limits_bound.py): per query row
  i the scores satisfy |t_ij| <= rho_i (row_score_ranges), so the entrywise relative error
  delta_ij = eps(t_ij) of A~ lies in [lo_i, hi_i], the range of eps on [-rho_i, rho_i]. Only the
  spread of delta_ij within a row moves the softmax (a constant factor cancels in f~), so with
  eta_i = (hi_i - lo_i) / 2 / (1 - delta_i) and kappa_i = (1 + hi_i) / (1 + lo_i):

      |(E~ - E)[x]| <= eta_i sqrt(kappa_i) sd~(x)        for any key function x      (check_mean_shift)

  and, since delta_ij = eps(t_ij) with eps' bounded by slope_i on the row's range, also with
  eta_i replaced by (slope_i sd_f(t) + c_u) / (1 - delta_i) (check_slope_shift): a row whose
  scores spread little under f sees an almost constant delta_ij;
      |(Cov~ - Cov)(h, x)| <= eta_i (sd_f(h) sd_f(x) + |Cov_f(h, x)|) + eta_i^2 sd_f(h) sd_f(x)   (check_cov_shift)
      sd_f(x) <= sqrt(kappa_i) sd~(x)                                                     (check_sd_ratio)

  which bound O~ - O, (p~ K - p K)_i = Cov~(c~ . V, K) - Cov(c . V, K), (p~ X_K - p X_K)_i, and
  E~[X_V] c~ - E[X_V] c row by row, then |X_Q|^T, |Q|, the sums over rows and the chain
  (alpha / r) |B|^T, |A|^T. Floating-point rounding of the moment sums (length L + k), the per-row
  algebra, the reductions over rows and the final cast are added as a separate allowance
  (standard gamma_n = n u / (1 - n u) bounds on the absolute values of every term).

Batched multi-head instances (issue 13, 15): the E = prod(batch shape) elements are grouped by the
degree their own range R+_e needs, and each group runs in one pass of the same driver (a leading
dimension on every tensor above, no loop over heads) with one polynomial certified on the group's
largest range; everything else (row ranges rho_i, key statistics, moments, every term of the bound)
is per element, ``info.element_error_bound`` bounds each element's own
gradient and ``info.error_bound`` the returned one (for a shared factor, the entrywise sum over the
elements sharing it). Causal instances use prefix moments (see :func:`approx_gradients`).

Reference: Alman & Song (2023) (AS23) for the forward pass; Alman & Song (2024) (AS24) and
Hu et al. (2024), Sec. 4-5, Thm 3.1 / A.1 for the gradient chain; claims ``limits.thm3.1``,
``limits.thmA.1``, ``limits.thm4.1_regime``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .._validate import InvalidArgumentError, check_choice, check_int, check_positive
from .exact import _check_instance, lora_chain
from .features import FeatureMap
from .instance import AttentionLoRAInstance, batched_matmul
from .lowrank import (
    CAUSAL_BLOCK,
    ApproximationError,
    ApproxInfo,
    KeyMoments,
    LowRankRun,
    flat_instance,
    key_inputs,
    key_range_stats,
    row_score_ranges,
    run_lowrank,
    score_range_bound,
    score_range_bounds,
    select_elements,
)
from .plan import DEFAULT_MAX_FEATURES, check_resources, default_feature_block, degree_groups
from .polynomial import ExpPolynomial, exp_polynomial

__all__ = ["ApproxInfo", "ApproximationError", "approx_gradients", "score_range_bound"]

_COMPUTE_DTYPES = (torch.float64, torch.float32)


def _gamma(n: float, u: float) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of a floating-point sum or product of n terms."""
    return n * u / (1.0 - n * u) if n * u < 0.5 else math.inf


def _embed(rows: slice, mat: torch.Tensor, m: int) -> torch.Tensor:
    """(*lead, m, cols): ``mat`` (*lead, ., cols) placed at ``rows`` of the key-input space Z, zero elsewhere (maps Z to a linear function of it)."""
    out = torch.zeros(*mat.shape[:-2], m, mat.shape[-1], dtype=mat.dtype, device=mat.device)
    out[..., rows, :] = mat
    return out


def _kron(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(*lead, m^2, p q): [(a, b), (p, q)] = A_ap B_bq, so that C2 @ it = the flattened A^T C_i B of every row (A (*lead, m, p), B (*lead, m, q))."""
    m, p = A.shape[-2:]
    return (A[..., :, None, :, None] * B[..., None, :, None, :]).reshape(*A.shape[:-2], m * m, p * B.shape[-1])


def _mv(C: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(*, p) = C_i x_i for every row: C (*, p, q), x (*, q)."""
    return (C * x[..., None, :]).sum(dim=-1)


def _dot(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(*lead, b) = x_i . v for every row: x (*lead, b, q), v (*lead, q) (one vector per element)."""
    return (x @ v[..., :, None])[..., 0]


class _ErrorBound:
    """Certified max-entry bounds on |grad~ - grad| for every LoRA gradient, accumulated block by block.

    Called by ``run_lowrank`` on every query block (``__call__``); :meth:`result` finishes the chain.
    ``inst`` is in the compute dtype (u below); the gradients are returned in ``out_dtype``. Every
    quantity summed over rows is a sum of per-row bounds, so nothing of size L is kept. ``ok`` turns
    False (and the result is inf) when the bound cannot be established (delta_i >= 1, or the
    rounding of the moment sums is not bounded below 1/2 in this dtype). A batched ``inst`` is
    :func:`lora_theory.limits.lowrank.flat_instance`'s (E, ...) one: every bound below is per
    element (a leading E on every tensor; the row ranges rho_i, the key statistics and the
    covariances are each element's own), and only ``ok`` is shared.
    """

    def __init__(self, inst: AttentionLoRAInstance, poly: ExpPolynomial, R: float, sk: slice, sv: slice, m: int, out_dtype: torch.dtype,
                 feat_abs: torch.Tensor | float = 0.0) -> None:
        self.inst, self.poly, self.R, self.sk, self.sv, self.m = inst, poly, R, sk, sv, m
        self.feat_abs = feat_abs  # >= sum_a |w_a| |phi_a(q'_i)| |psi_a(k'_j)| for every i, j (per element): what an underflow in a moment sum is multiplied by
        Q, K, _ = inst.projections()
        self.Q = Q
        self.stats = key_range_stats(K)
        dt, dev = Q.dtype, Q.device
        lead = tuple(Q.shape[:-2])  # () or (E,)
        self.u = torch.finfo(dt).eps / 2  # unit roundoff of the computation (eps is the spacing at 1, twice u)
        self.u_out = torch.finfo(out_dtype).eps / 2 if out_dtype != dt else 0.0
        # gradual underflow: a product whose result is subnormal is off by at most half the subnormal spacing tiny eps
        # (tiny = the smallest normal number), whatever its magnitude; sums of subnormals are exact (issue 21, case 1).
        # The whole spacing is used: tiny u itself is not representable in float64 (it would round to 0).
        self.tu = torch.finfo(dt).tiny * torch.finfo(dt).eps
        self.Wv, self.Wk = inst.weight("v"), inst.weight("k")
        self.AV = _embed(sv, self.Wv, m)  # (m, d): V = Z AV
        self.AK = _embed(sk, self.Wk, m)  # (m, d): K = Z AK
        n_k, n_v = inst.Xk.shape[-1], inst.Xv.shape[-1]
        self.SK = _embed(sk, torch.eye(n_k, dtype=dt, device=dev).expand(*lead, n_k, n_k), m)  # (m, n): X_K = Z SK
        self.SV = _embed(sv, torch.eye(n_v, dtype=dt, device=dev).expand(*lead, n_v, n_v), m)  # (m, n): X_V = Z SV
        # every per-row quadratic form of the block in two GEMMs over the flattened covariances:
        # the variances of V, K, X_K, X_V (diagonals) and the covariances Cov(V, K), Cov(V, X_K)
        self.cols = torch.cat([self.AV, self.AK, self.SK, self.SV], dim=-1)  # (*lead, m, P)
        self.cols_abs = self.cols.abs()
        self.kdiag = (self.cols[..., :, None, :] * self.cols[..., None, :, :]).reshape(*lead, m * m, -1)  # [(a, b), p] = A_ap A_bp
        d = self.AV.shape[-1]
        self.split = (d, d, n_k, n_v)
        self.kcov = torch.cat([_kron(self.AV, self.AK), _kron(self.AV, self.SK)], dim=-1)  # (*lead, m^2, d d + d n)
        self.shapes = ((d, d), (d, n_k))
        self.Wv_abs, self.Wk_abs = self.Wv.abs(), self.Wk.abs()
        # The moments see V and K as Z AV and Z AK; the exact gradient sees the computed projections
        # X W (another rounding order): max_j |X_j W - (X W)_comp,j| <= gamma_{n+2} max_j |X_j| |W| per column.
        # The computed W itself is off: W = W* + (alpha/r) B A formed in the compute dtype (after the inputs' cast to it)
        # is within eW = 2u |W*| + gamma_{r+4} (alpha/r) |B| |A| (+ underflow) of the exact one, which is not small relative
        # to |W| when B A cancels W* (issue 21, case 3); it enters every projection as |X| eW.
        n_in = inst.Xk.shape[-1]
        g_n = _gamma(n_in + 4, self.u)  # the product's n terms, the sum, the cast of X
        self.eW = {mu: self._weight_error(mu) for mu in "qkv"}  # (*lead, n, d)
        tun = (n_in + 4) * self.tu

        def proj_err(X: torch.Tensor, mu: str) -> torch.Tensor:  # (*lead, L, d) |X W - (X W)_comp| entrywise, W the exact weight
            W_abs = inst.weight(mu).abs()
            return g_n * (X.abs() @ W_abs) + (1 + g_n) * (X.abs() @ self.eW[mu]) + tun

        self.eK = proj_err(inst.Xk, "k").amax(dim=-2)  # (*lead, d) per column, the largest over the keys
        self.eV = proj_err(inst.Xv, "v").amax(dim=-2)  # (*lead, d)
        self.eQ = proj_err(inst.Xq, "q")  # (*lead, L, d) per query row (the scores and G_K see Q row by row)
        self.need = set(inst.adapt)
        self.bG: dict[str, torch.Tensor] = {}
        self.ok = True
        self.why = ""  # why the bound could not be established (when ok turns False)
        self.g_d = _gamma(2 * m + 2, self.u)  # the per-row matrix-vector products (length <= m) and a subtraction
        self.g_L = _gamma(inst.L + 2 * m + Q.shape[-1] + 8, self.u)  # reductions over rows, the per-row products before them, the casts of X, Y

    def _weight_error(self, mu: str) -> torch.Tensor:
        """(*lead, n, d) >= |W_mu,comp - W_mu| entrywise: the casts of W*, B, A to the compute dtype, the product and the sum."""
        inst, u, tu = self.inst, self.u, self.tu
        W0 = inst.pretrained(mu).abs()
        lead = self.Q.shape[:-2]
        if mu not in inst.A:
            return (u * W0 + tu).expand(*lead, *W0.shape[-2:])
        BA = inst.scale * batched_matmul(inst.B[mu].abs(), inst.A[mu].abs())
        return (2 * u * W0 + _gamma(inst.r + 4, u) * BA + (inst.r + 4) * tu * (1 + inst.scale)).expand(*lead, *W0.shape[-2:])

    def _add(self, mu: str, t: torch.Tensor) -> None:
        self.bG[mu] = t if mu not in self.bG else self.bG[mu] + t

    def __call__(self, mom: KeyMoments, aux: dict[str, torch.Tensor]) -> None:
        if not self.ok:
            return
        inst, poly, R, sk, sv, u = self.inst, self.poly, self.R, self.sk, self.sv, self.u
        rows, m = mom.rows, self.m
        Q = self.Q[..., rows, :]  # (*lead, b, d); every (b,)-shaped comment below is (*lead, b) when batched
        dt, dev = Q.dtype, Q.device
        beta = inst.beta

        # -- row-wise range of the entrywise relative error delta_ij = eps(t_ij) -----------------------
        rho = row_score_ranges(Q, None, beta, stats=self.stats) / R  # (b,) |t_ij| <= rho_i
        if float(rho.max()) > 1 + 8 * u:  # the computed scores leave [-R, R], where P's error is certified: refuse, never extrapolate
            self.ok, self.why = False, "the computed scores leave [-R, R] (the projections' rounding, W's formation included, moves them past the certified range)"
            return
        rho_np = (rho * (1 + 8 * u)).clamp(max=1.0).cpu().numpy()  # + the rounding of the scaled q', k' (|dt| <= 3u for |t| <= 1)
        lo_np, hi_np = poly.error_range(rho_np)
        # A~'/A = (1 + eps(t')) e^{R (t' - t)} for the computed scores t' vs the exact t: |t' - t| <= dt_i = 4u (the rounding of
        # q' . k') + beta / R (|dQ_i| . max|K| + (|Q_i| + |dQ_i|) . dK) (the projections' errors, W's included); widen by e^{+-R dt_i}
        eQ = self.eQ[..., rows, :]  # (b, d)
        kabs = self.stats[1]  # (*lead, d) coordinate-wise largest |K_j|
        dts = 4 * u + (beta / R) * (_dot(eQ, kabs + self.eK) + _dot(Q.abs(), self.eK))  # (b,)
        wid = R * dts
        lo = (1 + torch.as_tensor(lo_np, dtype=dt, device=dev)) * torch.exp(-wid) - 1
        hi = (1 + torch.as_tensor(hi_np, dtype=dt, device=dev)) * torch.exp(wid) - 1
        delta = torch.maximum(lo.abs(), hi.abs())
        if not bool(torch.isfinite(delta).all()) or float(delta.max()) >= 1:
            self.ok, self.why = False, "the entrywise relative error of U V^T reaches 1 on some row (delta_i >= 1, the projections' errors included)"
            return
        eta = (hi - lo) / 2 / (1 - delta)  # (b,) only the spread of delta_ij within a row moves f~ (see check_mean_shift)
        if float(eta.max()) >= 1:
            self.ok, self.why = False, "the spread of the relative error within a row reaches 1 (eta_i >= 1)"
            return
        skap = ((1 + hi) / (1 + lo)).sqrt()  # (b,) sqrt(kappa_i): f / f~ and f~ / f are within [1 / kappa, kappa]

        # -- rounding of the moments (MomentSource): |N_comp - N| <= rho_r sum_j A~_ij |w_j| -------------
        abs_sum = torch.as_tensor(poly.abs_sum(rho_np), dtype=dt, device=dev)  # sum_a |U_ia V_ja| <= sum_l |c_l| rho_i^l
        rho_t = torch.as_tensor(rho_np, dtype=dt, device=dev)
        kF = abs_sum * torch.exp(R * rho_t) / (1 + lo)  # ... <= kF_i A~_ij, since A~_ij >= (1 + lo_i) e^{-R rho_i}
        rho_r = _gamma(mom.n_sum + 2 * poly.degree + 6, u) * kF  # sums over keys and features, monomial products, weights, Z products
        if not bool(torch.isfinite(rho_r).all()) or float(rho_r.max()) >= 0.5:
            self.ok, self.why = False, "the rounding of the moment sums is not bounded below 1/2 in this dtype"
            return
        tau = (2 * rho_r + 2 * u) / (1 - rho_r)  # (b,) relative-to-magnitude error of a normalized moment
        tauC = 3 * tau + tau * tau + 4 * u  # |Cov_comp - Cov~| <= tauC_i s_i s_i^T (rank one: never formed)
        mean, cov = mom.mean, mom.cov
        # underflow in the moment sums: each of the n_sum products of N = phi^T psi^T W can lose tiny u, multiplied by at most
        # feat_abs (weights and features) and, after the division by D~ (>= (1 - rho_r) times the computed one), by 1 + |E~(Z - zbar)|
        fa = torch.as_tensor(self.feat_abs, dtype=dt, device=dev)
        fa = fa[..., None] if fa.dim() else fa  # (*lead, 1) per element
        e_N = (mom.n_sum + 2 * poly.degree + 8) * self.tu * (1 + fa)
        e_mom = 3 * e_N * (1 + (mean - mom.zbar[..., None, :]).abs().amax(dim=-1)) / (mom.D.abs() * (1 - tau))  # (b,) absolute, every entry
        if not bool(torch.isfinite(e_mom).all()):
            self.ok, self.why = False, "the underflow allowance of the moments is not finite"
            return
        # s >= sqrt(E~ (Z - zbar)^2) with the underflow allowance folded into the rank-one error bar: tauC s_a s_b >= tauC s0_a s0_b + e_mom
        s = ((mom.second.clamp(min=0) + e_mom[..., None]) / (1 - tau[..., None])).sqrt() + (e_mom / tauC).sqrt()[..., None]  # (b, m)
        cov2 = cov.reshape(*cov.shape[:-2], m * m)  # (b, m^2) for the GEMM forms of the per-row quadratic forms
        err_mean = tau[..., None] * s + u * mean.abs() + e_mom[..., None]  # (b, m)
        e_row = (2 * m + 8) * self.tu  # the per-row products below that underflow (absolute, per entry)
        AV, AK, Wv, Wk, g_d = self.AV, self.AK, self.Wv, self.Wk, self.g_d

        # sd~ of V_e, K_e, X_K,a, X_V,a for every row: the computed variance plus its error bar
        sa = s @ self.cols_abs  # (b, P): s_i . |A| (the error bar of Cov~ through A is tauC (s |A|)^T (s |B|))
        var = cov2 @ self.kdiag + tauC[..., None] * sa * sa
        sdV, sdK, sdXK, sdXV = var.clamp(min=0).sqrt().split(self.split, dim=-1)
        saV, saK, _, _ = sa.split(self.split, dim=-1)
        qc = (cov2 @ self.kcov).abs()  # (b, d d + d n) |Cov~(V_b, K_e)| and |Cov~(V_b, X_K,a)| as computed
        (dd, dk), (_, nk) = self.shapes
        covVK = qc[..., : dd * dk].unflatten(-1, (dd, dk)) + tauC[..., None, None] * saV[..., :, None] * saK[..., None, :]  # >= |Cov~(V_b, K_e)|
        covVX = qc[..., dd * dk :].unflatten(-1, (dd, nk)) + tauC[..., None, None] * saV[..., :, None] * s[..., sk][..., None, :]  # >= |Cov~(V_b, X_K,a)|
        Wv_abs, Wk_abs = self.Wv_abs, self.Wk_abs
        c = aux["c"]
        meanV, err_meanV = mean[..., sv], err_mean[..., sv]
        # O = E~[X_V] W_V vs E~[V_comp]: the moments' error, the product's rounding (E~|X_V| <= |zbar| + s), the projection's
        errO = err_meanV @ Wv_abs + g_d * ((mom.zbar[..., sv].abs().unsqueeze(-2) + s[..., sv]) @ Wv_abs) + self.eV.unsqueeze(-2) + e_row  # (b, d)
        errc = errO + 2 * u * c.abs() + u * inst.Y[..., rows, :].abs()  # the subtraction, and Y's cast to the compute dtype
        if inst.upstream:  # c = Y is the given upstream gradient dL/dO: independent of O~, exact but for its cast to the compute dtype
            errc = u * inst.Y[..., rows, :].abs()
        cabs = c.abs() + errc  # >= |c~|, the exact-arithmetic residual of the approximation

        # -- the approximation (exact arithmetic on A~), row by row ---------------------------------------
        # A mean shift (E~ - E)[x] = Cov_f(delta, x) / (1 + dbar) needs only how much delta_j varies under f:
        # by the range, |delta_j - m| <= (hi - lo) / 2 (eta); by the slope, |delta_j - eps(tau)| <= slope |t_j - tau|
        # + c_u with tau = E_f t, so |Cov_f(delta, x)| <= (slope sd_f(t) + c_u) sd_f(x) (eta1 = the smaller of the two).
        slope = torch.as_tensor(poly.slope_bound(rho_np), dtype=dt, device=dev)  # (b,) sup |eps'| on |t| <= rho_i
        aKQ = Q @ AK.mT * (beta / R)  # (b, m): t_ij = aKQ_i . Z_j
        var_t = (_mv(cov, aKQ) * aKQ).sum(dim=-1) + tauC * (s * aKQ.abs()).sum(dim=-1) ** 2
        # the rounded scores (|t' - t| <= 3u, and the factor e^{R (t' - t)}), and t as Z AK vs the computed K
        c_u = slope * dts + 2 * torch.expm1(wid) * (1 + delta)
        eta1 = torch.minimum(eta, (slope * skap * var_t.clamp(min=0).sqrt() + c_u) / (1 - delta))  # (b,)
        bO = (eta1 * skap)[..., None] * sdV  # (b, d) |O~ - O|                                     (check_mean_shift)
        bOc = torch.zeros_like(bO) if inst.upstream else bO  # |c~ - c|: O~ - O for the squared loss, 0 for an upstream gradient
        cZ = c @ AV.mT  # (b, m): c . V_j = (AV c) . Z_j
        var_cV = (_mv(cov, cZ) * cZ).sum(dim=-1) + tauC * (s * cZ.abs()).sum(dim=-1) ** 2
        sd_cV = var_cV.clamp(min=0).sqrt() + (errc * sdV).sum(dim=-1)  # >= sd~(c~ . V)
        sd_h = skap * (sd_cV + (bOc * sdV).sum(dim=-1))  # (b,) >= sd_f(c . V) with the exact c = c~ - (O~ - O)

        # (p~ x)_i - (p x)_i = Cov~((O~ - O) . V, x) [term A] + (Cov~ - Cov)(h, x) [term B], h = c . V; with
        # y = (h - E h)(x - E x): |term B| <= eta E_f|y - E_f y| + eta^2 sd sd and E_f|y - E_f y| <= sd_f(h) sd_f(x) + |Cov_f(h, x)|,
        # where |Cov_f(h, x)| <= |p~ x| + T itself; solving T <= A + eta (sd sd + |p~ x| + T) + eta^2 sd sd for T (check_cov_shift):
        def shifted(termA: torch.Tensor, sdx: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
            ss = sd_h[..., None] * skap[..., None] * sdx  # (b, p) sd_f(h) sd_f(x)
            return (termA + eta[..., None] * (ss + px) + (eta1 * eta1)[..., None] * ss) / (1 - eta[..., None])

        need, beta = self.need, inst.beta
        if need & {"q", "k"}:
            pXK = aux["pXK"]
            cV = c @ Wv.mT
            err_cV = errc @ Wv_abs.mT + g_d * (c.abs() @ Wv_abs.mT) + c.abs() @ self.eW["v"].mT + e_row  # (b, n) (+ W_V's own error)
            Ckv = cov[..., sk, sv].abs()
            err_pXK = ((tauC * (s[..., sv] * cV.abs()).sum(dim=-1))[..., None] * s[..., sk] + _mv(Ckv, err_cV)
                       + g_d * _mv(Ckv, cV.abs()) + e_row)  # (b, n) |pXK_comp - p~ X_K|
        if "q" in need:
            pK_abs = (pXK @ Wk).abs() + err_pXK @ Wk_abs + g_d * (pXK.abs() @ Wk_abs)  # (b, d) >= |p~ K|
            bpK = shifted((bOc[..., :, None] * covVK).sum(dim=-2), sdK, pK_abs)  # (b, d)
            # the rounding of pXK and of X_Q^T (pXK W_K); K and V as Z AK, Z AV vs the computed projections
            rnd = (err_pXK @ Wk_abs + self.g_L * (pXK.abs() @ Wk_abs) + sd_h[..., None] * self.eK.unsqueeze(-2)
                   + skap[..., None] * sdK * _dot(cabs, self.eV)[..., None] + (pXK.abs() + err_pXK) @ self.eW["k"] + e_row)
            self._add("q", beta * (inst.Xq[..., rows, :].abs().mT @ (bpK + rnd)))  # (n, d)
        if "k" in need:
            bpX = shifted((bOc[..., :, None] * covVX).sum(dim=-2), sdXK, pXK.abs() + err_pXK)  # (b, n)
            rnd = err_pXK + self.g_L * pXK.abs() + skap[..., None] * sdXK * _dot(cabs, self.eV)[..., None] + e_row  # as for q: V as Z AV
            self._add("k", beta * ((bpX + rnd).mT @ Q.abs() + (pXK.abs() + bpX + rnd).mT @ eQ))  # (n, d); Q's own error (eQ) too
        if "v" in need:
            bE = (eta1 * skap)[..., None] * sdXV  # (b, n) |E~[X_V] - E[X_V]|
            self._add("v", bE.mT @ cabs + (meanV.abs() + err_meanV + bE).mT @ bOc  # the approximation
                      + err_meanV.mT @ c.abs() + meanV.abs().mT @ errc + self.g_L * (meanV.abs().mT @ c.abs())  # the rounding
                      + (Q.shape[-2] * e_row))  # the products of the row sum that underflow

def _chain_bounds(inst: AttentionLoRAInstance, bG: dict[str, torch.Tensor] | None, G: dict[str, torch.Tensor], target: AttentionLoRAInstance,
                  u: float, u_out: float, out_dtype: torch.dtype | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The chain dL/dA = s B^T G, dL/dB = s G A^T of the weight-gradient bounds ``bG``, its rounding, and the cast.

    Args:
        inst: the compute-dtype instance (flattened (E, ...) when batched); ``bG``: max-entry bounds on
            |G~ - G| per adapted weight (per element when batched), or None when no bound could be established.
        G: the computed weight gradients (per element when batched, as ``run_lowrank`` returns them).
        target: the instance whose factor shapes the returned gradients have (``inst`` unflattened).
        u, u_out: unit roundoffs of the computation and of the returned dtype (0 when the same).
        out_dtype: the returned dtype (its underflow: a cast to it is off by at most u_out |x| + tiny_out u_out,
            half the subnormal spacing, for a result that lands among its subnormals; issue 21, case 1).

    Returns:
        (bound, per_element): ``bound[name]`` bounds the max-entry error of the returned gradient
        ``name``; for a factor shared along batch dimensions that gradient is a sum over elements,
        and its bound is the entrywise sum of the per-element bounds (plus the rounding of the
        longer sum). ``per_element[name]`` (an array shaped like the batch) bounds the max-entry
        error of each element's own gradient (its loss alone).
    """
    bs = target.batch_shape
    E = math.prod(bs)  # 1 for a single head
    if bG is None or set(bG) != set(inst.adapt):
        names = [f"{p}_{mu}" for mu in inst.adapt for p in "AB"]
        return {nm: math.inf for nm in names}, {nm: np.full(bs, math.inf) for nm in names}
    sc = inst.scale
    out: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    dt = next(iter(G.values())).dtype
    tu = torch.finfo(dt).tiny * torch.finfo(dt).eps  # >= the error of one underflowing product in the compute dtype (the subnormal spacing)
    tu_out = torch.finfo(out_dtype).tiny * torch.finfo(out_dtype).eps if out_dtype is not None and u_out > 0 else 0.0  # the cast into the returned dtype's subnormals
    bG = {mu: b + (inst.L + 8) * tu * max(1.0, inst.beta) for mu, b in bG.items()}  # the row sums of G (and beta's product) that underflow

    def finish(bound: torch.Tensor, mag: torch.Tensor, g_r: float, n_terms: int) -> torch.Tensor:
        # the chain's rounding (relative, and n_terms underflowing products), then the final cast (relative and absolute)
        b = bound + g_r * mag + n_terms * tu * max(1.0, sc)
        return b + u_out * (mag + b) + tu_out

    def top(t: torch.Tensor) -> float:
        val = float(t.max()) if t.numel() else 0.0
        return val if math.isfinite(val) else math.inf

    for mu in inst.adapt:
        A_, B_, bGm = inst.A[mu], inst.B[mu], bG[mu]  # (*lead, r, d), (*lead, n, r), (*lead, n, d)
        n_sum = max(A_.shape[-1], B_.shape[-2])  # the chain's sums run over n (dL/dA) or d (dL/dB)
        Gabs = G[mu].abs() + bGm
        for name, bound, mag in ((f"A_{mu}", sc * (B_.abs().mT @ bGm), sc * (B_.abs().mT @ Gabs)),
                                 (f"B_{mu}", sc * (bGm @ A_.abs().mT), sc * (Gabs @ A_.abs().mT))):
            total = finish(bound, mag, _gamma(n_sum + 2, u), n_sum + 2)  # (*lead, r, n) or (*lead, n, r): each element's own gradient
            if not bs:
                out[name] = top(total)
                per[name] = np.asarray(out[name])
                continue
            e = total.amax(dim=(-2, -1)).cpu().numpy()  # (E,) max entry per element
            per[name] = np.where(np.isfinite(e), e, math.inf).reshape(bs)
        if bs:  # the returned gradients: sum over the elements each factor is shared along, entry by entry
            tA, tB = target.A[mu], target.B[mu]
            bGb, Gb = bGm.reshape(*bs, *bGm.shape[-2:]), Gabs.reshape(*bs, *Gabs.shape[-2:])  # (E, n, d) -> (*batch, n, d)
            g_r = _gamma(n_sum * E + 2, u)  # one einsum sums over n (or d) and the shared elements
            for name, bound, mag in ((f"A_{mu}", sc * batched_matmul(tB.abs().mT, bGb, tA.shape), sc * batched_matmul(tB.abs().mT, Gb, tA.shape)),
                                     (f"B_{mu}", sc * batched_matmul(bGb, tA.abs().mT, tB.shape), sc * batched_matmul(Gb, tA.abs().mT, tB.shape))):
                out[name] = top(finish(bound, mag, g_r, n_sum * E + 2))
    return out, per


def _run_polynomial(inst: AttentionLoRAInstance, poly: ExpPolynomial, R: float, k_rank: int, block_size: int | None, out_dtype: torch.dtype,
                    t0: float) -> tuple[LowRankRun, _ErrorBound]:
    """One streaming pass of the polynomial method over ``inst`` (a single head, or flattened (E, ...) elements) and its bound."""
    Z, sk, sv = key_inputs(inst)
    Q, K, _ = inst.projections()  # (*lead, L, d), lead = () or (E,)
    dt, L, d = Q.dtype, inst.L, Q.shape[-1]
    scale = math.sqrt(inst.beta / R)  # q' . k' = beta q . k / R = t in [-1, 1]
    # balance q' and k' by an exact power of two per element (scores unchanged): max ||q'|| ~ max ||k'||, so that neither
    # side's monomials over- or underflow when the instance puts the norm on one side (|Q| ~ 2^600, |K| ~ 2^-600)
    qn = Q.norm(dim=-1).amax(dim=-1).double().clamp(min=1e-300)  # (*lead,)
    kn = K.norm(dim=-1).amax(dim=-1).double().clamp(min=1e-300)
    e2 = torch.round(0.5 * torch.log2(kn / qn)).clamp(-1000, 1000)  # (*lead,) the exponent moved from K to Q
    bal = torch.exp2(e2).to(dtype=dt)[..., None, None] if Q.dim() == 3 else float(2.0 ** float(e2))
    Qs, Ks = Q * scale * bal, K * scale / bal
    # >= sum_a |w_a| |phi_a(q'_i)| |psi_a(k'_j)|: monomials of degree l are bounded by (max |coordinate|)^l and their
    # multinomial weights sum to d^l, so sum_l |c_l| (d max|q'| max|k'|)^l (what an underflow in a moment sum is multiplied by)
    qa = Qs.abs().amax(dim=(-2, -1)).double()
    ka = Ks.abs().amax(dim=(-2, -1)).double()
    with np.errstate(over="ignore"):  # overflows to inf: then the bound is inf and the run is flagged, as it should be
        feat_abs = torch.as_tensor(np.polynomial.polynomial.polyval((d * qa * ka).cpu().numpy(), np.abs(poly.coef)))
    fmap = FeatureMap(poly.degree, d)
    itemsize = torch.empty((), dtype=dt).element_size()
    n_elem = Q.shape[0] if Q.dim() == 3 else 1
    block = min(block_size or default_feature_block(k_rank, L, itemsize, n_elem), L)
    if inst.causal and block_size is None:
        block = min(block, CAUSAL_BLOCK)  # the masked diagonal block costs O(b^2 k)
    buf = torch.empty(k_rank, *Q.shape[:-2], block, dtype=dt, device=Q.device)  # the one (k, E, block) feature slice, reused

    def query_blocks(i0: int, i1: int) -> torch.Tensor:
        return fmap(Qs[..., i0:i1, :], out=buf)

    def key_blocks(j0: int, j1: int) -> torch.Tensor:
        return fmap(Ks[..., j0:j1, :], out=buf)

    weights = torch.as_tensor(fmap.weights(poly.coef), dtype=dt, device=Q.device)
    acc = _ErrorBound(inst, poly, R, sk, sv, Z.shape[-1], out_dtype, feat_abs=feat_abs)
    run = run_lowrank(inst, query_blocks, key_blocks, t0, block=block, weights=weights, on_block=acc, flat=inst)
    return run, acc


def approx_gradients(
    inst: AttentionLoRAInstance,
    *,
    eps: float = 1e-3,
    method: Literal["chebyshev", "taylor"] = "chebyshev",
    degree: int | None = None,
    R: float | None = None,
    max_degree: int = 40,
    on_invalid: Literal["raise", "flag"] = "raise",
    max_features: int = DEFAULT_MAX_FEATURES,
    memory_budget: float | None = None,
    block_size: int | None = None,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[dict[str, torch.Tensor], ApproxInfo]:
    """LoRA gradients by the polynomial method in O(L k m^2), k = C(g + d, d); no L x L matrix.

    Args:
        inst: the instance (any dtype/device; the chain runs in ``compute_dtype`` and the
            gradients come back in the instance's dtype). Tensors that require grad (an
            ``nn.Parameter`` factor) are detached first (:meth:`AttentionLoRAInstance.detach`): the
            gradients are computed in closed form and no autograd graph is recorded.
        eps: target sup relative error of P(s) ~ e^s on the score range (the entrywise error of
            exp(S) ~ U V^T); ignored for the degree choice when ``degree`` is given.
        method: "chebyshev" or "taylor" (see :func:`lora_theory.exp_polynomial`).
        degree: force this degree g (the "fixed degree budget" of the phase-transition sweeps).
        R: score range to cover; default :func:`score_range_bound` (Cauchy-Schwarz, O(L d)). A
            value below that bound raises :class:`ApproximationError` (it cannot be verified).
        max_degree: largest degree tried when searching for eps.
        on_invalid: "raise" an :class:`ApproximationError` when eps cannot be certified or an
            intermediate is not finite, or "flag" (return the result with ``info.valid = False``
            and the reason; the gradients may then be non-finite). Refusals that happen before any
            computation (an unverified R, too many features or bytes, coefficients that overflow)
            raise in both modes: there is no result to flag.
        max_features: refuse (before allocating) when k = C(g + d, d) exceeds this.
        memory_budget: bytes; refuse when the predicted peak exceeds it (default: half of the
            available RAM).
        block_size: rows per feature block (default about 1 MiB per (k, block) slice).
        compute_dtype: float64 (default) or float32 for the chain; the rounding terms of delta
            and of the error bound use its unit roundoff.

    Batched multi-head instances (leading batch dimensions, e.g. X (batch, 1, L, n) shared by the
    heads, W (heads, n, d), B (n, r) shared by every head): all E = prod(batch shape) elements run
    in one pass (batched GEMMs over the elements, a loop over query-row blocks only), and the
    gradient of a shared factor is summed over the dimensions it is shared along, as in
    :func:`lora_theory.exact_gradients`. Certification stays per element: every element's score
    range R+_e (Cauchy-Schwarz) is verified and reported (``info.element_R``), the row ranges,
    moments and bound terms are each element's own, and ``info.element_error_bound[name]`` bounds
    each element's own gradient (its loss alone). Degree choice: the elements are grouped by the
    degree their own R+_e needs for eps; each group runs vectorized with the polynomial certified on
    its largest range (``info.element_degree``, ``info.element_range``), so a head never pays for a
    wider head's degree, and the Python loop is over the (few) distinct degrees, not the heads.
    With a caller's ``R`` or ``degree`` every element runs that one polynomial. ``info.degree``,
    ``rank``, ``R`` are the largest over the elements; ``info.error_bound`` bounds the returned
    gradients: for a shared factor, the entrywise sum of the per-element bounds.

    Causal instances (query i sees keys j <= i): the moments of row i are over its allowed keys,
    computed as prefix sums of the (k, c) key contractions over query blocks plus a masked
    diagonal block (the causal linear-attention chunk form; blocks of at most
    :data:`lora_theory.limits.lowrank.CAUSAL_BLOCK` rows). The bound carries over unchanged: every
    term of it is a per-row statement about the distribution f~_i over the keys row i sees (its
    row range rho_i bounds those scores, the key statistics over all keys bound the allowed ones),
    and the rounding allowance counts one more addition (prefix + diagonal block).

    Stages (each a function of this module, readable and testable alone): :func:`_verified_range`
    (range), :func:`_degree_plan` (degree), :func:`_check_group_resources` (resources),
    :func:`_run_groups` (run), :func:`_finish` (chain, cast back, bound, checks).

    Returns:
        (grads, info): grads as :func:`lora_theory.exact_gradients`; info an :class:`ApproxInfo`.

    Raises:
        InvalidArgumentError: bad arguments.
        ApproximationError: see ``on_invalid``.

    Reference: Hu et al. (2024), Thm 3.1 (partial) and Thm A.1 (full); AS23, AS24.
    """
    inst = _check_instance(inst).detach()  # closed-form gradients: an autograd graph is never recorded (see Args)
    opts = _check_options(eps=eps, method=method, degree=degree, max_degree=max_degree, on_invalid=on_invalid, max_features=max_features,
                          memory_budget=memory_budget, block_size=block_size, compute_dtype=compute_dtype)
    t0 = time.perf_counter()
    R_used, R_elem = _verified_range(inst, R, opts)                       # range: every element's scores covered
    groups = _degree_plan(inst, R_used, R_elem, caller_R=R, opts=opts)     # degree: one polynomial per group of elements
    _check_group_resources(inst, groups, opts)                             # resources: before anything of size k exists
    ic = inst if inst.dtype == compute_dtype else inst.to(dtype=compute_dtype)
    runs = _run_groups(ic, groups, opts, inst.dtype, t0)                   # run: one streaming pass per group
    return _finish(inst, ic, groups, runs, R_elem, R_used, opts, t0)       # bound: chain, cast, checks, info


@dataclass(frozen=True)
class _Options:
    """The validated options of :func:`approx_gradients` (see its Args)."""

    eps: float
    method: str
    degree: int | None
    max_degree: int
    on_invalid: str
    max_features: int
    memory_budget: float | None
    block_size: int | None
    compute_dtype: torch.dtype

    @property
    def u(self) -> float:
        """Unit roundoff of the compute dtype."""
        return torch.finfo(self.compute_dtype).eps / 2


@dataclass(frozen=True)
class _Group:
    """Elements run with one polynomial: their indices (None: every element), the range it covers, the polynomial, its k."""

    idx: torch.Tensor | None
    R: float
    poly: ExpPolynomial
    k: int


def _check_options(*, eps: float, method: str, degree: int | None, max_degree: int, on_invalid: str, max_features: int,
                   memory_budget: float | None, block_size: int | None, compute_dtype: torch.dtype) -> _Options:
    """Validate :func:`approx_gradients`' options (InvalidArgumentError naming the argument)."""
    check_choice("method", method, ("chebyshev", "taylor"))
    check_choice("on_invalid", on_invalid, ("raise", "flag"))
    eps = check_positive("eps", eps)
    if eps >= 1:
        raise InvalidArgumentError(f"eps: expected a number in (0, 1), got {eps}")
    if degree is not None:
        degree = check_int("degree", degree, low=0, high=60)
    max_degree = check_int("max_degree", max_degree, low=0, high=60)
    max_features = check_int("max_features", max_features, low=1)
    if block_size is not None:
        block_size = check_int("block_size", block_size, low=1)
    if memory_budget is not None:
        memory_budget = check_positive("memory_budget", memory_budget)
    if compute_dtype not in _COMPUTE_DTYPES:
        raise InvalidArgumentError(f"compute_dtype: expected torch.float64 or torch.float32, got {compute_dtype!r}")
    return _Options(eps, method, degree, max_degree, on_invalid, max_features, memory_budget, block_size, compute_dtype)


def _verified_range(inst: AttentionLoRAInstance, R: float | None, opts: _Options) -> tuple[float, torch.Tensor]:
    """Stage 1 (range): the score range R the polynomial covers, verified against every element's Cauchy-Schwarz bound.

    Returns (R_used, R_elem): R_used >= max_e R+_e (a caller's R, checked), R_elem the per-element R+_e
    (float64, batch shape). Raises ApproximationError for an unverifiable R, a bound that overflows
    float64, or (on_invalid="raise") a range past which no degree can certify eps in the compute dtype.
    """
    # in float64 whatever the instance's dtype: float16 projections would round the norms by 2^-11
    ref = inst if inst.dtype == torch.float64 else inst.to(dtype=torch.float64)
    R_cs = score_range_bound(ref)  # the largest per-element bound: the range the one polynomial covers
    if not math.isfinite(R_cs):
        raise ApproximationError(f"approx_gradients: the score range bound beta max||Q_i|| max||K_j|| overflows float64 (got {R_cs}); reduce the norms")
    if R is None:
        R_used = R_cs
    else:
        R_used = check_positive("R", R, allow_zero=True)
        if R_used < R_cs:
            raise ApproximationError(
                f"approx_gradients: R = {R_used:.6g} is below this instance's verified score range bound {R_cs:.6g} "
                f"(beta max_i ||Q_i|| max_j ||K_j||): the scores may exceed R, so nothing could be certified. "
                f"Omit R, or pass R >= {R_cs:.6g}.")
    R_used = max(R_used, 1e-12)  # all scores are 0: any positive half-width works; avoids t = s / 0
    u, eps = opts.u, opts.eps
    # sum_j |c_j| >= |P(1)| ~ e^R, so the rounding term of delta is >= (k + g) u e^{2R} (1 - eps): past
    # R = ln(eps / u) / 2 no degree can certify eps in this dtype (and e^{R t} overflows past ~700).
    R_cap = 0.5 * math.log(eps / (u * (1 - eps)))
    if opts.on_invalid == "raise" and R_used > R_cap:
        raise ApproximationError(
            f"approx_gradients: cannot certify eps = {eps:.1e} at score range R = {R_used:.4g} in {opts.compute_dtype}: the rounding of the "
            f"monomial sums alone is at least u e^(2R) = {u * math.exp(min(2 * R_used, 700.0)):.2e}; R must be <= {R_cap:.3g}. "
            f"Reduce the norms (bound) or beta, or raise eps.")
    # the computed scores (projections rounded in the compute dtype) may exceed the exact bound by the rounding of the norms
    R_used = max(R_used, R_cs * (1 + _gamma(2 * (inst.n + inst.d) + 8, u)))  # a caller's R above that is kept as given
    return R_used, score_range_bounds(ref)


def _degree_plan(inst: AttentionLoRAInstance, R_used: float, R_elem: torch.Tensor, *, caller_R: float | None, opts: _Options) -> list[_Group]:
    """Stage 2 (degree): the polynomials, one per group of elements needing the same degree.

    A batched instance without a caller's R or degree groups its elements by the degree their own
    range R+_e needs (:func:`degree_groups`), each group's polynomial certified on the group's largest
    range; otherwise one polynomial on R_used serves every element.
    """
    if inst.batch_shape and caller_R is None and opts.degree is None:
        parts = degree_groups(R_elem.reshape(-1).clamp(min=1e-12).cpu(), opts.eps, opts.method, opts.max_degree)
    else:
        parts = [(None, R_used)]
    d = inst.d  # head dimension: the width of Q = X_Q W_Q
    out = []
    for idx, R_g in parts:
        poly = exp_polynomial(R_g, opts.eps, method=opts.method, degree=opts.degree, max_degree=opts.max_degree)
        if not poly.finite:
            raise ApproximationError(f"approx_gradients: the degree-{poly.degree} polynomial of e^s on [-R, R], R = {R_g:.4g}, overflows float64; "
                                     f"nothing can be computed. Reduce the norms (bound) or beta.")
        out.append(_Group(idx, R_g, poly, math.comb(poly.degree + d, d)))
    return out


def _check_group_resources(inst: AttentionLoRAInstance, groups: list[_Group], opts: _Options) -> None:
    """Stage 3 (resources): refuse (ApproximationError) before allocating when a group's k or bytes exceed the limits."""
    m = key_inputs(inst)[0].shape[-1]
    itemsize = torch.empty((), dtype=opts.compute_dtype).element_size()
    n_elem = math.prod(inst.batch_shape)
    for g in groups:
        check_resources(L=inst.L, d=inst.d, k=g.k, degree=g.poly.degree, R=g.R, eps=opts.eps, method=opts.method, m=m, n=inst.n,
                        itemsize=itemsize, max_features=opts.max_features, budget=opts.memory_budget, max_degree=opts.max_degree,
                        batch=n_elem if g.idx is None else len(g.idx), causal=inst.causal)


def _run_groups(ic: AttentionLoRAInstance, groups: list[_Group], opts: _Options, out_dtype: torch.dtype, t0: float) -> list[tuple[LowRankRun, _ErrorBound]]:
    """Stage 4 (run): one streaming pass of the polynomial method per group, on the compute-dtype instance ``ic``."""
    fi = flat_instance(ic)  # (E, ...) when batched: every tensor expanded to the full batch shape, flattened
    runs = []
    for g in groups:
        sub = fi if g.idx is None else select_elements(fi, g.idx)
        runs.append(_run_polynomial(sub, g.poly, g.R, g.k, opts.block_size, out_dtype, t0))
    return runs


def _group_delta(g: _Group, u: float) -> float:
    """delta: the entrywise relative error of U V^T vs exp(S): the polynomial's own error plus the rounding of
    summing k monomial products in this dtype (see ExpPolynomial.feature_rounding)."""
    return g.poly.rel_error + g.poly.feature_rounding(g.k + g.poly.degree, 2 * u)


def _finish(inst: AttentionLoRAInstance, ic: AttentionLoRAInstance, groups: list[_Group], runs: list[tuple[LowRankRun, _ErrorBound]],
            R_elem: torch.Tensor, R_used: float, opts: _Options, t0: float) -> tuple[dict[str, torch.Tensor], ApproxInfo]:
    """Stage 5 (bound): reassemble the groups, the chain (shared factors summed), the cast back, the bound, the checks, the info."""
    bs, u, eps = inst.batch_shape, opts.u, opts.eps
    n_elem = math.prod(bs)
    reasons: list[str] = []
    deltas = [_group_delta(g, u) for g in groups]
    for g, delta in zip(groups, deltas, strict=True):
        if not delta <= eps:
            reasons.append(f"degree {g.poly.degree} reaches sup relative error {delta:.2e} > eps = {eps:.0e} on [-R, R], R = {g.R:.3g}"
                           f" (fit {g.poly.rel_error:.1e}, rounding {delta - g.poly.rel_error:.1e})")
        if not delta < 1:
            reasons.append("P can be <= 0 on the score range (relative error >= 1)")
    for run, _ in runs:
        reasons += [r for r in run.reasons if r not in reasons and not r.startswith("non-finite gradients")]
    # reassemble the groups' per-element results in element order (a group's indices are sorted by range, not by element)
    fi = flat_instance(ic)
    if len(runs) == 1 and groups[0].idx is None:  # one polynomial for every element, in element order
        run, acc = runs[0]
        G, D = run.G, run.aux["D"].reshape(*bs, inst.L)
        bG = acc.bG if acc.ok and set(acc.bG) == set(inst.adapt) else None
    else:
        G = {mu: torch.empty(n_elem, *fi.weight(mu).shape[-2:], dtype=opts.compute_dtype, device=fi.device) for mu in inst.adapt}
        bG = {mu: torch.empty_like(G[mu]) for mu in inst.adapt}
        D = torch.empty(n_elem, inst.L, dtype=opts.compute_dtype, device=fi.device)
        ok = True
        for g, (run, acc) in zip(groups, runs, strict=True):
            D[g.idx] = run.aux["D"].reshape(len(g.idx), inst.L)
            ok = ok and acc.ok and set(acc.bG) == set(inst.adapt)
            for mu in inst.adapt:
                G[mu][g.idx] = run.G[mu]
                if ok:
                    bG[mu][g.idx] = acc.bG[mu]
        bG = bG if ok else None
        D = D.reshape(*bs, inst.L)
    # the chain on the unflattened instance: a factor shared along batch dimensions gets the sum over them (issue 21, case 4)
    grads = lora_chain(ic, {mu: g.reshape(*bs, *g.shape[-2:]) for mu, g in G.items()})
    failed = any(run.reasons for run, _ in runs)
    names = [f"{p}_{mu}" for mu in inst.adapt for p in "AB"]
    u_out = torch.finfo(inst.dtype).eps / 2 if inst.dtype != opts.compute_dtype else 0.0
    bound, elem_bound = _chain_bounds(fi, bG, G, ic, u, u_out, inst.dtype) if not failed else \
        ({nm: math.inf for nm in names}, {nm: np.full(bs, math.inf) for nm in names})
    if not failed and not all(math.isfinite(b) for b in bound.values()):
        whys = sorted({acc.why for _, acc in runs if acc.why})
        reasons.append("the error bound is not finite: " + ("; ".join(whys) if whys else
                       f"the rounding of sums over L = {inst.L} keys and k = {max(g.k for g in groups)} features in {opts.compute_dtype} "
                       f"cannot be bounded at R = {R_used:.3g}"))
    # the cast back to the instance's dtype, finiteness checked after it (a float16 result can overflow there; issue 21, case 2)
    grads = {k: v.to(dtype=inst.dtype) for k, v in grads.items()}
    bad = [k for k, v in grads.items() if not bool(torch.isfinite(v).all())]
    if bad:
        reasons.append(f"non-finite gradients {bad} in {inst.dtype} (min D~ = {float(D.min()):.2e})")
    run_times = [run.times["keys"] for run, _ in runs]
    keys_t = sum(run_times)
    times = {"keys": keys_t, "queries": time.perf_counter() - t0 - keys_t, "total": time.perf_counter() - t0}
    e_deg, e_range = np.empty(n_elem, dtype=np.int64), np.empty(n_elem)  # per element: the group's degree and covered range
    for g in groups:
        sel = slice(None) if g.idx is None else g.idx.numpy()
        e_deg[sel], e_range[sel] = g.poly.degree, g.R
    top = max(groups, key=lambda g: g.R)
    info = ApproxInfo(
        valid=not reasons, reason="; ".join(reasons), degree=max(g.poly.degree for g in groups), rank=max(g.k for g in groups), R=top.R,
        poly_rel_error=max(deltas), min_normalizer=float(D.min()), error_bound=bound, times=times, method=opts.method,
        compute_dtype=str(opts.compute_dtype).replace("torch.", ""), batch_shape=bs,
        element_R=R_elem.cpu().numpy(), element_min_normalizer=D.amin(dim=-1).double().cpu().numpy(),
        element_error_bound=elem_bound, element_degree=e_deg.reshape(bs), element_range=e_range.reshape(bs),
    )
    if reasons and opts.on_invalid == "raise":
        raise ApproximationError("approx_gradients: cannot certify the approximation: " + "; ".join(reasons)
                                 + ". Raise max_degree or eps, reduce the norms (bound), or pass on_invalid='flag'.")
    return grads, info
