"""Plots of the fine-tuning experiment (claims ``lora_ga.speedup``, ``lora_ga.gap_to_full``, ``lora_ga.ablation``,
``lora_plus.speedup``, ``lora_plus.accuracy_gain``, ``lora_plus.best_ratio``); each takes a study's DataFrame and returns a Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import finish_axes, fmt

__all__ = ["plot_ablation", "plot_curves", "plot_ratio_heatmap", "plot_steps"]

_STYLE = {"full": ("k", "full FT"), "lora": ("tab:blue", "LoRA"), "lora_ga": ("tab:red", "LoRA-GA (ArB2r, stable)"),
          "lora_plus": ("tab:green", "LoRA+ (ratio 16)")}
_METHODS = ("full", "lora", "lora_ga", "lora_plus")


def _panels(df: pd.DataFrame) -> list[tuple[str, str]]:
    return [(t, p) for t in sorted(df.task.unique()) for p in ("paper", "tuned") if ((df.task == t) & (df.protocol == p)).any()]


def plot_curves(df: pd.DataFrame):
    """One panel per (task, protocol): median validation loss over seeds per method with its min-max band; dashed: the target."""
    panels = _panels(df)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (task, proto) in zip(axes[0], panels, strict=True):
        d = df[(df.task == task) & (df.protocol == proto)]
        for method in _METHODS:
            g = d[d.method == method]
            if not len(g):
                continue
            color, label = _STYLE[method]
            agg = g.replace([np.inf], np.nan).groupby("step").val_loss.agg(["median", "min", "max"]).reset_index()
            ax.plot(agg.step, agg["median"], color=color, lw=1.6, label=f"{label}, lr {g.lr.iloc[0]:g}")
            ax.fill_between(agg.step, agg["min"], agg["max"], color=color, alpha=0.15, lw=0)
        ax.axhline(float(d.target.iloc[0]), color="grey", ls="--", lw=0.8)
        finish_axes(ax, xlabel="step (AdamW, batch 32)", ylabel="validation loss", title=f"{task}, {proto} lr ({d.seed.nunique()} seeds)")
    fig.suptitle("finetune_curves (lora_ga.speedup, lora_plus.speedup): MiniLM-L6, all linear layers of the 6 blocks, r = 8; "
                 "median over seeds, band = min..max", fontsize=9)
    fig.tight_layout()
    return fig


def plot_steps(df: pd.DataFrame):
    """Steps to the target per method (median, 95% bootstrap interval; arrows: not reached), one panel per (task, protocol)."""
    panels = _panels(df)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (task, proto) in zip(axes[0], panels, strict=True):
        d = df[(df.task == task) & (df.protocol == proto)].set_index("method")
        cap = float(np.nanmax(np.where(np.isfinite(d[["steps_hi", "steps_median"]].to_numpy(float)), d[["steps_hi", "steps_median"]].to_numpy(float),
                                       np.nan))) if np.isfinite(d[["steps_hi", "steps_median"]].to_numpy(float)).any() else 1.0
        for i, method in enumerate(m for m in _METHODS if m in d.index):
            r = d.loc[method]
            color = _STYLE[method][0]
            med = r.steps_median if np.isfinite(r.steps_median) else cap * 1.1
            lo = r.steps_lo if np.isfinite(r.steps_lo) else med
            hi = r.steps_hi if np.isfinite(r.steps_hi) else cap * 1.1
            ax.errorbar([i], [med], yerr=[[med - lo], [hi - med]], fmt="o" if np.isfinite(r.steps_median) else "^", color=color, capsize=4)
            ax.annotate(f"{r.metric} {fmt(r.test_median, '.3f')}\n[{fmt(r.test_min, '.3f')}, {fmt(r.test_max, '.3f')}]", (i, med), fontsize=6,
                        xytext=(6, -4), textcoords="offset points")
        ax.set_xticks(range(len([m for m in _METHODS if m in d.index])), [_STYLE[m][1].split(" (")[0] for m in _METHODS if m in d.index], fontsize=7)
        first = d.iloc[0]
        speed = fmt(first.full_speedup_over_lora, ".2f", missing="inf (LoRA mostly never reached the target)")
        finish_axes(ax, xlabel="", ylabel="steps to target (LoRA-GA charged)", legend=False,
                    title=f"{task}, {proto} lr\npremise {'holds' if first.premise else 'fails'}: full FT {speed}x faster than LoRA")
    fig.suptitle("finetune_steps: steps to half of full FT's validation improvement, median and 95% bootstrap interval over seeds "
                 "(triangle: not reached in the budget); labels: test metric median [min, max]", fontsize=8)
    fig.tight_layout()
    return fig


def plot_ablation(df: pd.DataFrame):
    """Final validation loss per LoRA-GA (direction, scale), one dot per seed, median bar."""
    d = df.assign(config=df.direction + " / " + df.scale)
    order = ["ArB2r / stable"] + sorted(c for c in d.config.unique() if c != "ArB2r / stable")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, c in enumerate(order):
        v = d[d.config == c].final_val.replace([np.inf], np.nan)
        ax.scatter(np.full(len(v), i), v, color="tab:red" if i == 0 else "tab:grey", s=18)
        ax.hlines(v.median(), i - 0.3, i + 0.3, color="k", lw=1.5)
    ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=7)
    finish_axes(ax, xlabel="", ylabel="final validation loss", legend=False,
                title=f"finetune_ablation (lora_ga.ablation): {d.task.iloc[0]}, LoRA-GA at lr {fmt(d.lr.iloc[0], 'g')}; red: the paper's choice")
    fig.tight_layout()
    return fig


def plot_ratio_heatmap(df: pd.DataFrame):
    """Left: LoRA+ on the real task, median final validation loss over (eta_A, ratio); right: the toy model's test loss over (eta_A, eta_B)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    real = df[df.panel == "real"]
    piv = real.pivot(index="eta_A", columns="ratio", values="loss")
    vals = piv.to_numpy(float)
    im = axes[0].imshow(np.where(np.isfinite(vals), vals, np.nan), origin="lower", cmap="viridis", aspect="auto")
    axes[0].set_xticks(range(len(piv.columns)), [f"2^{np.log2(x):g}" for x in piv.columns], fontsize=7)
    axes[0].set_yticks(range(len(piv.index)), [f"{x:.0e}" for x in piv.index], fontsize=7)
    if np.isfinite(vals).any():
        i, j = np.unravel_index(np.nanargmin(np.where(np.isfinite(vals), vals, np.nan)), vals.shape)
        axes[0].plot(j, i, "r*", ms=14)
    fig.colorbar(im, ax=axes[0], label="median final validation loss (white: diverged)")
    finish_axes(axes[0], xlabel="ratio eta_B / eta_A", ylabel="eta_A", legend=False,
                title="real task: VADER polarity, MiniLM-L6 (ratio 1 = LoRA)")
    toy = df[df.panel == "toy"]
    tp = toy.pivot(index="eta_A", columns="eta_B", values="loss")
    tv = np.log10(tp.to_numpy(float))
    im2 = axes[1].imshow(np.where(np.isfinite(tv), tv, np.nan), origin="lower", cmap="viridis")
    axes[1].set_xticks(range(len(tp.columns)), [f"{x:.0e}" for x in tp.columns], rotation=60, fontsize=7)
    axes[1].set_yticks(range(len(tp.index)), [f"{x:.0e}" for x in tp.index], fontsize=7)
    axes[1].plot(range(len(tp.index)), range(len(tp.index)), "w--", lw=0.8)
    if np.isfinite(tv).any():
        i, j = np.unravel_index(np.nanargmin(np.where(np.isfinite(tv), tv, np.nan)), tv.shape)
        axes[1].plot(j, i, "r*", ms=14)
    fig.colorbar(im2, ax=axes[1], label="log10 test loss (white: diverged)")
    finish_axes(axes[1], xlabel="eta_B", ylabel="eta_A", legend=False, title="toy (Fig. 2): d=5, n=100, r=4, GD; dashed: equal rates")
    fig.suptitle("finetune_ratio_heatmap (lora_plus.best_ratio): red star = best", fontsize=9)
    fig.tight_layout()
    return fig
