"""Claims of Hu et al. (2024), "Computational Limits of LoRA" (arXiv 2406.03136): ``limits.*``.

Each check measures on generated instances (float64 unless stated) and returns the figures
it measured; the tolerances come from :data:`lora_theory.tolerances.TOLERANCES`.
"""
from __future__ import annotations

import itertools
import math
import statistics
import time

import numpy as np
import torch

from .._memory import peak_memory_bytes
from .._threads import torch_threads
from ..limits import exact
from ..limits.approx import ApproximationError, approx_gradients
from ..limits.exact import autograd_gradients, dense_terms, exact_gradients
from ..limits.features import polynomial_features
from ..limits.instance import hard_instance, make_instance, norm_bounds
from ..limits.norm_sweeps import degree_sweep, fit_degree_constant, gradient_error_sweep
from ..limits.polynomial import degree_bound
from ..limits.random_features import random_feature_gradients
from ..tolerances import max_rel_error, tolerance
from . import Measurement, claim, control, patch

_CONFIGS = tuple(itertools.product(("qv", "qkv"), ("self", "cross"), (1.0, 0.6)))


def _configs(quick: bool):
    for i, (adapt, attention, beta) in enumerate(_CONFIGS):
        for seed in range(1 if quick else 3):
            # alpha = 3 (alpha / r = 1.5) in every other configuration: with alpha / r = 1 a wrong power of
            # the LoRA multiplier would go unseen (negative control limits.lemma3.2/scale_squared)
            yield make_instance(24 if quick else 64, 6, 2, alpha=3.0 if i % 2 else None, adapt=adapt, attention=attention, beta=beta,
                                bound=(1.0, 3.0)[seed % 2] if seed else None, seed=seed + 10 * i)


@claim(
    "limits.lemma3.1",
    statement="dL/dS = p = f o q - diag(rho) f with f = softmax(S), c = f V - Y, q = c V^T, rho = rowsum(f o q) = rowsum(c o O).",
    reference="Hu et al. 2024, Lemma 3.1 (Parts I-III)",
    test="tests/limits/test_exact.py::test_lemma31_score_gradient",
    proof="proofs_checks/limits_lemma31.py::check_lemma31_score_gradient",
)
def _lemma31(quick: bool) -> Measurement:
    worst, worst_rho = 0.0, 0.0
    for inst in _configs(quick):
        t = dense_terms(inst)
        S = t["S"].detach().clone().requires_grad_(True)
        _, _, V = inst.projections()
        value = 0.5 * ((torch.softmax(S, dim=1) @ V - inst.Y) ** 2).sum()
        (dS,) = torch.autograd.grad(value, S)
        worst = max(worst, max_rel_error(t["p"], dS))
        worst_rho = max(worst_rho, max_rel_error(t["rho"], (t["c"] * t["O"]).sum(1)))
    tol = tolerance(torch.float64)
    return Measurement(worst <= tol and worst_rho <= tol, {"max_rel_err_p": worst, "max_rel_err_rho": worst_rho, "rtol": tol},
                       f"p vs autograd dL/dS: {worst:.1e}; rho two ways: {worst_rho:.1e} (rtol {tol:.0e})")


@claim(
    "limits.lemma3.2",
    statement="dL/dB_mu = (alpha/r) G_mu A_mu^T and dL/dA_mu = (alpha/r) B_mu^T G_mu with G_mu = dL/dW_mu.",
    reference="Hu et al. 2024, Lemma 3.2 (chain rule through W = W* + alpha/r B A)",
    test="tests/limits/test_exact.py::test_lora_chain_matches_autograd",
    proof="proofs_checks/limits_lemma31.py::check_lemma32_chain",
)
def _lemma32(quick: bool) -> Measurement:
    worst = 0.0
    for inst in _configs(quick):
        W = {mu: inst.weight(mu).detach().clone().requires_grad_(True) for mu in ("q", "k", "v")}
        Q, K, V = inst.Xq @ W["q"], inst.Xk @ W["k"], inst.Xv @ W["v"]
        value = 0.5 * ((torch.softmax(inst.beta * Q @ K.T, dim=1) @ V - inst.Y) ** 2).sum()
        G = dict(zip(W, torch.autograd.grad(value, list(W.values())), strict=True))
        chained = exact.lora_chain(inst, G)  # through the module, so that a control can corrupt it
        ref = autograd_gradients(inst, method="dense")
        worst = max(worst, *(max_rel_error(chained[k], ref[k]) for k in ref))
    tol = tolerance(torch.float64)
    return Measurement(worst <= tol, {"max_rel_err": worst, "rtol": tol}, f"chain rule vs autograd on A, B: {worst:.1e} (rtol {tol:.0e})")


def _chain_with_scale(power: float):
    def wrong(inst, G):
        s = inst.scale**power
        out = {}
        for mu in inst.adapt:
            out[f"A_{mu}"] = s * (inst.B[mu].T @ G[mu])
            out[f"B_{mu}"] = s * (G[mu] @ inst.A[mu].T)
        return out

    return wrong


@control("limits.lemma3.2", "scale_squared", "the chain rule with (alpha/r)^2 instead of alpha/r")
def _():
    return patch("lora_theory.limits.exact", "lora_chain", _chain_with_scale(2.0))


@claim(
    "limits.grad_closed_form",
    statement="The closed form (f, c, q, p; G_Q = beta X_Q^T p K, G_K = beta X_K^T p^T Q, G_V = X_V^T f^T c) equals autograd for all six gradients, partial and full adaptation, self and cross attention, beta != 1, including score ranges of 1e3.",
    reference="Hu et al. 2024, Lemma 3.1-3.2, Sec. 3 (with the printed dimension slips corrected; see paper_notes)",
    figure="limits_grad_closed_form",
    test="tests/limits/test_exact.py::test_exact_equals_autograd",
    proof="proofs_checks/limits_lemma31.py::check_full_gradient",
)
def _closed_form(quick: bool) -> Measurement:
    worst, worst_big, Rmax = 0.0, 0.0, 0.0
    for inst in _configs(quick):
        g, ref = exact_gradients(inst, block_size=7), autograd_gradients(inst)
        worst = max(worst, *(max_rel_error(g[k], ref[k]) for k in ref))
    for adapt in ("qv", "qkv"):  # scores of order 1e3: the log-sum-exp shift must keep this finite and exact
        inst = make_instance(48, 8, 2, adapt=adapt, bound=30.0, seed=5)
        Rmax = max(Rmax, norm_bounds(inst)["R"])
        g, ref = exact_gradients(inst, block_size=5), autograd_gradients(inst, method="dense")
        finite = all(bool(torch.isfinite(v).all()) for v in g.values())
        worst_big = max(worst_big, *(max_rel_error(g[k], ref[k]) for k in ref)) if finite else float("inf")
    tol = tolerance(torch.float64)
    return Measurement(max(worst, worst_big) <= tol, {"max_rel_err": worst, "max_rel_err_large_R": worst_big, "R_large": Rmax, "rtol": tol},
                       f"vs autograd: {worst:.1e}; at R = {Rmax:.0f}: {worst_big:.1e} (rtol {tol:.0e})")


@claim(
    "limits.grad_blocked",
    statement="Row-blocked evaluation with a log-sum-exp shift gives the same gradients as one dense block, with peak memory O(block L + L d) instead of O(L^2).",
    reference="Hu et al. 2024, Sec. 3 (exact cost Theta(L^2 d)); streaming softmax as in FlashAttention",
    figure="limits_grad_closed_form",
    test="tests/limits/test_exact.py::test_blocked_equals_unblocked",
)
def _blocked(quick: bool) -> Measurement:

    worst = 0.0
    for inst in _configs(quick):
        dense = exact_gradients(inst, block_size=inst.L)
        for b in (1, 5, 16):
            g = exact_gradients(inst, block_size=b)
            worst = max(worst, *(max_rel_error(g[k], dense[k]) for k in dense))
    L = 1 << (14 if quick else 15)
    mem = peak_memory_bytes(
        f"from lora_theory import make_instance, exact_gradients\ninst = make_instance({L}, 8, 2, dtype=torch.float32, seed=0)",
        "g = exact_gradients(inst)",
    )
    dense_bytes = L * L * 4  # one L x L float32 matrix, the least a dense evaluation needs
    tol = tolerance(torch.float64)
    ok = worst <= tol and mem["peak_bytes"] < dense_bytes
    return Measurement(ok, {"max_rel_err": worst, "L": L, "peak_bytes": mem["peak_bytes"], "one_LxL_bytes": dense_bytes, "seconds": mem["seconds"]},
                       f"blocked vs dense: {worst:.1e}; peak {mem['peak_bytes'] / 2**20:.0f} MiB at L = {L} (one L x L float32: {dense_bytes / 2**20:.0f} MiB)")


# -- the polynomial method and the phase transition (Thm 3.1, A.1, 4.1) -------------------------

def _loglog_slope(Ls, ts) -> float:

    return float(np.polyfit(np.log(Ls), np.log(ts), 1)[0])


def _bounded_regime(adapt: str, quick: bool) -> tuple[bool, dict, str]:
    """Accuracy within the computed bound, and the time exponent, for R <= 2, d = 4, eps = 1e-3."""


    worst_ratio, worst_rel, Rmax = 0.0, 0.0, 0.0
    for seed, attention in enumerate(("self", "cross")):
        inst = make_instance(1024 if quick else 4096, 4, 2, adapt=adapt, attention=attention, bound=2.0, beta=0.25, seed=seed)
        ex = exact_gradients(inst)
        g, info = approx_gradients(inst, eps=1e-3)
        Rmax = max(Rmax, info.R)
        for k in ex:
            err = float((g[k] - ex[k]).abs().max())
            worst_ratio = max(worst_ratio, err / info.error_bound[k])
            worst_rel = max(worst_rel, err / float(ex[k].abs().max()))
    # the benchmark target's range (issue: "fitted time exponent over L = 2^11 .. 2^16 <= 1.15"); over
    # 2^14..2^17 the single-thread CPU-time exponent is ~1.15 (the (L, k) features leave the cache)
    Ls = [2**j for j in range(11, 17)]
    # CPU seconds of this process on one thread (time.process_time), not wall time: the exponent is a
    # property of the algorithm and must not change when other work shares the cores (a parallel
    # reproduce measured a wall-time exponent of 1.24 for the same code that measures ~1.0 alone).
    ts = []
    with torch_threads(1):
        for L in Ls:
            inst = make_instance(L, 4, 2, adapt=adapt, bound=2.0, beta=0.25, seed=0)
            approx_gradients(inst, eps=1e-3)
            best = float("inf")
            for _ in range(3):
                t0 = time.process_time()
                approx_gradients(inst, eps=1e-3)
                best = min(best, time.process_time() - t0)
            ts.append(best)
    slope = _loglog_slope(Ls, ts)
    ok = worst_ratio <= 1.0 and worst_rel <= 1e-2 and slope <= 1.15
    figs = {"R_max": Rmax, "max_err_over_bound": worst_ratio, "max_rel_err": worst_rel, "time_exponent": slope, "Ls": Ls, "cpu_seconds": ts}
    return ok, figs, f"R <= {Rmax:.2f}: rel err {worst_rel:.1e} (<= 1e-2), err/bound {worst_ratio:.1e} (<= 1); CPU-time exponent {slope:.2f} over L = 2^{Ls[0].bit_length() - 1}..2^{Ls[-1].bit_length() - 1} (<= 1.15)"


@claim(
    "limits.thm3.1",
    statement="Partial adaptation (W_Q, W_V): when ||X_Q W_Q||_max, ||X_K W_K*||_max <= Gamma = o(sqrt(log L)) the LoRA gradient is approximable to eps in L^{1+o(1)} time. Measured: at R <= 2, d = 4, eps = 1e-3 the polynomial method's error is within its computed bound and <= 1e-2 relative, and its wall time grows like L^{<= 1.15}.",
    reference="Hu et al. 2024, Thm 3.1; Alman & Song 2023/2024 (polynomial method, gradient chain)",
    figure="runtime_scaling",
    test="tests/limits/test_approx.py::test_error_within_bound",
    proof="proofs_checks/limits_polynomial.py::check_rowwise_kronecker",
)
def _thm31(quick: bool) -> Measurement:
    ok, figs, summary = _bounded_regime("qv", quick)
    return Measurement(ok, figs, summary)


@claim(
    "limits.thmA.1",
    statement="Full adaptation (W_Q, W_K, W_V) under the four norm bounds of Remark 5.2: the same almost-linear approximation for all six gradients.",
    reference="Hu et al. 2024, Thm A.1, Remark 5.2",
    figure="runtime_scaling",
    test="tests/limits/test_approx.py::test_error_within_bound",
    proof="proofs_checks/limits_polynomial.py::check_rowwise_kronecker",
)
def _thmA1(quick: bool) -> Measurement:
    ok, figs, summary = _bounded_regime("qkv", quick)
    return Measurement(ok, figs, summary)


@claim(
    "limits.degree_bound",
    statement="The minimal degree of a polynomial with sup relative error eps for e^s on [-R, R] is Theta(max{2R, log(1/eps) / log(log(1/eps) / 2R)}) (Aggarwal-Alman). Measured: the constant C fitted on one grid bounds the degree on a held-out grid, and degree / order stays in a bounded band.",
    reference="Aggarwal & Alman 2022, Thm 1.2; AS23 Lemma 3.2; Hu et al. 2024, Sec. 5",
    figure="degree_vs_range",
    test="tests/limits/test_polynomial.py::test_degree_bound_holds_on_held_out_grid",
    proof="proofs_checks/limits_polynomial.py::check_taylor_remainder",
)
def _degree_bound(quick: bool) -> Measurement:

    train = degree_sweep(Rs=(0.1, 0.5, 1, 2, 4, 8), epss=(1e-2, 1e-4, 1e-6, 1e-8), methods=("chebyshev",))
    C = fit_degree_constant(train)
    held = degree_sweep(Rs=(0.05, 0.3, 0.7, 1.5, 3, 6), epss=(1e-3, 1e-5, 1e-7, 1e-9), methods=("chebyshev",))
    held = held[held.certified]
    ratio = held.degree / held.order
    within = bool((held.degree <= [degree_bound(R, e, C=C) for R, e in zip(held.R, held.eps, strict=True)]).all())
    lo, hi = float(ratio.min()), float(ratio.max())
    ok = within and lo >= 0.3
    return Measurement(ok, {"C_fitted": C, "held_out_ratio_min": lo, "held_out_ratio_max": hi, "held_out_points": len(held)},
                       f"C = {C:.2f} (fitted); held-out degree / order in [{lo:.2f}, {hi:.2f}], all <= ceil(C order): {within}")


@claim(
    "limits.rank_count",
    statement="The polynomial feature map has rank k = C(g + d, d) and phi(q) . psi(k) = P(q . k) exactly (multinomial theorem).",
    reference="AS23 Lemma 3.1 (which quotes the looser C(2(g + d), 2g)); Hu et al. 2024, Sec. 5",
    figure="phase_transition",
    test="tests/limits/test_features.py::test_features_reproduce_polynomial",
    proof="proofs_checks/limits_polynomial.py::check_multinomial_identity",
)
def _rank_count(quick: bool) -> Measurement:



    worst, bad_rank = 0.0, []
    gen = torch.Generator().manual_seed(0)
    for g, d in itertools.product(range(0, 7), range(1, 6)):
        coef = np.linspace(1.0, 0.2, g + 1)
        Q = torch.randn(9, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        K = torch.randn(11, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        U, V = polynomial_features(Q, coef, "query"), polynomial_features(K, coef, "key")
        if U.shape[1] != math.comb(g + d, d):
            bad_rank.append((g, d, U.shape[1]))
        S = Q @ K.T
        P = sum(c * S**j for j, c in enumerate(coef))
        worst = max(worst, max_rel_error(U @ V.T, P))
    tol = tolerance(torch.float64)
    return Measurement(not bad_rank and worst <= tol, {"max_rel_err": worst, "rank_mismatches": bad_rank},
                       f"k = C(g + d, d) for all g <= 6, d <= 5: {not bad_rank}; phi . psi vs P(q . k): {worst:.1e}")


@claim(
    "limits.thm4.1_regime",
    statement="At Gamma ~ sqrt(log L) kappa no sub-quadratic algorithm exists (SETH). Measured on AS23 Lemma 4.7-shaped hard instances: at a fixed degree budget the gradient error explodes as Gamma grows past sqrt(ln L), and approx_gradients flags the instances it cannot certify.",
    reference="Hu et al. 2024, Thm 4.1; AS23 Lemma 4.7",
    figure="gradient_error_vs_bound",
    test="tests/limits/test_approx.py::test_hard_instances_past_threshold_flagged",
)
def _thm41(quick: bool) -> Measurement:


    L = 512 if quick else 2048
    df = gradient_error_sweep(Ls=(L,), gammas=(0.25, 0.5, 1.0, 2.0, 3.0), kinds=("hard",), degree=8)
    small = float(df[df.Gamma == 0.25].rel_err.max())
    large = float(df[df.Gamma == 3.0].rel_err.max())
    flagged = 0
    for kappa in (1.5, 2.0):
        inst = hard_instance(L, 4, 2, kappa=kappa)
        try:
            approx_gradients(inst, eps=1e-3, max_degree=24)
        except ApproximationError:
            flagged += 1
    ok = large >= 1e3 * small and large >= 1e-3 and flagged == 2
    return Measurement(ok, {"L": L, "rel_err_gamma_0.25": small, "rel_err_gamma_3": large, "sqrt_ln_L": math.sqrt(math.log(L)), "flagged_of_2": flagged},
                       f"L = {L}, degree 8: rel err {small:.1e} at Gamma = 0.25 -> {large:.1e} at Gamma = 3 (sqrt(ln L) = {math.sqrt(math.log(L)):.2f}); kappa = 1.5, 2 flagged: {flagged}/2")


@claim(
    "limits.poly_vs_random_features",
    statement="At equal feature count k = C(g + d, d) and score range R <= 2, the polynomial method's LoRA gradient error is at least 10x below that of Performer FAVOR+ positive random features (median over seeds): the deterministic low-rank factorization of exp beats the unbiased random one.",
    reference="Hu et al. 2024, Sec. 5 (polynomial method); Choromanski et al. 2021, Lemma 1 (FAVOR+); issue 3 benchmark target",
    figure="gradient_error_vs_bound",
    test="tests/limits/test_random_features.py::test_polynomial_beats_random_features_at_equal_rank",
    proof="proofs_checks/limits_polynomial.py::check_multinomial_identity",
)
def _poly_vs_rf(quick: bool) -> Measurement:


    ratios, rows = [], []
    for L, adapt in ((512, "qkv"), (512, "qv")) if quick else ((1024, "qkv"), (4096, "qkv"), (4096, "qv")):
        inst = make_instance(L, 4, 2, adapt=adapt, bound=2.0, beta=0.25, seed=L)
        ex = exact_gradients(inst)
        g, info = approx_gradients(inst, eps=1e-3)
        poly = max(max_rel_error(g[k], ex[k]) for k in ex)
        rf = statistics.median(max(max_rel_error(gr[k], ex[k]) for k in ex)
                               for gr, _ in (random_feature_gradients(inst, info.rank, seed=s) for s in range(3 if quick else 5)))
        ratios.append(rf / poly)
        rows.append({"L": L, "adapt": adapt, "R": info.R, "k": info.rank, "poly_err": poly, "rf_err_median": rf})
    worst = min(ratios)
    return Measurement(worst >= 10.0, {"min_ratio": worst, "points": rows},
                       f"FAVOR+ / polynomial gradient error at equal k: min {worst:.0f}x over {len(rows)} configurations (R <= 2; >= 10x required)")
