"""Figures of the fine-tuning experiment (claims ``lora_ga.speedup``, ``lora_ga.gap_to_full``, ``lora_ga.ablation``,
``lora_ga.init_cost``, ``lora_plus.speedup``, ``lora_plus.accuracy_gain``, ``lora_plus.best_ratio``).

Each study reads (or runs) the sweep points of :mod:`lora_theory.finetune.experiment` and returns a tidy table:

- ``finetune_curves``: validation loss vs step, one row per (task, protocol, method, seed, step);
- ``finetune_steps``: per (task, protocol, method) the steps to the target (median and bootstrap
  interval over seeds, LoRA-GA charged), the test metric (median, min, max) and the premise;
- ``finetune_ablation``: LoRA-GA's final validation loss per (direction, scale) and seed (``ABLATION_TASK``);
- ``finetune_ratio_heatmap``: LoRA+ median final validation loss over (eta_A, ratio) on
  ``vader_polarity`` (``panel`` "real"), beside the Fig. 2 toy model's test loss over the same
  kind of grid (``panel`` "toy").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..finetune import experiment as ft
from ..finetune.stats import bootstrap_ci
from . import lazy_plot, register_figure

_CLAIMS = ("lora_ga.speedup", "lora_ga.gap_to_full", "lora_ga.init_cost", "lora_plus.speedup", "lora_plus.accuracy_gain")


def curves_table(quick: bool) -> pd.DataFrame:
    """Validation-loss curves of each protocol's runs (tidy: task, protocol, method, lr, seed, step, val_loss, target)."""
    main = ft.experiment(quick)["main"]
    table = ft.method_table(main)
    targets = table.groupby(["task", "protocol"]).target.first()
    rows = []
    for r in ft.protocol_rows(main).itertuples():
        for s, v in zip(r.curve_step, r.curve_val, strict=True):
            rows.append({"task": r.task, "protocol": r.protocol, "method": r.method, "lr": r.lr, "seed": r.seed, "step": s, "val_loss": v,
                         "target": targets[(r.task, r.protocol)]})
    return pd.DataFrame(rows)


def steps_table(quick: bool) -> pd.DataFrame:
    """Per (task, protocol, method): lr, steps to target (median, lo, hi; charged), test metric (median, min, max), premise."""
    table = ft.method_table(ft.experiment(quick)["main"])
    prem = ft.premise_table(table).set_index(["task", "protocol"])
    rows = []
    for (task, proto, method), g in table.groupby(["task", "protocol", "method"]):
        med, lo, hi = bootstrap_ci(g.steps_charged)
        cmed, clo, chi = bootstrap_ci(g.cpu_charged)
        p = prem.loc[(task, proto)]
        rows.append({"task": task, "protocol": proto, "method": method, "lr": float(g.lr.iloc[0]), "seeds": len(g), "target": float(g.target.iloc[0]),
                     "steps_median": med, "steps_lo": lo, "steps_hi": hi, "cpu_median": cmed, "cpu_lo": clo, "cpu_hi": chi,
                     "reached": int(np.isfinite(g.steps_charged).sum()), "best_val_median": float(g.best_val.median()),
                     "test_median": float(g.test_metric.median()), "test_min": float(g.test_metric.min()), "test_max": float(g.test_metric.max()),
                     "metric": g.metric.iloc[0], "init_cpu_median": float(g.init_cpu.median()), "step_cpu_median": float(g.step_cpu.median()),
                     "premise": bool(p.premise), "full_speedup_over_lora": float(p.full_speedup_median)})
    return pd.DataFrame(rows)


def ablation_table(quick: bool) -> pd.DataFrame:
    """LoRA-GA on the ablation task at its tuned lr: direction, scale, seed, final and best validation loss."""
    abl = ft.experiment(quick, ("ablation",), tasks=(ft.ABLATION_TASK,))["ablation"]
    return pd.DataFrame({"task": ft.ABLATION_TASK, "direction": abl.direction, "scale": abl.scale, "seed": abl.seed, "lr": abl.lr,
                         "final_val": [v[-1] for v in abl.curve_val], "best_val": [min(v) for v in abl.curve_val], "test_loss": abl.test_loss})


def ratio_heatmap_table(quick: bool) -> pd.DataFrame:
    """Median final validation loss of LoRA+ over (eta_A, ratio) on vader_polarity, and the toy model's grid (panel "toy")."""
    from ..lora_plus.ratio import ratio_grid

    runs = ft.experiment(quick, ("ratio",), tasks=(ft.RATIO_TASK,))["ratio"]
    runs = runs.assign(final=[v[-1] if np.isfinite(v[-1]) else np.inf for v in runs.curve_val])
    real = runs.groupby(["lr", "ratio"]).final.median().reset_index()
    real = pd.DataFrame({"panel": "real", "eta_A": real.lr, "ratio": real.ratio, "eta_B": real.lr * real.ratio, "loss": real.final})
    grid = tuple(np.logspace(-3, 1.5, 7 if quick else 10))
    toy = ratio_grid(grid, grid, steps=100 if quick else 200)
    toy = pd.DataFrame({"panel": "toy", "eta_A": toy.eta_A, "ratio": toy.eta_B / toy.eta_A, "eta_B": toy.eta_B, "loss": toy.test_loss})
    return pd.concat([real, toy], ignore_index=True)


register_figure("finetune_curves", claims=_CLAIMS,
                description="Validation loss vs step on the real tasks (MiniLM-L6 under a frozen probe head; VADER valence and polarity): "
                            "full FT, LoRA, LoRA-GA, LoRA+, median over seeds with the min-max band, at the papers' lr and at each method's tuned lr; "
                            "dashed: the target (half of full FT's improvement).",
                compute=curves_table, plot=lazy_plot("finetune", "plot_curves"), experiment=True)
register_figure("finetune_steps", claims=_CLAIMS,
                description="Steps to the target (median and 95% bootstrap interval over seeds; LoRA-GA charged its gradient batches) and "
                            "test metric per method, task and protocol, with the premise check (full FT vs LoRA).",
                compute=steps_table, plot=lazy_plot("finetune", "plot_steps"), experiment=True)
register_figure("finetune_ablation", claims=("lora_ga.ablation",),
                description="LoRA-GA directions (ArB2r, A2rBr, ArBr, random) and scales (stable, gd, unit, weight_svd) on VADER polarity at "
                            "LoRA-GA's tuned lr: final validation loss per seed.",
                compute=ablation_table, plot=lazy_plot("finetune", "plot_ablation"), experiment=True)
register_figure("finetune_ratio_heatmap", claims=("lora_plus.best_ratio",),
                description="LoRA+ on VADER polarity: median final validation loss over (eta_A, ratio eta_B/eta_A), beside the Fig. 2 toy "
                            "model's test loss over its (eta_A, eta_B) grid.",
                compute=ratio_heatmap_table, plot=lazy_plot("finetune", "plot_ratio_heatmap"), experiment=True)
