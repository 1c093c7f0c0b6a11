"""Studies and figures of the Computational Limits paper (Hu et al. 2024; claims ``limits.*``).

- ``limits_grad_closed_form``: the max-entry relative error of every gradient of
  :func:`lora_theory.exact_gradients` (blocked closed form) against
  :func:`lora_theory.autograd_gradients` (float64), per score range R (claims
  ``limits.grad_closed_form``, ``toolkit.grad_blocked``).
- ``degree_vs_range``, ``phase_transition``, ``gradient_error_vs_bound``, ``runtime_scaling``:
  the norm-bound sweeps of :mod:`lora_theory.limits.norm_sweeps`.

Drawing is in :mod:`lora_theory.plotting.limits`.
"""
from __future__ import annotations

import itertools

import pandas as pd
import torch

from ..limits.exact import autograd_gradients, exact_gradients
from ..limits.instance import make_instance, norm_bounds
from ..limits.norm_sweeps import degree_sweep, gradient_error_sweep, phase_transition_sweep, runtime_sweep
from ..tolerances import max_rel_error
from . import lazy_plot, register_figure

__all__ = ["closed_form_agreement"]


def closed_form_agreement(
    bounds: tuple[float, ...] = (0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    *,
    L: int = 256,
    d: int = 8,
    r: int = 2,
    seeds: tuple[int, ...] = (0, 1),
    block_size: int = 37,
) -> pd.DataFrame:
    """Max relative error of blocked exact gradients (float64 and float32) vs float64 autograd.

    Returns:
        Tidy DataFrame: dtype, adapt, attention, bound, seed, R, param, rel_err.
    """
    rows = []
    for adapt, attention, bound, seed in itertools.product(("qv", "qkv"), ("self", "cross"), bounds, seeds):
        inst = make_instance(L, d, r, adapt=adapt, attention=attention, bound=bound, seed=seed)
        ref = autograd_gradients(inst, method="dense")
        R = norm_bounds(inst)["R"]
        for dtype in (torch.float64, torch.float32):
            g = exact_gradients(inst.to(dtype=dtype), block_size=block_size)
            for k, v in g.items():
                rows.append({"dtype": str(dtype).removeprefix("torch."), "adapt": adapt, "attention": attention,
                             "bound": bound, "seed": seed, "R": R, "param": k, "rel_err": max_rel_error(v, ref[k])})
    return pd.DataFrame(rows)


def _compute(quick: bool) -> pd.DataFrame:
    if quick:
        return closed_form_agreement(bounds=(0.5, 2.0, 8.0, 32.0), L=96, seeds=(0,))
    return closed_form_agreement()


register_figure(
    "limits_grad_closed_form",
    claims=("limits.grad_closed_form", "toolkit.grad_blocked"),
    description="Blocked closed-form LoRA gradient vs float64 autograd: max relative error per score range R, float64 and float32.",
    compute=_compute,
    plot=lazy_plot("limits", "plot_closed_form_agreement"),
)
register_figure(
    "degree_vs_range",
    claims=("limits.degree_bound",),
    description="Minimal degree of a polynomial with sup relative error <= eps for e^s on [-R, R] (Chebyshev, Taylor), with the fitted Aggarwal-Alman bound.",
    compute=lambda quick: degree_sweep(Rs=(0.1, 0.5, 1, 2, 4, 8) if quick else (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)),
    plot=lazy_plot("limits", "plot_degree_vs_range"),
)
register_figure(
    "phase_transition",
    claims=("limits.thm3.1", "limits.thm4.1_regime", "limits.threshold", "limits.rank_count"),
    description="Cost exponent log_L(flops) of the approximate gradient vs Gamma / sqrt(ln L) for L = 2^8 .. 2^16, eps = 1/L; left d = Theta(log L), right fixed d = 4; the estimated threshold Gamma*.",
    compute=lambda quick: phase_transition_sweep(Ls=tuple(2**j for j in (8, 10, 12, 14, 16)) if quick else tuple(2**j for j in range(8, 17))),
    plot=lazy_plot("limits", "plot_phase_transition"),
)
register_figure(
    "gradient_error_vs_bound",
    claims=("limits.thm3.1", "limits.thm4.1_regime", "toolkit.poly_vs_random_features"),
    description="Measured relative gradient error of approx_gradients at a fixed degree budget (g = 8, d = 4) vs Gamma, random and AS23 hard instances, several L; FAVOR+ random features at the same feature count for comparison.",
    compute=lambda quick: gradient_error_sweep(Ls=(256, 1024) if quick else (256, 1024, 4096), gammas=(0.5, 1, 1.5, 2, 3, 4) if quick else (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                                               peer=True),
    plot=lazy_plot("limits", "plot_gradient_error_vs_bound"),
)
register_figure(
    "runtime_scaling",
    claims=("limits.thm3.1",),
    description="Wall time of exact (blocked) vs approximate gradients vs L (d = 4, R <= 2, eps = 1e-3, float64, CPU, single-thread CPU time), log-log exponents fitted over L >= 2^11 and the crossover L* (L from 2^6 so that L* is inside the range).",
    # single-thread CPU time: the cores are shared, and CPU time of one thread does not change with
    # other work (benchmarks/bench_approx.py measures wall time on 2 threads)
    compute=lambda quick: runtime_sweep(Ls=tuple(2**j for j in range(6, 14)) if quick else tuple(2**j for j in range(6, 17)), clock="cpu", threads=1),
    plot=lazy_plot("limits", "plot_runtime_scaling"),
)
