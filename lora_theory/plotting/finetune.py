"""Plots of the fine-tuning experiment on ``cpython_mlm`` (claims ``lora_ga.speedup``, ``lora_ga.gap_to_full``, ``lora_ga.table3``,
``lora_ga.ablation``, ``lora_ga.init_cost``, ``lora_plus.speedup``, ``lora_plus.accuracy_gain``, ``lora_plus.best_ratio``);
each takes a study's DataFrame and returns a Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import finish_axes, fmt

__all__ = ["plot_ablation", "plot_curves", "plot_init_memory", "plot_ratio_heatmap", "plot_steps"]

_STYLE = {"full": ("k", "full FT"), "lora": ("tab:blue", "LoRA r=8"), "lora_r2": ("tab:cyan", "LoRA r=2"), "lora_ga": ("tab:red", "LoRA-GA"),
          "lora_plus": ("tab:green", "LoRA+ (ratio 16)")}


def _band(v: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean over seeds (v: (n_seeds,))."""
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    means = v[rng.integers(0, len(v), (2000, len(v)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def plot_curves(df: pd.DataFrame):
    """Mean smoothed validation loss over seeds per arm with a 95 % bootstrap band (LoRA+ at ratio 16 only)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rng = np.random.default_rng(0)
    if len(df) and "tuning" in df:
        df = df[~df.tuning.astype(bool)]  # the tuning seed chose the lrs: the curves show the verdict seeds
    d = df[(df.arm != "lora_plus") | (df.ratio == 16.0)] if len(df) else df
    for arm, (color, label) in _STYLE.items():
        g = d[d.arm == arm] if len(d) else d
        if not len(g):
            continue
        for i, (lr, h) in enumerate(g.groupby("lr")):  # one arm at two lrs (LoRA+ tuned and shared-lr): dashed, dotted
            agg = h.groupby("step").smoothed
            steps = np.array(sorted(h.step.unique()))
            mean = agg.mean().reindex(steps).to_numpy()
            lo_hi = np.array([_band(h[h.step == s].smoothed.to_numpy(), rng) for s in steps])
            ax.plot(steps, mean, color=color, lw=1.6, ls=("-", "--", ":")[i % 3], label=f"{label}, lr {lr:g} ({h.seed.nunique()} seeds)")
            ax.fill_between(steps, lo_hi[:, 0], lo_hi[:, 1], color=color, alpha=0.18, lw=0)
    finish_axes(ax, xlabel="step (AdamW, batch 16 windows of 32 tokens)", ylabel="masked-token validation loss (smoothed, 3 evals)",
                title="finetune_curves: cpython_mlm, MiniLM-L6, all linear layers")
    if len(d):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_steps(df: pd.DataFrame):
    """Forest plot: each verdict's effect and 95 % interval against its threshold (premise panel on top), coloured by the part's verdict."""
    d = df[df.part.notna() & (df.part != "")] if len(df) and "part" in df else df.iloc[:0]
    n = max(len(d), 1)
    fig, ax = plt.subplots(figsize=(8.0, 0.42 * n + 1.4))
    colors = {"holds": "tab:green", "fails": "tab:red", "inconclusive": "tab:orange"}
    for i, r in enumerate(d.itertuples()):
        y = n - 1 - i
        lo, hi = (r.low, r.high) if np.isfinite(r.low) and np.isfinite(r.high) else (r.estimate, r.estimate)
        ax.plot([lo, hi], [y, y], color=colors.get(r.part_verdict, "grey"), lw=2.5)
        ax.plot([r.estimate], [y], "o", color=colors.get(r.part_verdict, "grey"))
        ax.plot([r.threshold], [y], "|", color="k", ms=14, mew=2)
        fh = f"{r.false_holds:.0%}" if np.isfinite(r.false_holds) else fmt(r.false_holds)
        label = ("PREMISE " if r.block == "premise" else "") + f"{r.claim}: {r.part} ({r.part_verdict}, n={int(r.n_seeds)}, FH {fh})"
        ax.text(1.02, y, label, transform=ax.get_yaxis_transform(), fontsize=6.5, va="center")
    ax.set_yticks([])
    finish_axes(ax, xlabel="effect (its own unit; black bar: the claim's threshold)", ylabel="",
                title="finetune_steps: verdicts with 95% bootstrap intervals over seeds (FH: false-holds rate)")
    fig.tight_layout()
    return fig


def plot_ablation(df: pd.DataFrame):
    """Test loss per seed for each LoRA-GA arm, with the mean."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    order = [a for a in ("lora", "+SO", "+GA", "lora_ga", "dir_A2rBr", "dir_ArBr") if len(df) and (df.arm == a).any()]
    for i, a in enumerate(order):
        g = df[df.arm == a]
        ax.plot(np.full(len(g), i), g.test_loss, "o", color="tab:red" if a == "lora_ga" else "tab:grey", alpha=0.7)
        ax.plot([i - 0.25, i + 0.25], [g.test_loss.mean()] * 2, color="k")
    ax.set_xticks(range(len(order)), order)
    finish_axes(ax, xlabel="arm (Table 3: LoRA, +SO, +GA, LoRA-GA; directions)", ylabel="masked-token test loss",
                title="finetune_ablation (lora_ga.table3, lora_ga.ablation)")
    fig.tight_layout()
    return fig


def plot_ratio_heatmap(df: pd.DataFrame):
    """Smoothed final validation loss vs log2 ratio: one line per seed and the mean."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    if len(df):
        for seed, g in df.groupby("seed"):
            g = g.sort_values("ratio")
            ax.plot(np.log2(g.ratio), g.final_val, color="tab:grey", alpha=0.5, lw=1)
        m = df.groupby("ratio").final_val.mean()
        ax.plot(np.log2(m.index), m.to_numpy(), "o-", color="tab:green", lw=2, label="mean over seeds")
        ax.axvspan(2, 6, color="tab:green", alpha=0.08, label="claimed 2^2..2^6")
        ax.legend(fontsize=7)
    finish_axes(ax, xlabel="log2(eta_B / eta_A) (0 = LoRA)", ylabel="smoothed final validation loss",
                title="finetune_ratio_heatmap (lora_plus.best_ratio)")
    fig.tight_layout()
    return fig


def plot_init_memory(df: pd.DataFrame):
    """Two bars per panel: LoRA-GA's init vs one LoRA step, peak memory (MiB) and wall seconds."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.0))
    for ax, col, scale, label in ((axes[0], "peak_bytes", 2 ** 20, "peak memory added (MiB)"), (axes[1], "seconds", 1, "wall seconds")):
        ax.bar(df.what, df[col] / scale, color=["tab:red", "tab:blue"][: len(df)])
        finish_axes(ax, xlabel="", ylabel=label, title="finetune_init_memory (lora_ga.init_cost)", legend=False)
    fig.tight_layout()
    return fig
