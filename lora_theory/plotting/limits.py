"""Plots for the Computational Limits paper (claims ``limits.*``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ..tolerances import TOLERANCES

__all__ = ["plot_closed_form_agreement"]


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
    ax.set_title("limits.grad_closed_form / limits.grad_blocked", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
