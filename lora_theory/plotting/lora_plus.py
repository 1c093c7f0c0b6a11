"""Plots for LoRA+ (claims ``lora_plus.*``); each takes a DataFrame and returns a Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import fmt

__all__ = ["plot_coord_check", "plot_exponents", "plot_heatmap"]


def plot_exponents(df: pd.DataFrame):
    """Predicted (x) vs measured (y) slopes d log|delta_i| / d log n, one panel per term; filled = checked by a claim."""
    terms = ["delta1", "delta2", "delta3"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 5.6), sharex=True, sharey=True)
    d = df[np.isfinite(df.gamma_float) & np.isfinite(df.slope)]
    if "model" not in d:
        d = d.assign(model="toy")
    d = d.assign(model=d.model.fillna("toy"))
    if "checked" not in d:
        d = d.assign(checked=True)
    cfgs = sorted(set(zip(d.model, d.optimizer, d.init, d.a, d.b, strict=True)))
    cmap = plt.get_cmap("tab20")
    for ax, term in zip(axes, terms, strict=True):
        g = d[d.term == term]
        for i, cfg in enumerate(cfgs):
            h = g[(g.model == cfg[0]) & (g.optimizer == cfg[1]) & (g.init == cfg[2]) & (g.a == cfg[3]) & (g.b == cfg[4])]
            marker, color = ("o" if cfg[0] == "toy" else "^"), cmap(i % 20)
            for chk, hh in h.groupby("checked"):
                ax.scatter(hh.gamma_float, hh.slope, marker=marker, s=30, alpha=0.75, color=color if chk else "none", edgecolors=color,
                           label=f"{cfg[0]}: {cfg[1]} Init[{cfg[2]}] a={cfg[3]} b={cfg[4]}" if chk else None)
        lim = [min(d.gamma_float.min(), d.slope.min()) - 0.3, max(d.gamma_float.max(), d.slope.max()) + 0.3]
        ax.plot(lim, lim, "k-", lw=0.7)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("predicted exponent (recursion)")
    axes[0].set_ylabel("measured slope d log|delta| / d log n")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=6.5, frameon=False)
    fig.suptitle("lora_plus.prop1 / prop2 / thm1 / thm1_layer: toy model (o) and Sec. 4 layer (^), n = 2^6..2^14, steps 1-4, eta = 0.1 n^exponent\n"
                 "filled: checked by the claim (tol 0.15); hollow: exploding runs past their onset (finite widths lag the recursion)", fontsize=9)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return fig


def plot_heatmap(df: pd.DataFrame):
    """Test loss over the (eta_A, eta_B) grid (log colors), best point and the equal-rate diagonal marked."""
    piv = df.pivot(index="eta_A", columns="eta_B", values="test_loss")
    fig, ax = plt.subplots(figsize=(6.2, 5.0))
    vals = np.log10(piv.to_numpy().astype(float))
    im = ax.imshow(np.where(np.isfinite(vals), vals, np.nan), origin="lower", cmap="viridis")
    ax.set_xticks(range(len(piv.columns)), [f"{v:.0e}" for v in piv.columns], rotation=60, fontsize=7)
    ax.set_yticks(range(len(piv.index)), [f"{v:.0e}" for v in piv.index], fontsize=7)
    ax.set_xlabel("eta_B")
    ax.set_ylabel("eta_A")
    finite = df[np.isfinite(df.test_loss.astype(float))]
    best = finite.loc[finite.test_loss.idxmin()] if len(finite) else None  # None: every run diverged, there is no best
    if best is not None:
        ax.plot(list(piv.columns).index(best.eta_B), list(piv.index).index(best.eta_A), "r*", ms=14)
    ax.plot(range(len(piv.index)), range(len(piv.index)), "w--", lw=0.8)
    fig.colorbar(im, ax=ax, label="log10 test loss (white: diverged)")
    ax.set_title(f"lora_plus.ratio: Fig. 2 toy (d=5, n=100, r=4, GD)\nbest at eta_B/eta_A = {fmt(None if best is None else best.ratio)}; dashed: equal rates", fontsize=8)
    fig.tight_layout()
    return fig


def plot_coord_check(df: pd.DataFrame):
    """mup-style: mean |Z_B|, |Z_A|, |delta1|, |delta2| vs width (log-log), one line per step, one column per parametrization."""
    params = sorted(df.param.unique()) if "param" in df else ["run"]
    cols = [c for c in ("z_b", "z_a", "delta1", "delta2") if c in df]
    labels = {"z_b": "Z_B (adapter output)", "z_a": "Z_A = A z", "delta1": "delta1 = B dZ_A", "delta2": "delta2 = dB Z_A"}
    fig, axes = plt.subplots(len(cols), len(params), figsize=(4.5 * len(params), 3.0 * len(cols)), squeeze=False)
    for j, p in enumerate(params):
        d = df[df.param == p] if "param" in df else df
        agg = d.groupby(["width", "step"], as_index=False)[cols].mean()
        for i, col in enumerate(cols):
            ax = axes[i, j]
            for step, g in agg.groupby("step"):
                y = g[col].where(g[col] > 0)  # exact zeros (B = 0 at step 0, delta1 at step 1) have no place on a log axis
                if y.notna().any():
                    ax.plot(g.width, y, "o-", ms=3, color=plt.get_cmap("viridis")(step / max(1, agg.step.max())), label=f"step {step}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{p}: mean |{labels[col]}|", fontsize=8)
            ax.set_xlabel("width n")
    for ax in axes.ravel():
        ax.legend(fontsize=6)
    fig.suptitle("lora_plus_coord_check (lora_plus.thm1): LoRA MLP, Adam; flat in width = Theta(1)", fontsize=9)
    fig.tight_layout()
    return fig
