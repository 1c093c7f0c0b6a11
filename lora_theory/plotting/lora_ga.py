"""Plots for LoRA-GA (claims ``lora_ga.*``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..finetune.convergence import steps_to_target
from . import fmt

__all__ = ["plot_convergence"]

_STYLE = {"full": ("k", "full fine-tuning"), "lora": ("tab:blue", "LoRA (B = 0)"), "lora_ga": ("tab:red", "LoRA-GA (ArB2r, stable)"), "lora_plus": ("tab:green", "LoRA+ (ratio 16)")}


def plot_convergence(df: pd.DataFrame):
    """Held-out loss vs step at each method's best learning rate; other learning rates faint."""

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (method, lr), g in df.groupby(["method", "lr"]):
        color, label = _STYLE.get(method, ("grey", method))
        best = bool(g.best.iloc[0])
        ax.plot(g.step, g.eval_loss, "-" if best else ":", color=color, alpha=1.0 if best else 0.3, lw=1.8 if best else 0.8,
                label=f"{label}, lr {lr:g}" if best else None)
    tab = steps_to_target(df)
    target = float(tab.target.iloc[0])
    ax.axhline(target, color="grey", lw=0.8, ls="--")
    ga = tab[tab.method == "lora_ga"]
    speed = float(ga["speedup_vs_lora"].iloc[0]) if len(ga) else float("nan")
    ax.set_yscale("log")
    ax.set_xlabel("step (AdamW, batch 8 x 32 tokens)")
    ax.set_ylabel("held-out loss (teacher-student MSE x 100)")
    # a speed-up that was not measured (LoRA-GA never reached the target, or no LoRA-GA run) says so, never "nanx"
    reach = f"LoRA-GA reaches it {fmt(speed, '.2f')}x faster than LoRA" if np.isfinite(speed) else \
        f"speed-up of LoRA-GA over LoRA: {fmt(speed)} ({'no LoRA-GA run' if not len(ga) else 'LoRA-GA did not reach it'})"
    ax.set_title(f"lora_ga.convergence: MiniLM-L6, q,v adapters r=8; dashed: LoRA's final loss\n{reach} (paper: 2-4x)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
