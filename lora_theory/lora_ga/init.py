"""LoRA-GA initialization: A = c V_{I_A}^T, B = c U_{I_B} from the SVD G = U S V^T of the full gradient.

With W' = W0 + eta B A (PEFT conventions: W0 (m, n), B (m, r), A (r, n), eta = alpha/r or
alpha/sqrt(r) with rsLoRA) the gradients through the adapter are grad_A = eta B^T G and
grad_B = eta G A^T, so one SGD step of size lr changes eta B A by

    Delta = -lr eta^2 (G A^T A + B B^T G) + lr^2 eta^3 G A^T B^T G.

For disjoint I_A, I_B of size r with union {1..2r} the first-order part is exactly
-lr zeta G_2r with zeta = eta^2 c^2 (Thm 3.1): the best rank-2r approximation of the full
fine-tuning step (Eckart-Young). The frozen weight is moved to W_res = W0 - eta B A so the
model's output at step 0 is unchanged.

Scales c: "stable" m^{1/4} / sqrt(gamma) (so that E||eta B A x||^2 / m = alpha^2 / gamma^2
with rsLoRA, independent of m, n, r; Def. 3.1), "gd" 1 / eta (zeta = 1), "unit" 1,
"weight_svd" sqrt(sigma_1(W0)) (the adapter's factors then have the spectral norm scale of
W0; this toolkit's reading of the authors' option, whose exact rule differs between the
authors' code and PEFT, see paper_notes/lora_ga.md).

Reference: Wang, Yu, Li (2024), "LoRA-GA", arXiv 2407.05000, Sec. 3, Thm 3.1, Def. 3.1;
claims ``lora_ga.thm3.1``, ``lora_ga.eckart_young``, ``lora_ga.stable_output``,
``lora_ga.offset_exact``, ``toolkit.sign_invariance``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from .._validate import InvalidArgumentError, check_choice, check_finite, check_int, check_matrix, check_positive

__all__ = ["AlignmentReport", "LoraGAInit", "alignment_report", "first_step_update", "gradient_svd", "lora_ga_init", "split_indices", "stable_scale_report"]

Direction = Literal["ArB2r", "A2rBr", "ArBr", "random"]
Scale = Literal["stable", "gd", "unit", "weight_svd"]
DIRECTIONS = ("ArB2r", "A2rBr", "ArBr", "random")
_HALF = (torch.float16, torch.bfloat16)
SCALES = ("stable", "gd", "unit", "weight_svd")


@dataclass(frozen=True)
class LoraGAInit:
    """A LoRA-GA initialization: A (r, n), B (m, r), eta, zeta = eta^2 c^2, offset = eta B A (m, n).

    ``W0 - offset`` is the frozen weight to use so that the output at step 0 is unchanged.
    ``idx_A`` / ``idx_B`` are the 0-based singular indices A and B were built from; ``c`` the scale.
    """

    A: torch.Tensor
    B: torch.Tensor
    eta: float
    zeta: float
    c: float
    offset: torch.Tensor
    idx_A: tuple[int, ...]
    idx_B: tuple[int, ...]
    direction: str
    scale: str

    @property
    def r(self) -> int:
        return int(self.A.shape[0])


def split_indices(r: int, direction: Direction, *, seed: int | None = None) -> tuple[list[int], list[int]]:
    """(I_A, I_B), 0-based, disjoint, each of size r, union {0..2r-1}.

    ArB2r: A 0..r-1, B r..2r-1 (the paper's default). A2rBr: the reverse. ArBr: interleaved,
    A the odd and B the even positions (PEFT's choice). random: a seeded random split.
    """
    r = check_int("r", r, low=1)
    check_choice("direction", direction, DIRECTIONS)
    if direction == "ArB2r":
        return list(range(r)), list(range(r, 2 * r))
    if direction == "A2rBr":
        return list(range(r, 2 * r)), list(range(r))
    if direction == "ArBr":
        return list(range(1, 2 * r, 2)), list(range(0, 2 * r, 2))
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    perm = torch.randperm(2 * r, generator=gen).tolist()
    return sorted(perm[:r]), sorted(perm[r:])


def _check_G(G: object, r: int) -> torch.Tensor:
    G = check_matrix("G", G, (None, None))
    m, n = G.shape
    if 2 * r > min(m, n):
        raise InvalidArgumentError(f"r: expected 2r <= min(m, n) = {min(m, n)} for G of shape {(m, n)}, got r = {r}")
    check_finite("G", G)
    if not bool((G != 0).any()):
        raise InvalidArgumentError("G: expected a non-zero gradient, got all zeros (LoRA-GA has no direction to align with)")
    return G


def gradient_svd(G: torch.Tensor, k: int, *, svd: Literal["exact", "randomized"] = "exact", seed: int | None = None,
                 niter: int = 6, oversample: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-k singular triplets (U (m, k), S (k,), V (n, k)) of G, in G's dtype.

    "exact" uses torch.linalg.svd; "randomized" torch.svd_lowrank with q = min(k + oversample, m, n)
    (default oversample max(16, 2k), i.e. q = 3k for k = 2r >= 8) and ``niter`` power iterations,
    seeded (the global RNG is forked, not disturbed). The defaults are chosen for slowly decaying
    spectra: with sigma_i = exp(-i / 50) at m = n = 4096, r = 8, PEFT's q = 4r with 4 iterations
    leaves an alignment residual of 3e-2, these defaults 1e-4 (benchmarks/README.md).
    """
    check_choice("svd", svd, ("exact", "randomized"))
    if svd == "exact":
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        return U[:, :k], S[:k], Vh[:k].T
    q = min(k + (max(16, 2 * k) if oversample is None else oversample), *G.shape)
    devices = [G.device] if G.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if seed is None else seed)
        U, S, V = torch.svd_lowrank(G, q=q, niter=niter)
    return U[:, :k], S[:k], V[:, :k]


def lora_ga_init(
    G: torch.Tensor,
    r: int,
    *,
    alpha: float,
    direction: Direction = "ArB2r",
    scale: Scale = "stable",
    gamma: float = 16.0,
    rslora: bool = True,
    svd: Literal["exact", "randomized"] = "exact",
    seed: int | None = None,
    W0: torch.Tensor | None = None,
) -> LoraGAInit:
    """A = c V[:, I_A]^T, B = c U[:, I_B] from G = U S V^T; eta = alpha/sqrt(r) (rsLoRA) or alpha/r.

    Args:
        G: (m, n) full fine-tuning gradient dL/dW0 (float32 or float64, any device; float16 and
            bfloat16 are computed in float32, where the SVD exists, and A, B, offset are returned
            in G's dtype; a result that overflows that dtype raises InvalidArgumentError).
        r: rank, 2r <= min(m, n).
        alpha: LoRA alpha (> 0).
        direction: which singular vectors go to A and B (see :func:`split_indices`).
        scale: "stable" c = m^{1/4}/sqrt(gamma), "gd" c = 1/eta, "unit" c = 1, "weight_svd"
            c = sqrt(sigma_1(W0)) (needs ``W0``).
        gamma: the stable scale's gamma (> 0).
        rslora: eta = alpha / sqrt(r) if True (the authors require it), else alpha / r.
        svd: "exact" or "randomized" (torch.svd_lowrank, seeded).
        seed: seed of the randomized SVD and of the "random" direction.
        W0: (m, n) pretrained weight, for "weight_svd" (and shape checking when given).

    Returns:
        :class:`LoraGAInit` with A (r, n), B (m, r), eta, zeta = eta^2 c^2, c, offset = eta B A.

    Reference: Wang et al. (2024), Sec. 3.2-3.3, Thm 3.1; claim ``lora_ga.thm3.1``.
    """
    r = check_int("r", r, low=1)
    G = _check_G(G, r)
    out_dtype = G.dtype
    if out_dtype in _HALF:
        G = G.float()  # torch has no half-precision SVD (and its 3 significant digits would not resolve sigma_2r); cast back below
    alpha = check_positive("alpha", alpha)
    gamma = check_positive("gamma", gamma)
    check_choice("direction", direction, DIRECTIONS)
    check_choice("scale", scale, SCALES)
    m, n = G.shape
    if W0 is not None:
        check_matrix("W0", W0, (m, n))
    if scale == "weight_svd" and W0 is None:
        raise InvalidArgumentError("W0: expected the (m, n) pretrained weight for scale='weight_svd', got None")
    eta = alpha / (math.sqrt(r) if rslora else r)
    U, S, V = gradient_svd(G, 2 * r, svd=svd, seed=seed)
    idx_A, idx_B = split_indices(r, direction, seed=seed)
    if scale == "stable":
        c = m**0.25 / math.sqrt(gamma)
    elif scale == "gd":
        c = 1.0 / eta
    elif scale == "unit":
        c = 1.0
    else:
        c = math.sqrt(float(torch.linalg.matrix_norm(W0.to(G.dtype), ord=2)))
    A = c * V[:, idx_A].T.contiguous()  # (r, n)
    B = c * U[:, idx_B].contiguous()  # (m, r)
    offset = eta * (B @ A)  # (m, n)
    if out_dtype != G.dtype:
        A, B, offset = A.to(out_dtype), B.to(out_dtype), offset.to(out_dtype)
        bad = [name for name, t in (("A", A), ("B", B), ("offset", offset)) if not bool(torch.isfinite(t).all())]
        if bad:
            raise InvalidArgumentError(f"G: expected an initialization representable in {out_dtype}, got non-finite {bad} after the cast "
                                       f"(c = {c:.3g}, eta = {eta:.3g}); pass G in float32, or a smaller scale")
    return LoraGAInit(A, B, eta, eta * eta * c * c, c, offset, tuple(idx_A), tuple(idx_B), direction, scale)


def first_step_update(G: torch.Tensor, init: LoraGAInit, lr: float, *, exact: bool = False) -> torch.Tensor:
    """Change of eta B A after one SGD step of size lr with the gradient G held at its step-0 value.

    First order: -lr eta^2 (G A^T A + B B^T G). Exact (``exact=True``): with
    A' = A - lr eta B^T G and B' = B - lr eta G A^T, eta (B' A' - B A)
    = first order + lr^2 eta^3 G A^T B^T G.

    Reference: Wang et al. (2024), Sec. 3.2, eq. for Delta W; claim ``lora_ga.thm3.1``.
    """
    G = check_matrix("G", G, (init.B.shape[0], init.A.shape[1]))
    lr = check_positive("lr", lr)
    A, B, eta = init.A.to(G.dtype), init.B.to(G.dtype), init.eta
    if not exact:
        return -lr * eta**2 * (G @ A.T @ A + B @ B.T @ G)
    A1 = A - lr * eta * (B.T @ G)
    B1 = B - lr * eta * (G @ A.T)
    return eta * (B1 @ A1 - B @ A)


@dataclass(frozen=True)
class AlignmentReport:
    """How well eta^2 (G A^T A + B B^T G) matches the best rank-2r part of G.

    Attributes:
        rel_residual: ||D - s* G_2r||_F / ||D||_F with s* the best scalar (0: exactly aligned).
        multiple: s* = <D, G_2r> / ||G_2r||^2 (Thm 3.1 predicts zeta).
        cosine: <D, G> / (||D|| ||G||).
        captured: cosine^2, the fraction of ||G||^2 the best multiple of D captures.
        residual_to_G: ||G - t* D|| / ||G|| with the best t* (= sqrt(1 - cosine^2)).
        eckart_young: ||G - G_2r|| / ||G|| = sqrt(sum_{i > 2r} sigma_i^2) / ||G||, the optimum
            of residual_to_G over all updates of rank <= 2r.
        rank: 2r; spectral_gap: sigma_2r / sigma_{2r+1} (G_2r is unique iff > 1).
    """

    rel_residual: float
    multiple: float
    cosine: float
    captured: float
    residual_to_G: float
    eckart_young: float
    rank: int
    spectral_gap: float


def alignment_report(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor, eta: float) -> AlignmentReport:
    """Alignment of the first LoRA step with the rank-2r truncation of G (all in float64).

    Args:
        G: (m, n) gradient; A: (r, n); B: (m, r); eta: the LoRA multiplier.

    Reference: Wang et al. (2024), Thm 3.1 and its Eckart-Young remark; claims
    ``lora_ga.thm3.1``, ``lora_ga.eckart_young``.
    """
    G = check_matrix("G", G, (None, None)).detach().double()
    m, n = G.shape
    A = check_matrix("A", A, (None, n)).detach().double()
    r = A.shape[0]
    B = check_matrix("B", B, (m, r)).detach().double()
    eta = check_positive("eta", eta)
    if 2 * r > min(m, n):
        raise InvalidArgumentError(f"A: expected 2r <= min(m, n) = {min(m, n)}, got r = {r}")
    D = eta**2 * (G @ A.T @ A + B @ B.T @ G)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    k = 2 * r
    G2r = (U[:, :k] * S[:k]) @ Vh[:k]
    nD, nG, nG2 = float(D.norm()), float(G.norm()), float(G2r.norm())
    s_star = float((D * G2r).sum()) / nG2**2
    cos = float((D * G).sum()) / (nD * nG) if nD > 0 else 0.0
    gap = float(S[k - 1] / S[k]) if k < len(S) and S[k] > 0 else math.inf
    return AlignmentReport(
        rel_residual=float((D - s_star * G2r).norm()) / nD if nD > 0 else math.inf,
        multiple=s_star,
        cosine=cos,
        captured=cos * cos,
        # computed as ||G - t* D|| / ||G|| (t* = <D, G> / ||D||^2), not sqrt(1 - cos^2), which
        # loses half the digits when cos ~ 1 (2.6e-8 instead of 0 when G_2r = G)
        residual_to_G=float((G - (float((D * G).sum()) / nD**2) * D).norm()) / nG if nD > 0 else 1.0,
        eckart_young=float(S[k:].norm()) / nG,
        rank=k,
        spectral_gap=gap,
    )


def stable_scale_report(ms=(64, 256, 1024), ns=(64, 256, 1024), ranks=(2, 8, 32), *, alpha: float = 16.0, gamma: float = 16.0,
                        samples: int = 2048, seed: int = 0, rslora: bool = True, dtype: torch.dtype = torch.float64) -> pd.DataFrame:
    """Forward E||eta B A x||^2 / m and backward E||(eta B A)^T y||^2 / n of the stable init, vs prediction.

    Prediction (rsLoRA, c = m^{1/4}/sqrt(gamma)): forward eta^2 c^4 r / m = alpha^2 / gamma^2 and
    backward eta^2 c^4 r / n = (alpha^2 / gamma^2) (m / n). Exact for any orthonormal U_B, V_A
    in expectation over x ~ N(0, I_n), y ~ N(0, I_m); measured with ``samples`` draws.

    Returns:
        DataFrame: m, n, r, forward, forward_pred, backward, backward_pred, samples.

    Reference: Wang et al. (2024), Def. 3.1 and Sec. 3.3; claim ``lora_ga.stable_output``.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for m in ms:
        for n in ns:
            for r in ranks:
                if 2 * r > min(m, n):
                    continue
                G = torch.randn(m, n, generator=gen, dtype=dtype)
                init = lora_ga_init(G, r, alpha=alpha, gamma=gamma, rslora=rslora)
                M = init.eta * (init.B @ init.A)  # (m, n)
                x = torch.randn(samples, n, generator=gen, dtype=dtype)
                y = torch.randn(samples, m, generator=gen, dtype=dtype)
                fwd = float((x @ M.T).pow(2).sum(1).mean()) / m
                bwd = float((y @ M).pow(2).sum(1).mean()) / n
                pred = init.eta**2 * init.c**4 * r
                rows.append({"m": m, "n": n, "r": r, "forward": fwd, "forward_pred": pred / m, "backward": bwd, "backward_pred": pred / n, "samples": samples})
    return pd.DataFrame(rows)
