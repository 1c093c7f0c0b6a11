"""Plots of the proof-of-concept experiment (issue 23; claims ``limits.lemma1.1``, ``limits.upstream``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from . import finish_axes

__all__ = ["plot_poc_curves", "plot_step_speedup"]


def plot_poc_curves(df: pd.DataFrame):
    """Left: fine-tuning loss vs CPU seconds (model x path); right: heads' R / sqrt(ln L) during pretraining."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ft = df[df.phase == "finetune"]
    for (model, mode, L), g in ft.groupby(["model", "mode", "L"]):
        fast = (g.forward_path == "approx").mean()
        a1.plot(g.cpu_s, g.loss, marker="o", ms=3, ls="-" if mode == "auto" else "--",
                label=f"{model}, {mode}, L={L} (fast path {fast:.0%})")
    finish_axes(a1, xlabel="CPU seconds (cumulative, fine-tuning)", ylabel="training loss (nats / char)", title="LoRA fine-tuning at long context")
    pre = df[(df.phase == "pretrain") & df.R_over_sqrt_lnL.notna()]
    for (model, head), g in pre.groupby(["model", "head"]):
        a2.plot(g.step, g.R_over_sqrt_lnL, marker=".", label=f"{model}, head {int(head)}")
    finish_axes(a2, xlabel="pretraining step", ylabel="R_h / sqrt(ln L)  (Cauchy-Schwarz, last layer)", title="score range during pretraining")
    fig.tight_layout()
    return fig


def plot_step_speedup(df: pd.DataFrame):
    """Speed-up (exact CPU s / auto CPU s) of one training step vs R / sqrt(ln L); filled markers where auto took the fast path."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for L, g in df.groupby("L"):
        g = g.sort_values("x_ratio")
        line, = ax.plot(g.x_ratio, g.speedup, label=f"L = {L}")
        fast = g.backward_path == "approx"
        ax.scatter(g.x_ratio[fast], g.speedup[fast], color=line.get_color(), zorder=3)
        ax.scatter(g.x_ratio[~fast], g.speedup[~fast], facecolor="none", edgecolor=line.get_color(), zorder=3)
    ax.axhline(1.0, color="grey", lw=0.8)
    finish_axes(ax, xlabel="R / sqrt(ln L)", ylabel="step speed-up (exact / auto CPU time)", title="LoRAAttention auto vs exact (filled: fast path)", yscale="log")
    fig.tight_layout()
    return fig
