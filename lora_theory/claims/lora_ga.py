"""Claims of Wang et al. (2024), "LoRA-GA" (arXiv 2407.05000): ``lora_ga.*``.

Checks reach the code under test through its module (``ga_init.lora_ga_init``, ``ga_model.apply_lora_ga``)
so that the negative controls below can corrupt it; their references (the rank-2r truncation of G,
the paper's closed forms for zeta and the stable second moment) are computed here, from the paper.
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import torch
from torch import nn

from ..lora.layer import add_lora
from ..lora_ga import init as ga_init
from ..lora_ga import model as ga_model
from ..lora_ga.init import DIRECTIONS, SCALES
from ..tolerances import tolerance
from . import Margin, Measurement, claim, control, patch

__all__ = ["instances", "spectrum_matrix"]


def spectrum_matrix(m: int, n: int, sigmas: torch.Tensor, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """U diag(sigmas) V^T with Haar-random orthonormal U (m, k), V (n, k), k = len(sigmas)."""
    gen = torch.Generator().manual_seed(seed)
    k = len(sigmas)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return ((U * sigmas.double()) @ V.T).to(dtype)


def instances(quick: bool):
    """Gradients G (m, n) with a fast-decaying and a flat-ish spectrum (distinct singular values), tall, wide and square."""
    shapes = ((48, 32), (32, 48), (40, 40)) if quick else ((96, 64), (64, 96), (80, 80), (200, 40))
    for i, (m, n) in enumerate(shapes):
        k = min(m, n)
        decay = torch.exp(-torch.arange(k, dtype=torch.float64) / 6)  # fast-decaying spectrum, distinct values
        yield spectrum_matrix(m, n, decay, seed=i)
        yield spectrum_matrix(m, n, 1.0 + torch.linspace(1, 0, k, dtype=torch.float64), seed=i + 100)  # flat-ish


def _truncation(G: torch.Tensor, k: int) -> torch.Tensor:
    """G_k, the best rank-k approximation (Eckart-Young), by torch.linalg.svd: the reference."""
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def _paper_c(scale: str, m: int, eta: float, gamma: float, W0: torch.Tensor | None) -> float:
    """The scale c of Sec. 3.3 written from the paper (weight_svd: this toolkit's reading, sqrt(sigma_1(W0)))."""
    return {"stable": lambda: m**0.25 / math.sqrt(gamma), "gd": lambda: 1.0 / eta, "unit": lambda: 1.0,
            "weight_svd": lambda: math.sqrt(float(torch.linalg.matrix_norm(W0, ord=2)))}[scale]()


def _wrap(module: str, name: str, make):
    import importlib

    return patch(module, name, make(getattr(importlib.import_module(module), name)))


@claim(
    "lora_ga.thm3.1",
    statement="With A = c V_{I_A}^T, B = c U_{I_B} (disjoint I_A, I_B, |I_A| = |I_B| = r, union {1..2r}), the first SGD step of LoRA equals -lr zeta G_2r with zeta = eta^2 c^2: eta^2 (G A^T A + B B^T G) = zeta G_2r.",
    reference="Wang et al. 2024, Thm 3.1",
    test="tests/lora_ga/test_init.py::test_theorem_identity",
    proof="proofs_checks/lora_ga.py::check_projection_identity",
)
def _thm31(quick: bool) -> Measurement:
    worst = 0.0
    n_cfg = 0
    r, alpha, gamma = 4, 8.0, 16.0
    for G in instances(quick):
        m, _ = G.shape
        W0 = torch.randn(G.shape, generator=torch.Generator().manual_seed(1), dtype=G.dtype)
        G2r = _truncation(G, 2 * r)
        eta = alpha / math.sqrt(r)  # rsLoRA
        for direction, scale in itertools.product(DIRECTIONS, SCALES):
            init = ga_init.lora_ga_init(G, r, alpha=alpha, direction=direction, scale=scale, gamma=gamma, W0=W0, seed=3)
            D = eta**2 * (G @ init.A.T @ init.A + init.B @ init.B.T @ G)  # the first step, from the factors
            zeta = eta**2 * _paper_c(scale, m, eta, gamma, W0) ** 2  # Thm 3.1's multiple, from the paper
            worst = max(worst, float((D - zeta * G2r).norm() / (zeta * G2r).norm()))
            n_cfg += 1
    tol = 1e-12  # float64 SVD and products on matrices of size <= 200: a few hundred ulps
    return Measurement(worst <= tol, {"max_rel_residual": worst, "configs": n_cfg},
                       f"{n_cfg} (shape, spectrum, direction, scale): ||eta^2 (G A^T A + B B^T G) - zeta G_2r|| / ||zeta G_2r|| <= {worst:.1e} "
                       f"(zeta = eta^2 c^2 from the paper)", {"first_step_vs_zeta_G2r": Margin(worst, tol)})


@control("lora_ga.thm3.1", "overlapping_split", "I_A = I_B (PEFT's 'random' direction): the union is not {1..2r}")
def _():
    def make(orig):
        def wrong(r, direction, *, seed=None):
            iA, _ = orig(r, direction, seed=seed)
            return iA, list(iA)
        return wrong
    return _wrap("lora_theory.lora_ga.init", "split_indices", make)


@control("lora_ga.thm3.1", "singular_values_in_B", "B = c U_{I_B} diag(S_{I_B}) (PEFT's choice): the B-half is weighted by sigma^3")
def _():
    def make(orig):
        def wrong(G, r, **kw):
            init = orig(G, r, **kw)
            _, S, _ = ga_init.gradient_svd(G, 2 * r)
            B = init.B * S[list(init.idx_B)]
            return dataclasses.replace(init, B=B, offset=init.eta * (B @ init.A))
        return wrong
    return _wrap("lora_theory.lora_ga.init", "lora_ga_init", make)


@claim(
    "lora_ga.eckart_young",
    statement="The LoRA-GA first step is optimal among updates of rank <= 2r: its residual to G after the best scaling equals the Eckart-Young optimum (sum_{i>2r} sigma_i^2)^{1/2} / ||G||, and random rank-2r initializations do worse.",
    reference="Wang et al. 2024, Thm 3.1 (with Eckart-Young-Mirsky)",
    test="tests/lora_ga/test_init.py::test_optimal_against_random_alternatives",
)
def _eckart_young(quick: bool) -> Measurement:
    worst_gap, worst_random_margin = 0.0, math.inf
    gen = torch.Generator().manual_seed(7)
    r = 4

    def residual(G, A, B, eta):  # ||G - t* D|| / ||G|| with the best scalar t*
        D = eta**2 * (G @ A.T @ A + B @ B.T @ G)
        t = float((D * G).sum()) / float((D * D).sum())
        return float((G - t * D).norm() / G.norm())

    for G in instances(quick):
        m, n = G.shape
        S = torch.linalg.svdvals(G)
        optimum = float(S[2 * r:].norm() / S.norm())  # Eckart-Young-Mirsky, from the singular values
        init = ga_init.lora_ga_init(G, r, alpha=8.0)
        worst_gap = max(worst_gap, residual(G, init.A, init.B, init.eta) - optimum)
        for _ in range(5 if quick else 20):  # random rank-2r alternatives: random A (r, n), B (m, r)
            A = torch.randn(r, n, generator=gen, dtype=G.dtype)
            B = torch.randn(m, r, generator=gen, dtype=G.dtype)
            worst_random_margin = min(worst_random_margin, residual(G, A, B, 1.0) - optimum)
    ok = worst_gap <= 1e-12 and worst_random_margin > 0
    return Measurement(ok, {"max_gap_to_optimum": worst_gap, "min_random_margin": worst_random_margin},
                       f"LoRA-GA residual - Eckart-Young optimum <= {worst_gap:.1e}; random rank-2r inits are worse by >= {worst_random_margin:.2e}",
                       {"gap_to_optimum": Margin(worst_gap, 1e-12), "random_inits_worse_by": Margin(worst_random_margin, 0.0, ">=")})


@control("lora_ga.eckart_young", "B_from_wrong_range", "B from singular vectors 2r+1..3r instead of r+1..2r (a wrong index range)")
def _():
    def make(orig):
        def wrong(G, r, **kw):
            init = orig(G, r, **kw)
            U, _, _ = ga_init.gradient_svd(G, 3 * r)
            B = init.c * U[:, 2 * r:3 * r]
            return dataclasses.replace(init, B=B, offset=init.eta * (B @ init.A), idx_B=tuple(range(2 * r, 3 * r)))
        return wrong
    return _wrap("lora_theory.lora_ga.init", "lora_ga_init", make)


@claim(
    "lora_ga.stable_output",
    statement="With the stable scale c = m^{1/4}/sqrt(gamma) and rsLoRA eta = alpha/sqrt(r), E||eta B A x||^2 / m = alpha^2/gamma^2 for x ~ N(0, I_n), independent of m, n and r (the backward analogue carries m/n).",
    reference="Wang et al. 2024, Def. 3.1, Sec. 3.3",
    figure=None,
    test="tests/lora_ga/test_init.py::test_stable_scale_moments",
)
def _stable(quick: bool) -> Measurement:
    alpha, gamma = 16.0, 16.0
    df = ga_init.stable_scale_report(ms=(64, 256) if quick else (64, 256, 1024), ns=(64, 256) if quick else (64, 256, 1024),
                                     ranks=(2, 8) if quick else (2, 8, 32), alpha=alpha, gamma=gamma, samples=4096, seed=0)
    pred = alpha**2 / gamma**2  # the paper's closed form, not the report's own prediction
    fwd = float((df.forward / pred - 1).abs().max())
    bwd = float((df.backward / (pred * df.m / df.n) - 1).abs().max())
    # Monte Carlo: the mean of 4096 draws of a sum of r scaled chi-square terms; 5 standard errors of
    # the worst case (r = 2: relative sd sqrt(2 / (r * samples)) ~ 1.6%) is about 8%.
    tol = 5 * math.sqrt(2 / (2 * 4096))
    return Measurement(bool(fwd <= tol and bwd <= tol), {"max_rel_dev_forward": fwd, "max_rel_dev_backward": bwd, "tolerance": tol, "configs": len(df)},
                       f"{len(df)} (m, n, r): forward moment within {fwd:.1%} of alpha^2/gamma^2, backward within {bwd:.1%} of (alpha^2/gamma^2) m/n (5 s.e. = {tol:.1%})",
                       {"forward_vs_alpha2_over_gamma2": Margin(fwd, tol), "backward_vs_m_over_n": Margin(bwd, tol)})


def _rescaled_stable(factor):
    def make(orig):
        def wrong(G, r, **kw):
            init = orig(G, r, **kw)
            if kw.get("scale", "stable") != "stable":
                return init
            f = factor(G.shape[0], r)
            A, B = init.A * f, init.B * f
            return dataclasses.replace(init, A=A, B=B, c=init.c * f, zeta=init.zeta * f * f, offset=init.eta * (B @ A))
        return wrong
    return _wrap("lora_theory.lora_ga.init", "lora_ga_init", make)


control("lora_ga.stable_output", "c_sqrt_m", "stable c = m^{1/2}/sqrt(gamma): the exponent of m shifted by 1/4")(lambda: _rescaled_stable(lambda m, r: m**0.25))
control("lora_ga.stable_output", "eta_alpha_over_r", "rsLoRA ignored: the factors scaled as if eta = alpha/r")(lambda: _rescaled_stable(lambda m, r: r**-0.25))


@claim(
    "lora_ga.offset_exact",
    statement="W_res + eta B A = W0 for every direction, scale and dtype, so the model's output at step 0 is unchanged.",
    reference="Wang et al. 2024, Sec. 3.3 (weight offset)",
    test="tests/lora_ga/test_model.py::test_output_unchanged_at_step0",
)
def _offset(quick: bool) -> Measurement:
    worst = {}
    for dtype in (torch.float64, torch.float32):
        gen = torch.Generator().manual_seed(0)
        for direction, scale in itertools.product(DIRECTIONS, SCALES):
            model = nn.Sequential(nn.Linear(24, 32), nn.Tanh(), nn.Linear(32, 20)).to(dtype)
            x = torch.randn(16, 24, generator=gen, dtype=dtype)
            with torch.no_grad():
                y0 = model(x)
            add_lora(model, ["0", "2"], r=4, alpha=8.0, rslora=True, init="none")
            grads = {"0": torch.randn(32, 24, generator=gen, dtype=torch.float64), "2": torch.randn(20, 32, generator=gen, dtype=torch.float64)}
            ga_model.apply_lora_ga(model, grads, direction=direction, scale=scale)
            with torch.no_grad():
                y1 = model(x)
            key = str(dtype).removeprefix("torch.")
            worst[key] = max(worst.get(key, 0.0), float((y1 - y0).abs().max() / y0.abs().max()))
    tol32 = tolerance(torch.float32)
    ok = worst["float64"] <= 1e-13 and worst["float32"] <= tol32
    return Measurement(ok, {"max_rel_output_change": worst}, f"max relative output change at step 0: float64 {worst['float64']:.1e}, float32 {worst['float32']:.1e}",
                       {"output_change_float64": Margin(worst["float64"], 1e-13), "output_change_float32": Margin(worst["float32"], tol32)})


@control("lora_ga.offset_exact", "offset_eta_alpha_over_r", "the offset W0 - eta B A computed with eta = alpha/r while the layer uses rsLoRA's alpha/sqrt(r)")
def _():
    def make(orig):
        def wrong(model, adapter=None, **kw):
            return [dataclasses.replace(h, scaling=h.scaling / math.sqrt(h.r)) for h in orig(model, adapter, **kw)]
        return wrong
    return _wrap("lora_theory.lora_ga.model", "find_lora_layers", make)


