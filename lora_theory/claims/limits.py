"""Claims of Hu et al. (2024), "Computational Limits of LoRA" (arXiv 2406.03136): ``limits.*``.

Each check measures on generated instances (float64 unless stated) and returns the figures
it measured; the tolerances come from :data:`lora_theory.tolerances.TOLERANCES`.
"""
from __future__ import annotations

import itertools

import torch

from ..exact import autograd_gradients, dense_terms, exact_gradients, lora_chain
from ..instance import make_instance, norm_bounds
from ..tolerances import max_rel_error, tolerance
from . import Measurement, claim

_CONFIGS = tuple(itertools.product(("qv", "qkv"), ("self", "cross"), (1.0, 0.6)))


def _configs(quick: bool):
    for i, (adapt, attention, beta) in enumerate(_CONFIGS):
        for seed in range(1 if quick else 3):
            yield make_instance(24 if quick else 64, 6, 2, adapt=adapt, attention=attention, beta=beta, bound=(1.0, 3.0)[seed % 2] if seed else None, seed=seed + 10 * i)


@claim(
    "limits.lemma3.1",
    statement="dL/dS = p = f o q - diag(rho) f with f = softmax(S), c = f V - Y, q = c V^T, rho = rowsum(f o q) = rowsum(c o O).",
    reference="Hu et al. 2024, Lemma 3.1 (Parts I-III)",
    test="tests/test_exact.py::test_lemma31_score_gradient",
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
    test="tests/test_exact.py::test_lora_chain_matches_autograd",
    proof="proofs_checks/limits_lemma31.py::check_lemma32_chain",
)
def _lemma32(quick: bool) -> Measurement:
    worst = 0.0
    for inst in _configs(quick):
        W = {mu: inst.weight(mu).detach().clone().requires_grad_(True) for mu in ("q", "k", "v")}
        Q, K, V = inst.Xq @ W["q"], inst.Xk @ W["k"], inst.Xv @ W["v"]
        value = 0.5 * ((torch.softmax(inst.beta * Q @ K.T, dim=1) @ V - inst.Y) ** 2).sum()
        G = dict(zip(W, torch.autograd.grad(value, list(W.values())), strict=True))
        chained = lora_chain(inst, G)
        ref = autograd_gradients(inst, method="dense")
        worst = max(worst, *(max_rel_error(chained[k], ref[k]) for k in ref))
    tol = tolerance(torch.float64)
    return Measurement(worst <= tol, {"max_rel_err": worst, "rtol": tol}, f"chain rule vs autograd on A, B: {worst:.1e} (rtol {tol:.0e})")


@claim(
    "limits.grad_closed_form",
    statement="The closed form (f, c, q, p; G_Q = beta X_Q^T p K, G_K = beta X_K^T p^T Q, G_V = X_V^T f^T c) equals autograd for all six gradients, partial and full adaptation, self and cross attention, beta != 1, including score ranges of 1e3.",
    reference="Hu et al. 2024, Lemma 3.1-3.2, Sec. 3 (with the printed dimension slips corrected; see paper_notes)",
    figure="limits_grad_closed_form",
    test="tests/test_exact.py::test_exact_equals_autograd",
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
    test="tests/test_exact.py::test_blocked_equals_unblocked",
)
def _blocked(quick: bool) -> Measurement:
    from .._memory import peak_memory_bytes

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
