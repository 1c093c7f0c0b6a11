"""Plots for LoRA+ (claims ``lora_plus.*``); each takes a DataFrame and returns a Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_coord_check", "plot_exponents", "plot_heatmap"]


def plot_exponents(df: pd.DataFrame):
    """Predicted (x) vs measured (y) slopes, one panel per term; color by configuration."""
    terms = ["delta1", "delta2", "delta3"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
    d = df[np.isfinite(df.gamma_float) & np.isfinite(df.slope)]
    if "model" not in d:
        d = d.assign(model="toy")
    d = d.assign(model=d.model.fillna("toy"))
    cfgs = sorted(set(zip(d.optimizer, d.init, d.a, d.b, d.model, strict=True)))
    cmap = plt.get_cmap("tab10")
    for ax, term in zip(axes, terms, strict=True):
        g = d[d.term == term]
        for i, cfg in enumerate(cfgs):
            h = g[(g.optimizer == cfg[0]) & (g.init == cfg[1]) & (g.a == cfg[2]) & (g.b == cfg[3]) & (g.model == cfg[4])]
            ax.plot(h.gamma_float, h.slope, "o" if cfg[4] == "toy" else "^", color=cmap(i % 10), alpha=0.7 if cfg[4] == "toy" else 0.45,
                    label=f"{cfg[4]}: {cfg[0]} Init[{cfg[1]}] a={cfg[2]} b={cfg[3]}")
        lim = [min(d.gamma_float.min(), d.slope.min()) - 0.3, max(d.gamma_float.max(), d.slope.max()) + 0.3]
        ax.plot(lim, lim, "k-", lw=0.7)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("predicted exponent (recursion)")
    axes[0].set_ylabel("measured slope d log|delta| / d log n")
    axes[0].legend(fontsize=6)
    fig.suptitle("lora_plus.prop1 / prop2 / thm1 / thm1_layer: toy model (o) and Sec. 4 layer (^), n = 2^6..2^14, steps 1-4 (eta = 0.1 n^exponent)", fontsize=9)
    fig.tight_layout()
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
    best = df.loc[df.test_loss.idxmin()]
    ax.plot(list(piv.columns).index(best.eta_B), list(piv.index).index(best.eta_A), "r*", ms=14)
    ax.plot(range(len(piv.index)), range(len(piv.index)), "w--", lw=0.8)
    fig.colorbar(im, ax=ax, label="log10 test loss (white: diverged)")
    ax.set_title(f"lora_plus.ratio: Fig. 2 toy (d=5, n=100, r=4, GD)\nbest at eta_B/eta_A = {best.ratio:.3g}; dashed: equal rates", fontsize=8)
    fig.tight_layout()
    return fig


def plot_coord_check(df: pd.DataFrame):
    """mup-style: mean |Z_B| (and |Z_A|) vs width, one line per step, per parametrization."""
    params = sorted(df.param.unique()) if "param" in df else ["run"]
    fig, axes = plt.subplots(2, len(params), figsize=(4.5 * len(params), 6.5), squeeze=False)
    for j, p in enumerate(params):
        d = df[df.param == p] if "param" in df else df
        agg = d.groupby(["width", "step"], as_index=False)[["z_a", "z_b"]].mean()
        for i, col in enumerate(("z_b", "z_a")):
            ax = axes[i, j]
            for step, g in agg.groupby("step"):
                ax.plot(g.width, g[col].clip(lower=1e-12), "o-", ms=3, label=f"step {step}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{p}: mean |{'Z_B (adapter output)' if col == 'z_b' else 'Z_A = A z'}|", fontsize=8)
            ax.set_xlabel("width n")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("lora_plus_coord_check: LoRA MLP, Adam; flat = width-stable", fontsize=9)
    fig.tight_layout()
    return fig
