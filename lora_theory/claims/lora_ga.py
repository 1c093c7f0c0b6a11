"""Claims of Wang et al. (2024), "LoRA-GA" (arXiv 2407.05000): ``lora_ga.*``."""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ..finetune.tasks import teacher_student_task
from ..lora.layer import add_lora
from ..lora.pretrained import embed, load_minilm, token_batches
from ..lora_ga.audit import audit_lora_ga
from ..lora_ga.init import (
    DIRECTIONS,
    SCALES,
    LoraGAInit,
    alignment_report,
    first_step_update,
    gradient_svd,
    lora_ga_init,
    split_indices,
    stable_scale_report,
)
from ..lora_ga.model import apply_lora_ga
from ..tolerances import tolerance
from . import Measurement, claim


def spectrum_matrix(m: int, n: int, sigmas: torch.Tensor, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """U diag(sigmas) V^T with Haar-random orthonormal U (m, k), V (n, k), k = len(sigmas)."""
    gen = torch.Generator().manual_seed(seed)
    k = len(sigmas)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return ((U * sigmas.double()) @ V.T).to(dtype)


def _instances(quick: bool):
    shapes = ((48, 32), (32, 48), (40, 40)) if quick else ((96, 64), (64, 96), (80, 80), (200, 40))
    for i, (m, n) in enumerate(shapes):
        k = min(m, n)
        decay = torch.exp(-torch.arange(k, dtype=torch.float64) / 6)  # fast-decaying spectrum, distinct values
        yield spectrum_matrix(m, n, decay, seed=i)
        yield spectrum_matrix(m, n, 1.0 + torch.linspace(1, 0, k, dtype=torch.float64), seed=i + 100)  # flat-ish


@claim(
    "lora_ga.thm3.1",
    statement="With A = c V_{I_A}^T, B = c U_{I_B} (disjoint I_A, I_B, |I_A| = |I_B| = r, union {1..2r}), the first SGD step of LoRA equals -lr zeta G_2r with zeta = eta^2 c^2: eta^2 (G A^T A + B B^T G) = zeta G_2r.",
    reference="Wang et al. 2024, Thm 3.1",
    test="tests/lora_ga/test_init.py::test_theorem_identity",
    proof="proofs_checks/lora_ga.py::check_projection_identity",
)
def _thm31(quick: bool) -> Measurement:
    worst_res, worst_mult = 0.0, 0.0
    n_cfg = 0
    for G in _instances(quick):
        W0 = torch.randn(G.shape, generator=torch.Generator().manual_seed(1), dtype=G.dtype)
        for direction, scale in itertools.product(DIRECTIONS, SCALES):
            init = lora_ga_init(G, 4, alpha=8.0, direction=direction, scale=scale, W0=W0, seed=3)
            rep = alignment_report(G, init.A, init.B, init.eta)
            worst_res = max(worst_res, rep.rel_residual)
            worst_mult = max(worst_mult, abs(rep.multiple / init.zeta - 1))
            n_cfg += 1
    tol = 1e-12  # float64 SVD and products on matrices of size <= 200: a few hundred ulps
    return Measurement(worst_res <= tol and worst_mult <= tol, {"max_rel_residual": worst_res, "max_multiple_error": worst_mult, "configs": n_cfg},
                       f"{n_cfg} (shape, spectrum, direction, scale): residual to zeta G_2r <= {worst_res:.1e}, |s*/zeta - 1| <= {worst_mult:.1e}")


@claim(
    "lora_ga.eckart_young",
    statement="The LoRA-GA first step is optimal among updates of rank <= 2r: its residual to G after the best scaling equals the Eckart-Young optimum (sum_{i>2r} sigma_i^2)^{1/2} / ||G||, and random rank-2r initializations do worse.",
    reference="Wang et al. 2024, Thm 3.1 (with Eckart-Young-Mirsky)",
    test="tests/lora_ga/test_init.py::test_optimal_against_random_alternatives",
)
def _eckart_young(quick: bool) -> Measurement:
    worst_gap, worst_random_margin = 0.0, math.inf
    gen = torch.Generator().manual_seed(7)
    for G in _instances(quick):
        m, n = G.shape
        init = lora_ga_init(G, 4, alpha=8.0)
        rep = alignment_report(G, init.A, init.B, init.eta)
        worst_gap = max(worst_gap, rep.residual_to_G - rep.eckart_young)
        for _ in range(5 if quick else 20):  # random rank-2r alternatives: random A (r, n), B (m, r)
            A = torch.randn(4, n, generator=gen, dtype=G.dtype)
            B = torch.randn(m, 4, generator=gen, dtype=G.dtype)
            alt = alignment_report(G, A, B, 1.0)
            worst_random_margin = min(worst_random_margin, alt.residual_to_G - rep.eckart_young)
    ok = worst_gap <= 1e-12 and worst_random_margin > 0
    return Measurement(ok, {"max_gap_to_optimum": worst_gap, "min_random_margin": worst_random_margin},
                       f"LoRA-GA residual - Eckart-Young optimum <= {worst_gap:.1e}; random rank-2r inits are worse by >= {worst_random_margin:.2e}")


@claim(
    "lora_ga.stable_output",
    statement="With the stable scale c = m^{1/4}/sqrt(gamma) and rsLoRA eta = alpha/sqrt(r), E||eta B A x||^2 / m = alpha^2/gamma^2 for x ~ N(0, I_n), independent of m, n and r (the backward analogue carries m/n).",
    reference="Wang et al. 2024, Def. 3.1, Sec. 3.3",
    figure=None,
    test="tests/lora_ga/test_init.py::test_stable_scale_moments",
)
def _stable(quick: bool) -> Measurement:

    df = stable_scale_report(ms=(64, 256) if quick else (64, 256, 1024), ns=(64, 256) if quick else (64, 256, 1024), ranks=(2, 8) if quick else (2, 8, 32),
                             samples=4096, seed=0)
    fwd = (df.forward / df.forward_pred - 1).abs().max()
    bwd = (df.backward / df.backward_pred - 1).abs().max()
    # Monte Carlo: the mean of 4096 draws of a sum of r scaled chi-square terms; 5 standard errors of
    # the worst case (r = 2: relative sd sqrt(2 / (r * samples)) ~ 1.6%) is about 8%.
    tol = 5 * math.sqrt(2 / (2 * 4096))
    return Measurement(bool(fwd <= tol and bwd <= tol), {"max_rel_dev_forward": float(fwd), "max_rel_dev_backward": float(bwd), "tolerance": tol, "configs": len(df)},
                       f"{len(df)} (m, n, r): forward moment within {fwd:.1%} of alpha^2/gamma^2, backward within {bwd:.1%} of (alpha^2/gamma^2) m/n (5 s.e. = {tol:.1%})")


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
            apply_lora_ga(model, grads, direction=direction, scale=scale)
            with torch.no_grad():
                y1 = model(x)
            key = str(dtype).removeprefix("torch.")
            worst[key] = max(worst.get(key, 0.0), float((y1 - y0).abs().max() / y0.abs().max()))
    ok = worst["float64"] <= 1e-13 and worst["float32"] <= tolerance(torch.float32)
    return Measurement(ok, {"max_rel_output_change": worst}, f"max relative output change at step 0: float64 {worst['float64']:.1e}, float32 {worst['float32']:.1e}")


@claim(
    "lora_ga.sign_invariance",
    statement="Flipping the sign of any singular-vector pair (u_i, v_i) leaves the first-step update unchanged.",
    reference="Wang et al. 2024, Sec. 3 (the SVD is unique up to such signs)",
    test="tests/lora_ga/test_init.py::test_sign_invariance",
    proof="proofs_checks/lora_ga.py::check_sign_invariance",
)
def _signs(quick: bool) -> Measurement:

    worst = 0.0
    gen = torch.Generator().manual_seed(11)
    for G in _instances(quick):
        r = 4
        init = lora_ga_init(G, r, alpha=8.0)
        U, S, V = gradient_svd(G, 2 * r)
        flips = torch.where(torch.rand(2 * r, generator=gen) < 0.5, -1.0, 1.0).to(G.dtype)
        U2, V2 = U * flips, V * flips
        iA, iB = split_indices(r, "ArB2r")
        A2, B2 = init.c * V2[:, iA].T, init.c * U2[:, iB]
        flipped = LoraGAInit(A2, B2, init.eta, init.zeta, init.c, init.eta * B2 @ A2, init.idx_A, init.idx_B, "ArB2r", "stable")
        d1 = first_step_update(G, init, 1.0)
        d2 = first_step_update(G, flipped, 1.0)
        worst = max(worst, float((d1 - d2).norm() / d1.norm()))
    return Measurement(worst <= 1e-13, {"max_rel_diff": worst}, f"first-step update with random sign flips vs without: {worst:.1e}")


@claim(
    "lora_ga.audit_peft",
    statement="PEFT's init_lora_weights='lora_ga' (default ArB2r, stable) realizes Thm 3.1 on a real model: the first step is a multiple zeta of G_2r and the stable scale gives E||eta B A x||^2 / m = alpha^2/gamma^2.",
    reference="Wang et al. 2024, Thm 3.1, Def. 3.1; PEFT 0.21 tuners/lora/layer.py lora_ga_init",
    test="tests/lora_ga/test_audit.py::test_peft_audit_runs",
)
def _audit_peft(quick: bool) -> Measurement:

    model = load_minilm()
    task = teacher_student_task(model)
    batches = token_batches(2, 4, 16)
    df = audit_lora_ga("peft", model, batches, task.loss, embed, ["query", "value"], directions=("ArB2r",), scales=("stable",))
    res = float(df.rel_residual.median())
    mom = float(df.fwd_moment.median())
    ok = res <= 1e-3 and abs(mom - 1.0) <= 0.1
    return Measurement(ok, {"median_rel_residual": res, "median_fwd_moment": mom, "fwd_pred": 1.0, "layers": len(df)},
                       f"PEFT ArB2r/stable on MiniLM q,v (12 layers): median residual to zeta G_2r {res:.2f}, forward moment {mom:.2e} (paper: 1.0)")
