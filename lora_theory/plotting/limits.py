"""Plots for the Computational Limits paper (claims ``limits.*``); each takes a study's DataFrame.

The closed form against autograd (``limits.grad_closed_form``), the degree of the exp
polynomial (``limits.degree_bound``), the phase transition (``limits.thm3.1``,
``limits.thmA.1``, ``limits.thm4.1_regime``) and the runtime scaling.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..limits.norm_sweeps import crossover, fit_loglog, threshold_table
from ..tolerances import TOLERANCES
from . import finish_axes

#: the smallest L of the runtime fits (the issue's range is 2^11 .. 2^16)
FIT_L_MIN = 1 << 11

__all__ = ["FIT_L_MIN", "plot_closed_form_agreement", "plot_degree_vs_range", "plot_gradient_error_vs_bound", "plot_phase_transition", "plot_runtime_scaling"]


def plot_closed_form_agreement(df: pd.DataFrame):
    """Max relative error (over the gradients) vs score range R, one line per dtype and adapt."""
    worst = df.groupby(["dtype", "adapt", "attention", "bound", "seed"], as_index=False).agg(R=("R", "first"), rel_err=("rel_err", "max"))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (dtype, adapt, attention), g in worst.groupby(["dtype", "adapt", "attention"]):
        g = g.sort_values("R")
        ax.plot(g["R"], g["rel_err"].clip(lower=1e-18), marker="o" if dtype == "float64" else "s",
                ls="-" if attention == "self" else "--", label=f"{dtype} {adapt} {attention}")
    for dt, tol in TOLERANCES.items():
        ax.axhline(tol["rtol"], color="grey", lw=0.8, ls=":")
        ax.text(worst["R"].min(), tol["rtol"] * 1.3, f"rtol {str(dt).removeprefix('torch.')}", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("score range R = max |beta Q K^T|")
    ax.set_ylabel("max relative error vs float64 autograd")
    ax.set_title("limits.grad_closed_form / toolkit.grad_blocked", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_degree_vs_range(df: pd.DataFrame):
    """Minimal degree vs R per eps (Chebyshev solid, Taylor dotted), with the fitted AA bound (dashed)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (eps, g) in enumerate(df.groupby("eps")):
        c = colors[i % len(colors)]
        ch = g[g.method == "chebyshev"].sort_values("R")
        ax.plot(ch.R, ch.degree, "o-", color=c, label=f"eps={eps:.0e} Chebyshev")
        ax.plot(ch.R, ch.bound, "--", color=c, lw=0.9)
        ta = g[g.method == "taylor"].sort_values("R")
        if len(ta):
            ax.plot(ta.R, ta.degree, ":", color=c, lw=1.2)
        bad = ch[~ch.certified]
        ax.plot(bad.R, bad.degree, "x", color="k", ms=8)
    finish_axes(ax, xlabel="score range R (fit e^s on [-R, R], sup relative error <= eps)", ylabel="degree g", xscale="log",
                title="limits.degree_bound: minimal degree vs R\n(solid: Chebyshev, dotted: Taylor, dashed: C max{2R, log(1/eps)/log(log(1/eps)/2R)}, x: not certified)")
    fig.tight_layout()
    return fig


def plot_phase_transition(df: pd.DataFrame):
    """Cost exponent log_L(flops) vs Gamma / sqrt(ln L), one panel per regime, one line per L."""

    regimes = [r for r in ("log", "fixed") if r in set(df.regime)]
    fig, axes = plt.subplots(1, len(regimes) + 1, figsize=(5.6 * len(regimes) + 4.4, 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1.0] * len(regimes) + [0.75]})
    thr = threshold_table(df)
    cmap = plt.get_cmap("viridis")
    for ax, regime in zip(axes[0], regimes):
        g = df[df.regime == regime]
        Ls = sorted(g.L.unique())
        for i, L in enumerate(Ls):
            h = g[g.L == L].sort_values("x")
            c = cmap(i / max(1, len(Ls) - 1))
            ax.plot(h.x, h.approx_exponent, "-", color=c, label=f"L=2^{int(math.log2(L))} (d={int(h.d.iloc[0])})")
            ax.axhline(h.exact_exponent.iloc[0], color=c, ls=":", lw=0.8)
            xs = thr[(thr.regime == regime) & (thr.L == L)].x_star
            if len(xs) and np.isfinite(xs.iloc[0]):
                ax.plot([xs.iloc[0]], [h.exact_exponent.iloc[0]], "o", color=c, ms=5)
        title = "d = Theta(log L): d = max(2, round(log2 L / 4))" if regime == "log" else f"fixed d = {int(g.d.iloc[0])}"
        ax.set_title(f"limits.thm3.1 / limits.thm4.1_regime, {title}\neps = 1/L, beta = 1/d (R <= Gamma^2); dotted: exact, o: Gamma*", fontsize=8)
        ax.set_xlabel("x = Gamma / sqrt(ln L)")
        ax.set_ylabel("cost exponent log_L(flops)")
        ax.set_ylim(1.0, 3.0)
        ax.legend(fontsize=6, ncol=2)
    ax = axes[0][-1]  # the estimated threshold x* = Gamma* / sqrt(ln L) per L, both regimes
    for regime, m in (("log", "o-"), ("fixed", "s--")):
        t = thr[thr.regime == regime].sort_values("L")
        if len(t):
            ax.plot(t.L, t.x_star, m, label="d = max(2, round(log2 L / 4))" if regime == "log" else f"fixed d = {int(t.d.iloc[0])}")
    finish_axes(ax, xlabel="L", ylabel="x* = Gamma* / sqrt(ln L)", xscale="log", xbase=2,
                title="estimated threshold: approx cost = exact cost\n(cost model: counted multiply-adds, eps = 1/L)")
    fig.tight_layout()
    return fig


def plot_gradient_error_vs_bound(df: pd.DataFrame):
    """Relative gradient error at a fixed degree vs Gamma; random (solid) and hard (dashed) instances,
    FAVOR+ at the same feature count (dash-dot, where the table has ``method == "favor+"`` rows)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    df = df.assign(method=df["method"] if "method" in df else "polynomial")
    agg = df.groupby(["method", "kind", "L", "Gamma"], as_index=False).agg(rel_err=("rel_err", "median"), valid=("valid", "all"))
    for i, L in enumerate(sorted(agg.L.unique())):
        # the Thm 4.1 scale: hardness sets in at Gamma ~ sqrt(log L) kappa
        ax.axvline(math.sqrt(math.log(L)), color=colors[i % len(colors)], ls=":", lw=0.9)
        for method, kind, ls, mk in (("polynomial", "random", "-", "o"), ("polynomial", "hard", "--", "o"), ("favor+", "random", "-.", "^"), ("favor+", "hard", (0, (1, 3)), "^")):
            g = agg[(agg.L == L) & (agg.kind == kind) & (agg.method == method)].sort_values("Gamma")
            if not len(g):
                continue
            label = f"{kind}, L={L}" if method == "polynomial" else f"FAVOR+ {kind}, L={L}"
            ax.plot(g.Gamma, g.rel_err.clip(lower=1e-17), ls=ls, marker=mk, ms=4 if method == "favor+" else 5, color=colors[i % len(colors)],
                    alpha=0.6 if method == "favor+" else 1.0, label=label)
            if method == "polynomial":
                inv = g[~g.valid]
                ax.plot(inv.Gamma, inv.rel_err.clip(lower=1e-17), "x", color="k", ms=7)
    ax.set_yscale("log")
    deg = int(df.degree.iloc[0])
    d = int(df.d.iloc[0])
    k = int(df.k.iloc[0])
    ax.set_xlabel("Gamma (max-entry norm bound)")
    ax.set_ylabel("max gradient error / max |gradient|")
    peer = " / toolkit.poly_vs_random_features" if (df.method == "favor+").any() else ""
    ax.set_title(f"limits.thm4.1_regime{peer}: error at fixed degree g={deg} (d={d}, k={k})\n"
                 "solid: random, dashed: AS23 hard instances; triangles: FAVOR+ with the same k (median of seeds)\n"
                 "x: flagged invalid (eps=1e-3 not certified); dotted verticals: Gamma = sqrt(ln L)", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def plot_runtime_scaling(df: pd.DataFrame):
    """Wall time vs L (log-log) for exact and approximate gradients, with fitted exponents and L*."""

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, m in (("exact", "s-"), ("approx", "o-")):
        g = df[df.method == method].sort_values("L")
        if len(g) >= 2:
            # fit over L >= 2^11 (the benchmark's range) when there are >= 3 such points; else all of them
            L_min = FIT_L_MIN if (g.L >= FIT_L_MIN).sum() >= 3 else 0
            ax.plot(g.L, g.seconds, m, label=f"{method}: slope {fit_loglog(df, method, L_min=L_min):.2f} (L >= {max(L_min, int(g.L.min()))})")
    Ls = crossover(df)
    if np.isfinite(Ls):
        below = Ls <= df.L.min()  # approx already faster at the smallest L measured
        ax.axvline(Ls, color="grey", ls=":", label=f"L* <= {Ls:.0f} (approx faster at every L)" if below else f"L* = {Ls:.0f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    row = df.iloc[0]
    ax.set_xlabel("L")
    clock = row["clock"] if "clock" in df else "wall"
    threads = f", {int(row['threads'])} thread(s)" if "threads" in df else ""
    ax.set_ylabel(f"seconds, {'CPU time' if clock == 'cpu' else 'wall time'}{threads} (min of repeats)")
    dev = row["device"] if "device" in df else "cpu"
    ax.set_title(f"limits.thm3.1: runtime, d=4, R<={df.R.max():.2f}, eps=1e-3, degree {int(df.degree.min())}..{int(df.degree.max())} "
                 f"(k<={int(df.k.max())}), float64, {dev}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
