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

from ..tolerances import TOLERANCES
from . import finish_axes, fmt

#: the smallest L of the runtime fits (the issue's range is 2^11 .. 2^16)
FIT_L_MIN = 1 << 11

__all__ = ["FIT_L_MIN", "plot_closed_form_agreement", "plot_degree_vs_range", "plot_gradient_error_vs_bound", "plot_phase_transition", "plot_real_heads",
           "plot_regime_during_finetuning", "plot_runtime_scaling"]


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
    """limits.threshold: log_L k vs x per L (toolkit and bracket), and x* vs L over 2^8..2^512 with the fitted power p per window."""
    from ..limits.asymptotics import THRESHOLD_WINDOWS, fit_threshold_power

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.4, 4.8))
    cur, thr = df[df.kind == "curve"], df[df.kind == "threshold"]
    Ls = sorted(cur.log2_L.unique())
    cmap = plt.get_cmap("viridis")
    for i, l2 in enumerate(Ls):
        c = cmap(i / max(1, len(Ls) - 1))
        b = cur[(cur.source == "bracket") & (cur.log2_L == l2)].sort_values("x")
        ax.fill_between(b.x, b.log_L_k_lo, b.log_L_k_hi, color=c, alpha=0.18, lw=0)
        t = cur[(cur.source == "toolkit") & (cur.log2_L == l2)].sort_values("x")
        d = int(b.d.iloc[0])
        if len(t):
            ax.plot(t.x, t.log_L_k, "-", color=c, label=f"L = 2^{int(l2)}, d = {d}: toolkit (band: bracket)")
            bound = t[t.degree_source == "bound"]
            ax.plot(bound.x, bound.log_L_k, "o", mfc="none", color=c, ms=5)
            ax.plot(t[t.degree_source == "measured"].x, t[t.degree_source == "measured"].log_L_k, "o", color=c, ms=3)
        else:
            ax.plot(b.x, np.sqrt(b.log_L_k_lo * b.log_L_k_hi), "--", color=c, label=f"L = 2^{int(l2)}, d = {d}: bracket only")
    ax.axhline(1.0, color="k", lw=1.0)
    finish_axes(ax, xlabel="x = Gamma / sqrt(ln L)  (R = Gamma^2, eps = 1/L)", ylabel="rank exponent log_L k,  k = C(g + d, d)", legend=False,
                title="limits.threshold: the rank reaches L (log_L k = 1) at x*\nlines: toolkit's plan (filled: measured degree, hollow: fitted bound,\nfloat64 cannot certify a fit); bands: Bessel bracket of the minimal degree", fontsize=7)
    ax.legend(fontsize=6, loc="upper left")
    ax.set_ylim(0, 3)
    br = thr[thr.source == "bracket"].sort_values("log2_L")
    bx.fill_between(br.log2_L, br.x_star_min, br.x_star_max, color="C0", alpha=0.25, lw=0, label="x* bracket (minimal degree lo..hi)")
    bx.plot(br.log2_L, br.x_star, "o-", color="C0", ms=3, label="x* (geometric mean of the bracket)")
    tk = thr[thr.source == "toolkit"]
    bx.plot(tk.log2_L, tk.x_star, "s", color="C3", ms=5, label="x* of the running method (toolkit plan, L <= 2^16)")
    ps = []
    for lo, hi in THRESHOLD_WINDOWS:
        ps.append(f"{fit_threshold_power(br, lo, hi):.2f} (2^{lo}..2^{hi})")
    bx.set_ylim(0, max(1.0, float(br.x_star_max.max()) * 1.1))
    finish_axes(bx, xlabel="log2 L", ylabel="x* = Gamma* / sqrt(ln L)", xscale="log", xbase=2, legend=False,
                title="x* over L = 2^8..2^512, d = ceil(log2 L / 2), eps = 1/L; Theta(sqrt(log L)): p -> 1/2\nfitted p of Gamma* ~ (ln L)^p: " + ", ".join(ps), fontsize=7)
    bx.legend(fontsize=7)
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
    """limits.thm3.1 (a): CPU time vs L at fixed k with the fitted cost form, the exact gradient, and measured / fitted per point."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.0, 4.6), gridspec_kw={"width_ratios": [1.4, 1.0]})
    ap = df[df.method == "approx"]
    e = float(ap.fixed_k_exponent.iloc[0])
    for i, (k, g) in enumerate(ap[ap.d == 4].groupby("k")):
        g = g.sort_values("L")
        ax.plot(g.L, g.cpu_seconds, "o", color=f"C{i}", label=f"approx_gradients, d = 4, degree {int(g.degree.iloc[0])} (k = {int(k)})")
        ax.plot(g.L, g.fitted_seconds, "-", color=f"C{i}", lw=1.0)
    ex = df[df.method == "exact"].sort_values("L")
    if len(ex) >= 2:
        slope = float(np.polyfit(np.log(ex.L), np.log(ex.cpu_seconds), 1)[0])
        ax.plot(ex.L, ex.cpu_seconds, "s--", color="grey", label=f"exact_gradients (blocked closed form): log-log slope {slope:.2f}")
    a, b, c = (float(ap[x].iloc[0]) for x in ("a", "b", "c"))
    finish_axes(ax, xlabel="L", ylabel="CPU seconds, 1 thread (min over interleaved rounds)", xscale="log", xbase=2, yscale="log", legend=False,
                title=f"limits.thm3.1 (a): exponent of L at fixed k (joint fit a + b_k L^e) e = {e:.3f}, claim: [0.9, 1.1]\n"
                      f"lines: cost form {a * 1e3:.1f} ms + {b * 1e9:.0f} ns L + {c * 1e9:.2f} ns x approx_flops (fitted to every point)")
    ax.legend(fontsize=7)
    ratio = ap.cpu_seconds / ap.fitted_seconds
    for d, m in ((2, "v"), (4, "o"), (8, "^")):
        sel = ap.d == d
        bx.plot(ap.L[sel], ratio[sel], m, ls="none", label=f"d = {d}")
    for y in (0.5, 2.0):
        bx.axhline(y, color="k", ls=":", lw=0.9)
    bx.axhline(1.0, color="grey", lw=0.6)
    finish_axes(bx, xlabel="L", ylabel="measured / fitted CPU time", xscale="log", xbase=2, yscale="log", legend=False,
                title=f"every (L, k, d): {ratio.min():.2f}..{ratio.max():.2f} (claim: within [1/2, 2])")
    bx.set_ylim(0.25, 4.0)
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _layer_colors(layers) -> dict:
    cmap = plt.get_cmap("viridis")
    layers = sorted(set(int(x) for x in layers))
    return {layer: cmap(i / max(1, len(layers) - 1)) for i, layer in enumerate(layers)}


def plot_real_heads(df: pd.DataFrame):
    """Phase diagram with real heads: R vs L (log-log), sqrt(ln L) and ln L, degree contours; R / sqrt(ln L) per layer at the largest L.

    ``df``: rows of :func:`lora_theory.limits.regime.attention_regime` (``kind == "head"``, or no
    ``kind`` column) and optional ``kind == "degree_contour"`` rows (degree, R).
    """
    kind = df["kind"] if "kind" in df else pd.Series("head", index=df.index)
    heads, contours = df[kind == "head"], df[kind == "degree_contour"]
    colors = _layer_colors(heads.layer)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.0, 4.8), gridspec_kw={"width_ratios": [1.5, 1.0]})
    Ls = np.array(sorted(heads.L.unique()), dtype=float)
    n_layers = len(colors)
    for i, (layer, c) in enumerate(colors.items()):
        g = heads[heads.layer == layer]
        jitter = 2.0 ** (0.08 * (i - (n_layers - 1) / 2))  # spread the layers around each L
        ax.scatter(g.L * jitter, g.R, s=12, color=c, alpha=0.8, label=f"layer {layer}", zorder=3)
    grid = np.geomspace(max(2.0, Ls.min() / 1.5), Ls.max() * 1.5, 100)
    ax.plot(grid, np.sqrt(np.log(grid)), "k-", lw=1.6, label="sqrt(ln L): regime threshold (R <= it: almost-linear)")
    ax.plot(grid, np.log(grid), "k--", lw=1.0, label="ln L (AS23 score-range reading)")
    for r in contours.itertuples():
        ax.axhline(r.R, color="grey", ls=":", lw=0.8)
        ax.text(grid[0], r.R * 1.03, f"g={int(r.degree)}", fontsize=7, color="grey")
    eps = fmt(heads.eps.iloc[0], ".0e") if "eps" in heads and len(heads) else "n/a"
    d = int(heads.d_head.iloc[0]) if len(heads) else 0
    finish_axes(ax, xlabel="L (tokens per sequence; layers spread around each L)", ylabel="R = max |S_ij| (S = q.k / sqrt(d_head))", xscale="log", xbase=2,
                yscale="log", title=f"limits.thm3.1 / limits.thm4.1_regime: {len(heads.groupby(['layer', 'head']))} real heads (d_head={d}) at each L\n"
                f"dotted: largest R the polynomial method covers at degree g (eps={eps}; rank k = C(g+{d}, {d}))")
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    last = heads[heads.L == heads.L.max()]
    if len(last):
        data = [last[last.layer == layer].R_over_sqrt_ln_L.to_numpy() for layer in colors]
        parts = bx.boxplot(data, tick_labels=[str(layer) for layer in colors], patch_artist=True)
        for patch, c in zip(parts["boxes"], colors.values()):
            patch.set_facecolor(c)
            patch.set_alpha(0.6)
        bx.axhline(1.0, color="k", lw=1.2)
        q = last.R_over_sqrt_ln_L.quantile([0.1, 0.5, 0.9]).to_numpy()
        frac = float((last.regime == "almost-linear").mean())
        frac_ln = float((last.R_over_ln_L <= 1).mean())
        frac_g = float((last.Gamma_over_sqrt_ln_L <= 1).mean()) if "Gamma_over_sqrt_ln_L" in last else float("nan")
        finish_axes(bx, xlabel="layer", ylabel="R / sqrt(ln L)", yscale="log", legend=False,
                    title=f"L = {int(last.L.max())}: R / sqrt(ln L) quantiles 10/50/90 % = {fmt(q[0], '.2f')} / {fmt(q[1], '.2f')} / {fmt(q[2], '.2f')}\n"
                          f"almost-linear (R <= sqrt(ln L)): {frac:.0%}; R <= ln L: {frac_ln:.0%}; max entry <= sqrt(ln L): {fmt(100 * frac_g, '.0f')} %")
    fig.tight_layout()
    return fig


def plot_regime_during_finetuning(df: pd.DataFrame):
    """R per head over fine-tuning steps, one column per method (first seed), with the teacher's R and the held-out loss."""
    methods = [m for m in ("lora", "lora_ga", "lora_plus") if m in set(df.method)] + sorted(set(df.method) - {"lora", "lora_ga", "lora_plus", "teacher"})
    fig, axes = plt.subplots(2, len(methods), figsize=(4.4 * len(methods), 7.0), squeeze=False, sharey="row", gridspec_kw={"height_ratios": [2.2, 1.0]})
    colors = _layer_colors(df.layer)
    seed0 = df.seed.min()
    teacher = df[(df.method == "teacher") & (df.seed == seed0)]
    for j, method in enumerate(methods):
        ax, bx = axes[0][j], axes[1][j]
        g = df[(df.method == method) & (df.seed == seed0)]
        for (layer, _head), h in g.groupby(["layer", "head"]):
            h = h.sort_values("step")
            ax.plot(h.step, h.R, color=colors[int(layer)], lw=0.7, alpha=0.7)
        top = g.step.max()
        if len(teacher):
            t = teacher[teacher.step == teacher.step.min()]
            ax.scatter(np.full(len(t), top * 1.04 + 0.5), t.R, c=[colors[int(x)] for x in t.layer], marker="_", s=40, label="teacher's R")
        L = int(g.L.max()) if len(g) else 2
        ax.axhline(math.sqrt(math.log(L)), color="k", lw=1.4, label=f"sqrt(ln L), L={L}")
        first, final = g[g.step == g.step.min()].set_index(["layer", "head"]).R, g[g.step == top].set_index(["layer", "head"]).R
        rel = (final / first - 1).dropna()
        crossed = int(((first > math.sqrt(math.log(L))) != (final > math.sqrt(math.log(L)))).sum())
        lr = fmt(g.lr.iloc[0], ".0e") if len(g) else "n/a"
        finish_axes(ax, xlabel="step", ylabel="R per head (held-out text)", yscale="log",
                    title=f"{method} (lr {lr}): R change step 0 -> {int(top)}: median {fmt(100 * rel.median(), '+.1f')} %, "
                          f"max |.| {fmt(100 * rel.abs().max(), '.1f')} %\nheads crossing sqrt(ln L): {crossed}")
        ends = []
        for seed, h in df[df.method == method].groupby("seed"):
            h = h.drop_duplicates("step").sort_values("step")
            bx.plot(h.step, h.eval_loss, "o-", ms=3, label=f"seed {seed}")
            ends.append(f"{fmt(h.eval_loss.iloc[0])} -> {fmt(h.eval_loss.iloc[-1])}")
        finish_axes(bx, xlabel="step", ylabel="held-out task loss", title=f"premise check, held-out loss: {'; '.join(ends)}", fontsize=8)
    for c in colors:
        axes[0][0].plot([], [], color=colors[c], label=f"layer {c}")
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle("limits.thm3.1 / limits.thm4.1_regime: does fine-tuning move MiniLM's heads across the threshold? (LoRA on query, value; teacher-student stand-in)",
                 fontsize=9)
    fig.tight_layout()
    return fig
