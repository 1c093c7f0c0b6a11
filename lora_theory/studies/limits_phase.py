"""Figures of the polynomial method and the phase transition (registered in the figure registry)."""
from __future__ import annotations

from ..figures import register_figure
from ..phase import degree_sweep, gradient_error_sweep, phase_transition_sweep, runtime_sweep


def _plot(name):
    def plot(df):
        from ..plotting import phase

        return getattr(phase, name)(df)

    return plot


register_figure(
    "degree_vs_range",
    claims=("limits.degree_bound",),
    description="Minimal degree of a polynomial with sup relative error <= eps for e^s on [-R, R] (Chebyshev, Taylor), with the fitted Aggarwal-Alman bound.",
    compute=lambda quick: degree_sweep(Rs=(0.1, 0.5, 1, 2, 4, 8) if quick else (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)),
    plot=_plot("plot_degree_vs_range"),
)
register_figure(
    "phase_transition",
    claims=("limits.thm3.1", "limits.thm4.1_regime"),
    description="Cost exponent log_L(flops) of the approximate gradient vs Gamma / sqrt(ln L) for L = 2^8 .. 2^16, eps = 1/L; left d = Theta(log L), right fixed d = 4; the estimated threshold Gamma*.",
    compute=lambda quick: phase_transition_sweep(Ls=tuple(2**j for j in (8, 10, 12, 14, 16)) if quick else tuple(2**j for j in range(8, 17))),
    plot=_plot("plot_phase_transition"),
)
register_figure(
    "gradient_error_vs_bound",
    claims=("limits.thm3.1", "limits.thm4.1_regime", "limits.poly_vs_random_features"),
    description="Measured relative gradient error of approx_gradients at a fixed degree budget (g = 8, d = 4) vs Gamma, random and AS23 hard instances, several L; FAVOR+ random features at the same feature count for comparison.",
    compute=lambda quick: gradient_error_sweep(Ls=(256, 1024) if quick else (256, 1024, 4096), gammas=(0.5, 1, 1.5, 2, 3, 4) if quick else (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                                               peer=True),
    plot=_plot("plot_gradient_error_vs_bound"),
)
register_figure(
    "runtime_scaling",
    claims=("limits.thm3.1",),
    description="Wall time of exact (blocked) vs approximate gradients vs L (d = 4, R <= 2, eps = 1e-3, float64, CPU, single-thread CPU time), log-log exponents fitted over L >= 2^11 and the crossover L* (L from 2^6 so that L* is inside the range).",
    # single-thread CPU time: the cores are shared, and CPU time of one thread does not change with
    # other work (benchmarks/bench_approx.py measures wall time on 2 threads)
    compute=lambda quick: runtime_sweep(Ls=tuple(2**j for j in range(6, 14)) if quick else tuple(2**j for j in range(6, 17)), clock="cpu", threads=1),
    plot=_plot("plot_runtime_scaling"),
)
