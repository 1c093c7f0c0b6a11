"""Studies of the proof-of-concept experiment (issue 23; claims ``limits.lemma1.1``, ``limits.upstream``): tidy DataFrames.

``poc_curves``: the fine-tuning loss vs CPU time of both models on both paths, and each last-layer head's
R / sqrt(ln L) during pretraining; ``step_speedup``: the speed-up of one LoRA training step of an attention
layer (LoRAAttention "auto" vs "exact") vs R / sqrt(ln L). Both run resumable sweeps
(:mod:`lora_theory.pretrain.experiment`) and are marked ``experiment`` (minutes of CPU).
"""
from __future__ import annotations

import pandas as pd

from ..pretrain import experiment as poc
from . import lazy_plot, register_figure

__all__ = ["poc_curves", "step_speedup"]


def poc_curves(quick: bool = True) -> pd.DataFrame:
    """Rows: phase ("pretrain" / "finetune"), model, mode, L, step, cpu_s, loss, head, R_over_sqrt_lnL, forward_path, backward_path."""
    res = poc.experiment(quick)
    rows = []
    for _, p in res["pretrain"].iterrows():
        for c in p["curve"]:
            for h, r in enumerate(c["R_over_sqrt_lnL"] or [None]):
                rows.append({"phase": "pretrain", "model": p["kind"], "mode": "autograd", "L": p["ft_L"], "step": c["step"], "cpu_s": c["cpu_s"],
                             "loss": c["loss"], "head": h, "R_over_sqrt_lnL": r, "forward_path": None, "backward_path": None})
    for _, p in res["finetune"].iterrows():
        for i, c in enumerate(p["curve"]):
            rows.append({"phase": "finetune", "model": p["kind"], "mode": p["mode"], "L": p["L"], "step": i + 1, "cpu_s": c["cpu_s"], "loss": c["loss"],
                         "head": None, "R_over_sqrt_lnL": c["R_over_sqrt_lnL"], "forward_path": c["forward_path"], "backward_path": c["backward_path"]})
    return pd.DataFrame(rows)


def step_speedup(quick: bool = True) -> pd.DataFrame:
    """Rows per (L, R / sqrt(ln L)): auto and exact CPU seconds of one training step, the speed-up and auto's paths."""
    return poc.speedup_study(quick)


register_figure(
    "limits_poc_curves",
    claims=("limits.lemma1.1", "limits.upstream"),
    description="Proof of concept (the paper's App. G rebuilt): LoRA fine-tuning loss vs CPU time at long context for a standard and a norm-controlled small LM, LoRAAttention in auto vs exact; and the last-layer heads' R / sqrt(ln L) during pretraining.",
    compute=poc_curves,
    plot=lazy_plot("poc", "plot_poc_curves"),
    experiment=True,
)
register_figure(
    "limits_step_speedup",
    claims=("limits.lemma1.1", "limits.upstream"),
    description="Speed-up of one LoRA training step of an attention layer (LoRAAttention auto vs exact blocked, CPU time) vs R / sqrt(ln L), d = 4, eps = 1e-3.",
    compute=step_speedup,
    plot=lazy_plot("poc", "plot_step_speedup"),
    experiment=True,
)
